"""A push gateway for tests, run as its own process: ``python push_gateway.py PORT``.

Records every ``POST /_matrix/push/v1/notify`` body (``GET /received`` lists
them) and answers pushkeys starting with ``reject`` in ``rejected``.
"""
from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED: list = []


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/_matrix/push/v1/notify":
            self._send(404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        RECEIVED.append(body)
        devices = body.get("notification", {}).get("devices", [])
        self._send(200, {"rejected": [d["pushkey"] for d in devices if d["pushkey"].startswith("reject")]})

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, RECEIVED)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
