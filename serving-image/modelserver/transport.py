"""uvicorn's httptools protocol with deadlines for slow clients and an age for connections.

uvicorn times out idle keep-alive connections but not a request that trickles in: a client
sending a header byte every few seconds (slowloris) holds a connection and its memory for as
long as it likes. Here a request's headers must arrive within ``header_timeout_s`` of its first
byte (or of the connection), and its body within ``body_timeout_s`` of the headers; otherwise
it is answered 408 and the connection closed. One timer per connection, re-armed lazily when
it fires rather than set and cancelled for every request (that pair cost about 5 us of the
per-request CPU on a keep-alive connection), keeps the cost off the fast path.

A Service (kube-proxy) balances connections, not requests: a client that keeps its connection
alive keeps reaching the pod it first reached, and pods added later (a canary's, a scale-up's)
get none of its requests. So the first request to start after a connection's ``max_age_s``
(less up to a tenth, drawn per connection so that clients do not all reconnect at once) is
answered with ``Connection: close``; the client's next request opens a new connection, balanced
again. This is what gRPC's MAX_CONNECTION_AGE does for HTTP/2.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

TIMED_OUT = "modelserver.timed_out"  # scope key: the body read was cut off by the deadline

# _IDLE: connected, no request yet; _DONE: between requests on a kept-alive connection, whose
# idle time uvicorn's keep-alive timeout bounds.
_IDLE, _HEADERS, _BODY, _DONE = 0, 1, 2, 3


def _timeout_response(message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class GuardedHttpTools(HttpToolsProtocol):
    """Configure with ``guarded(header_timeout_s, body_timeout_s)``."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0
    max_age_s = 0.0  # 0: connections are kept for as long as the client keeps them

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = _IDLE
        self._phase_started = 0.0
        self._closes_at = float("inf")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter(_IDLE)
        if self.max_age_s:
            self._closes_at = self._phase_started + self.max_age_s * (1 - random.random() / 10)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # The three callbacks below run for every request: the base class is called by name
    # (cheaper than super()) and the phase is set inline.

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._phase, self._phase_started = _HEADERS, self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._check)

    def on_headers_complete(self) -> None:
        HttpToolsProtocol.on_headers_complete(self)
        now = self.loop.time()
        self._phase, self._phase_started = _BODY, now
        if now >= self._closes_at and self.cycle is not None:
            self.cycle.keep_alive = False  # uvicorn answers with Connection: close, then closes
        if self.body_timeout_s < self.header_timeout_s:  # the pending timer would fire late
            self._disarm()
            self._deadline = self.loop.call_later(self.body_timeout_s, self._check)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._phase = _DONE  # the timer stays: the next request on this connection reuses it

    def _unsupported_upgrade_warning(self) -> None:
        # WebSocket and h2c upgrades are not offered: the request is answered as plain HTTP.
        log.debug("ignored an Upgrade request")

    def _enter(self, phase: int) -> None:
        self._phase, self._phase_started = phase, self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._check)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check(self) -> None:
        self._deadline = None
        if self._phase == _DONE:  # re-armed by the next request's first byte
            return
        limit = self.body_timeout_s if self._phase == _BODY else self.header_timeout_s
        left = self._phase_started + limit - self.loop.time()
        if left > 0:  # the phase moved on since the timer was set
            self._deadline = self.loop.call_later(left, self._check)
            return
        if self.transport.is_closing():
            return
        if self._phase == _BODY:
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]
                self.transport.write(_timeout_response(f"body not received in {limit:g} s"))
        elif self._phase == _HEADERS:
            self.transport.write(_timeout_response(f"headers not received in {limit:g} s"))
        self.transport.close()


def guarded(
    header_timeout_s: float, body_timeout_s: float, max_age_s: float = 0.0
) -> type[GuardedHttpTools]:
    """The protocol class with these deadlines and connection age, for
    ``uvicorn.Config(http=...)``."""
    attrs = {
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
        "max_age_s": max_age_s,
    }
    return type("GuardedHttpTools", (GuardedHttpTools,), attrs)
