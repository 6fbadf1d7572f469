#!/usr/bin/env python3
"""Draws the add-in's icons (a white beacon with signal arcs on a blue rounded
square) as RGBA PNGs in addin-manifest/web/. Standard library only; run once
after changing the drawing, and commit the PNGs."""
import math, os, struct, zlib

OUT = os.path.join(os.path.dirname(__file__), "..", "addin-manifest", "web")
BLUE = (0, 94, 184)

def pixel(x, y, n):
    # coordinates in 0..1, sampled at the pixel centre
    u, v = (x + 0.5) / n, (y + 0.5) / n
    r = 0.18  # corner radius
    cx, cy = min(max(u, r), 1 - r), min(max(v, r), 1 - r)
    if math.hypot(u - cx, v - cy) > r:
        return (0, 0, 0, 0)
    # beacon: a dot with two arcs above it
    d = math.hypot(u - 0.5, v - 0.68)
    white = d < 0.09
    ang = math.atan2(0.68 - v, u - 0.5)
    if 0.55 < ang < math.pi - 0.55:
        for rad in (0.22, 0.36):
            if abs(d - rad) < 0.045:
                white = True
    return (255, 255, 255, 255) if white else BLUE + (255,)

def outline(x, y, n):
    # the unified manifest's outline icon: white shape on transparent
    p = pixel(x, y, n)
    return (255, 255, 255, 255) if p[:3] == (255, 255, 255) else (0, 0, 0, 0)

def png(n, draw=pixel):
    raw = b""
    for y in range(n):
        raw += b"\x00" + b"".join(bytes(draw(x, y, n)) for x in range(n))
    def chunk(t, d):
        c = t + d
        return struct.pack(">I", len(d)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

for n in (16, 32, 64, 80, 128):
    with open(os.path.join(OUT, f"icon-{n}.png"), "wb") as f:
        f.write(png(n))
    print(f"icon-{n}.png")
with open(os.path.join(OUT, "icon-color-192.png"), "wb") as f:
    f.write(png(192))
with open(os.path.join(OUT, "icon-outline-32.png"), "wb") as f:
    f.write(png(32, outline))
print("icon-color-192.png icon-outline-32.png")
