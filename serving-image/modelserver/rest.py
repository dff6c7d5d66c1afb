"""Open Inference Protocol v2 over REST as a bare ASGI app.

A framework router and request object cost more per request than the whole small-model
inference, so routing is a split of the path and bodies are read straight off ``receive``.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

from .dataplane import DataPlane, InferError
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
_BINARY = b"application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"


class TokenFile:
    """A bearer token kept in a file (a mounted Secret) and re-read when the file changes."""

    _RECHECK_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: bytes | None = None
        self._mtime: float | None = None
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime != self._mtime:
                token = self.path.read_bytes().strip()
                self._token = token or None
                self._mtime = mtime
        except OSError as exc:
            log.error("cannot read token file %s: %s; refusing all requests", self.path, exc)
            self._token, self._mtime = None, None

    def allows(self, header: bytes | None) -> bool:
        now = time.monotonic()
        if now - self._checked > self._RECHECK_S:
            self._checked = now
            self._reload()
        token = self._token
        if token is None or header is None or not header.startswith(b"Bearer "):
            return False  # an unreadable or empty token file admits nobody
        return hmac.compare_digest(header[7:].strip(), token)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = _JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, doc: Any) -> None:
    await _respond(send, status, orjson.dumps(doc))


async def _error(send: Send, status: int, message: str) -> None:
    await _respond(send, status, orjson.dumps({"error": message}))


class _TooLargeError(Exception):
    pass


async def _read_body(
    scope: Scope, receive: Receive, headers: dict[bytes, bytes], limit: int
) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:  # chunked uploads declare no length up front
                raise _TooLargeError
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RestApp:
    """The ASGI application for the main port."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        settings = plane.settings
        self._tokens = TokenFile(settings.token_file) if settings.token_file else None
        self._limit = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._http(scope, receive, send)
            except ConnectionError:
                pass
            except Exception:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                await _error(send, 500, "internal server error")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.plane.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.plane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        parts = path.rstrip("/").split("/")
        plane = self.plane

        if path == "/metrics":
            await _respond(send, 200, plane.metrics.render(), METRICS_CONTENT_TYPE.encode())
            return
        if len(parts) < 2 or parts[0] != "" or parts[1] != "v2":
            await _error(send, 404, f"no route for {path}")
            return

        # Probes stay open so the kubelet needs no token.
        if len(parts) == 4 and parts[2] == "health":
            if method != "GET":
                await _error(send, 405, "method not allowed")
            elif parts[3] == "live":
                await _json(send, 200, {"live": True})
            elif parts[3] == "ready":
                if plane.ready:
                    await _json(send, 200, {"ready": True})
                else:
                    await _json(send, 503, {"ready": False, "error": plane.not_ready_reason})
            else:
                await _error(send, 404, f"no route for {path}")
            return

        headers = _headers(scope)
        is_infer = len(parts) in (5, 7) and parts[2] == "models" and parts[-1] == "infer"
        if is_infer:
            await self._infer(parts, method, headers, scope, receive, send)
            return
        if self._tokens is not None and not self._tokens.allows(headers.get(b"authorization")):
            await _error(send, 401, "missing or invalid bearer token")
            return
        if method != "GET":
            await _error(send, 405, "method not allowed")
            return
        try:
            if len(parts) == 2:
                await _json(send, 200, plane.server_metadata())
            elif parts[2] != "models" or len(parts) < 4:
                await _error(send, 404, f"no route for {path}")
            elif len(parts) == 4:
                plane.check_model(parts[3], None)
                await _json(send, 200, plane.model_metadata())
            elif len(parts) == 5 and parts[4] == "ready":
                plane.check_model(parts[3], None)
                await self._model_ready(parts[3], send)
            elif len(parts) == 6 and parts[4] == "versions":
                plane.check_model(parts[3], parts[5])
                await _json(send, 200, plane.model_metadata())
            elif len(parts) == 7 and parts[4] == "versions" and parts[6] == "ready":
                plane.check_model(parts[3], parts[5])
                await self._model_ready(parts[3], send)
            else:
                await _error(send, 404, f"no route for {path}")
        except InferError as exc:
            await _error(send, exc.status, exc.message)

    async def _model_ready(self, name: str, send: Send) -> None:
        if self.plane.ready:
            await _json(send, 200, {"name": name, "ready": True})
        else:
            doc = {"name": name, "ready": False, "error": self.plane.not_ready_reason}
            await _json(send, 503, doc)

    async def _infer(
        self,
        parts: list[str],
        method: str,
        headers: dict[bytes, bytes],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        plane = self.plane
        metrics = plane.metrics
        started = time.perf_counter()
        metrics.inflight.inc()
        status = 500
        try:
            status, body, extra = await self._infer_inner(parts, method, headers, scope, receive)
            if extra is None:
                await _respond(send, status, body)
            else:
                await _respond(send, status, body, _BINARY, extra)
        finally:
            metrics.inflight.dec()
            metrics.count(status)
            metrics.request_duration.observe(time.perf_counter() - started)

    async def _infer_inner(
        self,
        parts: list[str],
        method: str,
        headers: dict[bytes, bytes],
        scope: Scope,
        receive: Receive,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]] | None]:
        plane = self.plane
        try:
            if self._tokens is not None and not self._tokens.allows(headers.get(b"authorization")):
                raise InferError(401, "missing or invalid bearer token")
            if method != "POST":
                raise InferError(405, "method not allowed")
            if len(parts) == 7 and parts[4] != "versions":
                raise InferError(404, f"no route for {scope['path']}")
            plane.check_model(parts[3], parts[5] if len(parts) == 7 else None)
            # Draining still serves: endpoints lag behind readiness and clients retry less
            # gracefully than a slightly later shutdown.
            if plane.state != "ready":
                raise InferError(503, f"model not ready: {plane.not_ready_reason}")
            try:
                body = await _read_body(scope, receive, headers, self._limit)
            except _TooLargeError:
                raise InferError(
                    413, f"request body larger than the {self._limit}-byte limit"
                ) from None
            raw_length = headers.get(HEADER_LENGTH.encode())
            header_length: int | None = None
            if raw_length is not None:
                try:
                    header_length = int(raw_length)
                except ValueError:
                    raise InferError(
                        400, "Inference-Header-Content-Length must be an integer"
                    ) from None
            request = plane.decode(body, header_length)
            results = await plane.infer(request)
            payload, json_length = plane.encode(request, results)
        except InferError as exc:
            return exc.status, orjson.dumps({"error": exc.message}), None
        if json_length is None:
            return 200, payload, None
        return 200, payload, [(HEADER_LENGTH.encode(), str(json_length).encode())]


class MetricsApp:
    """ASGI app for the metrics port: /metrics only, no auth (scraped inside the cluster)."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].rstrip("/") in ("/metrics", ""):
            body = self.plane.metrics.render()
            await _respond(send, 200, body, METRICS_CONTENT_TYPE.encode())
        else:
            await _error(send, 404, "only /metrics is served on this port")
