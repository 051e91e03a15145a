"""Real HTTP receivers on 127.0.0.1 for alert tests: they log every request they accept and can
refuse (HTTP 503) a given number of requests first, like a receiver that is down."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str
    log: list[dict[str, Any]] = field(default_factory=list)
    refuse: int = 0  # requests still to answer with 503
    refused: int = 0

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r["body"] for r in self.log if path is None or r["path"] == path]


@contextmanager
def receiver() -> Iterator[Receiver]:
    """An HTTP server that records each POST (path, JSON body, idempotency key) it accepts."""
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                if state.refuse > 0:
                    state.refuse -= 1
                    state.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                state.log.append(
                    {"path": self.path, "body": body, "key": self.headers.get("Idempotency-Key")}
                )
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "success"}')

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
