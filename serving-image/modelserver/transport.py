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

A request the app answers without waiting (``DirectApp``: an inference on a small model run on
the event loop) is answered here, from the parser's callbacks, once its body is in: no ASGI
task, cycle, receive or send. Those cost about as much as the whole inference does on such a
model. Everything else (other paths, a request with ``Expect: 100-continue``, one behind a
pipelined request still being answered, one on a connection whose client is not reading its
answers) takes uvicorn's ASGI path as before.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Container
from typing import Any, Protocol

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)

TIMED_OUT = "modelserver.timed_out"  # scope key: the body read was cut off by the deadline

# _IDLE: connected, no request yet; _DONE: between requests on a kept-alive connection, whose
# idle time uvicorn's keep-alive timeout bounds; _KEPT: the same after a direct answer, whose
# idle time the deadline timer bounds (uvicorn arms no keep-alive timer for it).
_IDLE, _HEADERS, _BODY, _DONE, _KEPT = 0, 1, 2, 3, 4
# _answering: no direct request; receiving one's body; discarding the rest of one refused.
_NONE, _RECEIVING, _DISCARDING = 0, 1, 2
_CLOSE = b"connection: close\r\n"


class DirectApp(Protocol):
    """An app that answers some requests synchronously, from the protocol's callbacks."""

    @property
    def direct_urls(self) -> Container[bytes]:
        """A POST to one of these URLs (exact bytes) is answered directly."""
        ...

    @property
    def body_limit(self) -> int: ...

    def answer(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes, bytes]:
        """(status, header lines, body) of a direct request; never raises."""
        ...

    def refuse_too_large(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bytes]:
        """The answer to a direct request whose body passed ``body_limit``."""
        ...

    def unanswered(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A direct request ended without an answer: 408 (body deadline) or 499 (client left)."""
        ...

    @property
    def closing(self) -> bool:
        """Every answer closes its connection (the server drains)."""
        ...


class _DefaultHeaders:
    """uvicorn's default headers (the date, once a second) as one block of bytes."""

    __slots__ = ("block", "source")

    def __init__(self) -> None:
        self.source: list[tuple[bytes, bytes]] | None = None
        self.block = b""

    def of(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not self.source:  # uvicorn replaces the list when the date changes
            self.block = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            self.source = headers
        return self.block


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
    direct: DirectApp | None = None
    _defaults = _DefaultHeaders()  # one per server class (``guarded`` makes a class per server)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = _IDLE
        self._phase_started = 0.0
        self._closes_at = float("inf")
        self._answering = _NONE
        self._body: bytes | bytearray = b""
        self._keep = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter(_IDLE)
        if self.max_age_s:
            self._closes_at = self._phase_started + self.max_age_s * (1 - random.random() / 10)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._answering == _RECEIVING and self.direct is not None:
            self._answering = _NONE
            self.direct.unanswered(499, self.headers)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._answering == _RECEIVING:
            self._keep = False  # answered once its body is in, then closed
        else:
            super().shutdown()

    # The three callbacks below run for every request: the base class is called by name
    # (cheaper than super()) and the phase is set inline.

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._phase, self._phase_started = _HEADERS, self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._check)

    def on_headers_complete(self) -> None:
        now = self.loop.time()
        self._phase, self._phase_started = _BODY, now
        direct = self.direct
        parser = self.parser
        cycle = self.cycle
        if (
            direct is not None
            and self.url in direct.direct_urls
            and parser.get_method() == b"POST"
            and (cycle is None or cycle.response_complete)  # nothing ahead of it to answer
            and not self.flow.write_paused  # a client not reading: the ASGI path waits for it
            and not self.expect_100_continue
            and not parser.should_upgrade()
        ):
            self._answering, self._body = _RECEIVING, b""
            self._keep = (
                parser.get_http_version() != "1.0"
                and parser.should_keep_alive()
                and now < self._closes_at
            )
        else:
            HttpToolsProtocol.on_headers_complete(self)
            if now >= self._closes_at and self.cycle is not None:
                self.cycle.keep_alive = False  # uvicorn answers with Connection: close, then closes
        if self.body_timeout_s < self.header_timeout_s:  # the pending timer would fire late
            self._disarm()
            self._deadline = self.loop.call_later(self.body_timeout_s, self._check)

    def on_body(self, body: bytes) -> None:
        if not self._answering:
            HttpToolsProtocol.on_body(self, body)
        elif self._answering == _RECEIVING:
            if not self._body:
                self._body = body  # one chunk, the usual case: no copy
            elif type(self._body) is bytes:
                self._body = bytearray(self._body) + body  # grown in place from here on
            else:
                self._body += body
            direct = self.direct
            if direct is not None and len(self._body) > direct.body_limit:
                self._answering, self._body = _DISCARDING, b""
                self._write(*direct.refuse_too_large(self.headers), keep=False)

    def on_message_complete(self) -> None:
        answering = self._answering
        if not answering:
            HttpToolsProtocol.on_message_complete(self)
            self._phase = _DONE  # the timer stays: the next request on this connection reuses it
            return
        self._answering = _NONE
        self._phase, self._phase_started = _KEPT, self.loop.time()
        direct = self.direct
        if answering == _RECEIVING and direct is not None:
            body, self._body = bytes(self._body), b""  # a copy only of a body in pieces
            keep = self._keep and not direct.closing
            self._write(*direct.answer(self.headers, body), keep=keep)
        self.server_state.total_requests += 1

    def _write(self, status: int, head: bytes, body: bytes, *, keep: bool) -> None:
        """One whole response, framed as uvicorn frames its own."""
        transport = self.transport
        if transport.is_closing():
            return
        defaults = self._defaults.of(self.server_state.default_headers)
        transport.write(
            b"".join((STATUS_LINE[status], defaults, head, b"" if keep else _CLOSE, b"\r\n", body))
        )
        if not keep:
            transport.close()

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
        if self._phase == _KEPT:
            limit = float(self.timeout_keep_alive)
        elif self._phase == _BODY:
            limit = self.body_timeout_s
        else:
            limit = self.header_timeout_s
        left = self._phase_started + limit - self.loop.time()
        if left > 0:  # the phase moved on since the timer was set
            self._deadline = self.loop.call_later(left, self._check)
            return
        if self.transport.is_closing():
            return
        if self._phase == _BODY and self._answering == _RECEIVING and self.direct is not None:
            self._answering = _DISCARDING
            self.direct.unanswered(408, self.headers)
            self.transport.write(_timeout_response(f"body not received in {limit:g} s"))
        elif self._phase == _BODY:
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]
                self.transport.write(_timeout_response(f"body not received in {limit:g} s"))
        elif self._phase == _HEADERS:
            self.transport.write(_timeout_response(f"headers not received in {limit:g} s"))
        self.transport.close()


def guarded(
    header_timeout_s: float,
    body_timeout_s: float,
    max_age_s: float = 0.0,
    direct: DirectApp | None = None,
) -> type[GuardedHttpTools]:
    """The protocol class with these deadlines, connection age and direct app, for
    ``uvicorn.Config(http=...)``."""
    attrs = {
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
        "max_age_s": max_age_s,
        "direct": direct,
        "_defaults": _DefaultHeaders(),
    }
    return type("GuardedHttpTools", (GuardedHttpTools,), attrs)
