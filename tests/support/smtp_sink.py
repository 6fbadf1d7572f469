"""A real SMTP server for the delivery tests (aiosmtpd).

Usage: python3 smtp_sink.py PORT OUTDIR [MODE]

Accepts every message and writes it to OUTDIR/<n>.json as
{"mail_from", "rcpt_tos", "data_b64"}: the envelope exactly as received and the
message bytes. A recipient whose local part starts with "reject" is refused with
550, so tests can check that a failed delivery is reported. Prints READY once
listening; runs until killed.

MODE: "accept" (the default, as above); "tempfail-once": every recipient is
refused with 451 the first time, then accepted; "refuse": every recipient is
refused with 550; "slow:SECONDS": accepts, each message after a pause. Each
refusal is also logged as OUTDIR/refused.log (one line each).
"""
import asyncio
import base64
import itertools
import json
import os
import sys

from aiosmtpd.controller import Controller

PORT = int(sys.argv[1])
OUT = sys.argv[2]
os.makedirs(OUT, exist_ok=True)
COUNTER = itertools.count()
MODE = sys.argv[3] if len(sys.argv) > 3 else "accept"
SEEN = set()


def refused(address, code):
    with open(os.path.join(OUT, "refused.log"), "a") as f:
        f.write(f"{code} {address}\n")


class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].lower().startswith("reject") or MODE == "refuse":
            refused(address, 550)
            return "550 5.1.1 mailbox unavailable"
        if MODE == "tempfail-once" and address not in SEEN:
            SEEN.add(address)
            refused(address, 451)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if MODE.startswith("slow:"):
            await asyncio.sleep(float(MODE[5:]))
        n = next(COUNTER)
        tmp = os.path.join(OUT, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "data_b64": base64.b64encode(envelope.original_content or envelope.content).decode(),
                },
                f,
            )
        os.replace(tmp, os.path.join(OUT, f"{n:06d}.json"))
        return "250 2.0.0 OK"


async def main():
    controller = Controller(Sink(), hostname="127.0.0.1", port=PORT, data_size_limit=64 * 1024 * 1024)
    controller.start()
    print("READY", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
