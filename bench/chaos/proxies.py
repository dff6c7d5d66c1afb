"""Two small loopback proxies that the campaign turns into faults.

- `TcpProxy` sits between the operator and kube-apiserver (TLS passes through untouched). Cut
  off, it stops moving bytes both ways and holds new connections unanswered, as a firewall that
  drops packets would: the operator sees requests that never get an answer, not refused
  connections. Healed, every held byte and connection goes through, as TCP retransmission would
  deliver them.
- `PrometheusProxy` sits between the operator's analysis and Prometheus. It passes queries on,
  or answers as a broken Prometheus would: refused connections (down), HTTP 503 with an error
  body, or a successful answer with an empty result.

Both run an asyncio loop in a thread of their own, listen on 127.0.0.1 only and are bounded (a
cap on held connections, a cap on a proxied answer's size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import httpx

from hack.processes import free_port

MAX_CONNECTIONS = 256
MAX_ANSWER_BYTES = 16 * 1024 * 1024
PromMode = Literal["pass", "down", "error", "empty"]
T = TypeVar("T")


class _LoopThread:
    """An asyncio loop in a daemon thread; `call` runs a coroutine on it and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
        async def wrapped() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class TcpProxy:
    """127.0.0.1:<port> -> upstream host:port, with `cut()` and `heal()`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._open = asyncio.Event()  # set: bytes flow; clear: cut off
        self._runner = _LoopThread("tcp-proxy")
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._runner.call(self._start)

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    def cut(self) -> None:
        self._runner.loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._runner.loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._runner.call(stop)
        self._runner.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._tasks.add(task)
        try:
            await self._open.wait()  # a connection made while cut off waits, unanswered
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._open.wait()  # held, not lost, while cut off
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


class PrometheusProxy:
    """127.0.0.1:<port> in front of a Prometheus at `upstream_url`; `mode` says how it answers."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.port = free_port()
        self.mode: PromMode = "pass"
        self._runner = _LoopThread("prometheus-proxy")
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None
        self._runner.call(self._start)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._http = httpx.AsyncClient(timeout=10.0, trust_env=False)
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    def set_mode(self, mode: PromMode) -> None:
        """`down` closes the listening socket (connections are refused); any other mode opens
        it again on the same port."""

        async def apply() -> None:
            previous, self.mode = self.mode, mode
            if mode == "down" and previous != "down" and self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            elif mode != "down" and self._server is None:
                await self._listen()

        self._runner.call(apply)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            if self._http is not None:
                await self._http.aclose()

        with contextlib.suppress(Exception):
            self._runner.call(stop)
        self._runner.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is not None:
                status, body = await self._answer(*request)
                head = (
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        if self.mode == "error":
            error = {"status": "error", "errorType": "unavailable", "error": "injected fault"}
            return 503, json.dumps(error).encode()
        if self.mode == "empty":
            empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
            return 200, json.dumps(empty).encode()
        assert self._http is not None
        try:
            resp = await self._http.request(
                method,
                f"{self.upstream_url}{target}",
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded"} if body else {},
            )
        except httpx.HTTPError as exc:
            return 502, json.dumps({"status": "error", "error": str(exc)}).encode()
        return resp.status_code, resp.content[:MAX_ANSWER_BYTES]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """One HTTP/1.1 request: method, target and body (Content-Length only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 2:
        return None
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > MAX_ANSWER_BYTES:
        raise ValueError("request body too large")
    body = await reader.readexactly(length) if length else b""
    return parts[0], parts[1], body
