"""A local HTTP receiver on 127.0.0.1 for hook and notification tests: it records every request
(method, path, headers, JSON body) and answers by path:

    /status/<code>[/...]   that status, with the body `<code> from the receiver\\nsecond line`
    /slow/<seconds>[/...]  200 after that many seconds
    anything else          200

    with Receiver() as rx:
        url = rx.url("/status/500/acceptance")
        ...
        rx.requests_to("/status/500/acceptance")
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver._lock:
                    receiver.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                parts = self.path.strip("/").split("/")
                code = 200
                if parts[0] == "status" and len(parts) > 1:
                    code = int(parts[1])
                elif parts[0] == "slow" and len(parts) > 1:
                    time.sleep(float(parts[1]))
                text = f"{code} from the receiver\nsecond line\n".encode()
                try:
                    self.send_response(code)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up waiting (a timeout test)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
