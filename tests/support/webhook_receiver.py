"""A webhook receiver for tests/realtime.rs that verifies every delivery with
the PyPI `standardwebhooks` package (Standard Webhooks' reference library).

Usage: webhook_receiver.py PORT. Prints READY once listening.

- PUT /_secret/<name> (body: the whsec_ secret): the secret of the webhook
  whose URL is /<mode>/<name>.
- POST /<mode>/<name>: a delivery. Modes: `ok` (answers 204), `fail1` (answers
  500 to the first attempt of each webhook-id, then 204), `fail` (always 500),
  `slow` (sleeps 12 s, then 204).
- GET /_log: every delivery as JSON: name, webhook-id, verified, error, event
  type, status answered, time received.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

SECRETS = {}
LOG = []
SEEN = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def answer(self, status, data=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "_secret":
            with LOCK:
                SECRETS[parts[1]] = self.body().decode()
            return self.answer(204)
        self.answer(404)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                data = json.dumps(LOG).encode()
            return self.answer(200, data)
        self.answer(404)

    def do_POST(self):
        received = time.time()
        parts = self.path.strip("/").split("/")
        if len(parts) != 2:
            return self.answer(404)
        mode, name = parts
        body = self.body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        wid = headers.get("webhook-id", "")
        with LOCK:
            secret = SECRETS.get(name)
            SEEN[(name, wid)] = SEEN.get((name, wid), 0) + 1
            attempt = SEEN[(name, wid)]
        verified, error, event = False, None, None
        try:
            event = Webhook(secret).verify(body, headers)
            verified = True
        except Exception as e:  # any failure is recorded, not raised
            error = f"{type(e).__name__}: {e}"
        if mode == "slow":
            time.sleep(12)
        status = 204
        if mode == "fail" or (mode == "fail1" and attempt == 1):
            status = 500
        with LOCK:
            LOG.append({
                "name": name,
                "id": wid,
                "verified": verified,
                "error": error,
                "type": (event or {}).get("type"),
                "event": event,
                "status": status,
                "received": received,
            })
        self.answer(status)


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
