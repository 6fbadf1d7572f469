#!/usr/bin/env python3
"""Redis's work per pixel hit, independent of other load on the machine.

Starts a private redis-server (appendonly yes, appendfsync always) and one
mailbeacon on it, follows `--emails` emails x `--recipients` recipients through
the API ("deliver": "return"), resets `INFO commandstats`, sends exactly `--hits`
pixel hits (keep-alive, `--conns` threads), reads every email's report (so the
deriver has caught up), and prints Redis's calls and usec per command, the AOF
bytes written, and both per hit. Usage:

    loadtest/scripts/redis_per_hit.py --bin target/release/mailbeacon --hits 20000

PERHIT_DUMP=1 also prints a few stored keys and events (what one event costs).
"""
import argparse, base64, http.client, json, os, re, socket, subprocess, sys, tempfile, threading, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def call(port, method, path, token, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data)


def info(rport, section):
    out = subprocess.check_output(["redis-cli", "-p", str(rport), "INFO", section]).decode()
    return dict(l.split(":", 1) for l in out.splitlines() if ":" in l and not l.startswith("#"))


def dump(rport):
    """PERHIT_DUMP=1: print the first keys and one field of three events hashes,
    to see what Redis actually stores per event."""
    cli = lambda *a: subprocess.check_output(["redis-cli", "-p", str(rport), *a]).decode()
    print("\n".join(cli("--scan").splitlines()[:40]))
    for key in cli("--scan", "--pattern", "*:ev").split()[:3]:
        print(key, cli("HRANDFIELD", key, "1", "WITHVALUES"), sep="\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--emails", type=int, default=250)
    ap.add_argument("--recipients", type=int, default=4)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--ua", default="", help="User-Agent of every hit (none by default; "
                    "loadtest compare sends a browser's, about 110 bytes)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mb-perhit-")
    rport, port, admin = free_port(), free_port(), "perhit-admin-token-0123456789"
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "yes", "--appendfsync", "always", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    env = dict(os.environ, MAILBEACON_LISTEN=f"127.0.0.1:{port}", MAILBEACON_DATA_DIR=f"{tmp}/data",
               MAILBEACON_ADMIN_TOKEN=admin, MAILBEACON_REDIS_URL=f"redis://127.0.0.1:{rport}/", RUST_LOG="warn")
    mb = subprocess.Popen([a.bin], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/mb.log", "w"))
    try:
        for _ in range(600):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz"); break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        user = call(port, "POST", "/api/v1/users", admin, {"email": "perhit@loadtest.example", "role": "user"})
        tok = user["token"]
        pixels, ids = [], []
        for n in range(a.emails):
            to = ",\r\n ".join(f"r{r}-{n}@loadtest.example" for r in range(a.recipients))
            raw = (f"From: <perhit@loadtest.example>\r\nTo: {to}\r\nSubject: issue {n}\r\n"
                   f"Message-ID: <perhit-{n}@loadtest.example>\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>hi</p></body></html>\r\n")
            v = call(port, "POST", "/api/v1/emails", tok, {"mime": base64.b64encode(raw.encode()).decode(), "deliver": "return"})
            ids.append(v["id"])
            for r in v["recipients"]:
                m = base64.b64decode(r["mime"]).decode("utf-8", "replace")
                m = re.sub(r"=\r?\n", "", m).replace("=3D", "=")
                pixels.append(re.search(r"http://127\.0\.0\.1:\d+(/o/[^\"'\s]+?\.gif)", m).group(1))
        time.sleep(1)
        subprocess.check_call(["redis-cli", "-p", str(rport), "CONFIG", "RESETSTAT"], stdout=subprocess.DEVNULL)
        aof0 = int(info(rport, "persistence")["aof_current_size"])
        cpu0 = info(rport, "cpu")
        per = a.hits // a.conns

        def worker(k):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i in range(per):
                c.request("GET", pixels[(k * per + i * 7919) % len(pixels)],
                          headers={"User-Agent": a.ua} if a.ua else {})
                c.getresponse().read()
        t0 = time.time()
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(a.conns)]
        [t.start() for t in ts]; [t.join() for t in ts]
        el = time.time() - t0
        for i in ids:
            call(port, "GET", f"/api/v1/emails/{i}", tok)
        time.sleep(1)
        hits = per * a.conns
        aof1 = int(info(rport, "persistence")["aof_current_size"])
        cpu1 = info(rport, "cpu")
        stats = info(rport, "commandstats")
        print(f"hits {hits} over {a.emails} emails x {a.recipients} recipients, {a.conns} conns, {el:.1f} s (rate is noise here)")
        cpu = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_sys", "used_cpu_user"))
        print(f"redis CPU {cpu:.2f} s = {cpu / hits * 1e6:.1f} us/hit; AOF {aof1 - aof0} bytes = {(aof1 - aof0) / hits:.1f} B/hit")
        rows = []
        for k, v in stats.items():
            d = dict(x.split("=") for x in v.split(","))
            rows.append((int(d["usec"]), k[len("cmdstat_"):], int(d["calls"])))
        print("| command | calls | calls/hit | usec | usec/hit |")
        print("|---|---|---|---|---|")
        for usec, name, calls in sorted(rows, reverse=True):
            print(f"| {name} | {calls} | {calls / hits:.3f} | {usec} | {usec / hits:.2f} |")
        if os.environ.get("PERHIT_DUMP"):
            dump(rport)
    finally:
        mb.terminate(); mb.wait(); redis.terminate(); redis.wait()
        subprocess.call(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
