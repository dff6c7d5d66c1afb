"""Open Inference Protocol v2 over REST as a bare ASGI app.

A framework router and request object cost more per request than the whole small-model
inference, so routes are a dict lookup plus one regular expression, and bodies are read straight
off ``receive``. Domain errors from the data plane become HTTP status codes here, and only here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .auth import TokenFile
from .dataplane import DataPlane
from .errors import (
    InferenceFailedError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    ServingError,
    TooLargeError,
    UnauthenticatedError,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .restfast import RestCodec
from .transport import TIMED_OUT

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
_BINARY = b"application/octet-stream"
_JSON_TYPE = (b"content-type", _JSON)
_BINARY_TYPE = (b"content-type", _BINARY)
HEADER_LENGTH = b"inference-header-content-length"
# Marks the operator's synthetic traffic (docs/rollouts.md, "Synthetic traffic").
SYNTHETIC = b"x-modelrollout-synthetic"

HTTP_STATUS: dict[type[ServingError], int] = {
    InvalidRequestError: 400,
    UnauthenticatedError: 401,
    NotFoundError: 404,
    TooLargeError: 413,
    OverloadedError: 429,
    InferenceFailedError: 500,
    NotReadyError: 503,
}


class MethodNotAllowedError(ServingError):
    """A REST-only failure: the path exists but not for this method."""


HTTP_STATUS[MethodNotAllowedError] = 405
CLIENT_CLOSED = 499  # nginx's code for a client that left before its request was read

# /v2/models/{name}[/versions/{version}][/ready|/infer], with an optional trailing slash.
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?/?")


def http_status(exc: ServingError) -> int:
    return HTTP_STATUS.get(type(exc), 500)


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


def _json_head(payload: bytes) -> bytes:
    """The header lines of a JSON answer, as ``_respond`` sends them."""
    return b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload)


def _binary_head(payload: bytes, json_length: int) -> bytes:
    return (
        b"content-type: application/octet-stream\r\ncontent-length: %d\r\n"
        b"inference-header-content-length: %d\r\n" % (len(payload), json_length)
    )


def _error_body(exc: ServingError) -> bytes:
    return orjson.dumps({"error": exc.message})


async def _error(send: Send, exc: ServingError) -> None:
    await _respond(send, http_status(exc), _error_body(exc))


_CLOSE = (b"connection", b"close")


def _closing(send: Send) -> Send:
    """While the server drains, every answer closes its connection. A client's next request then
    opens a new one, which the Service sends to a pod that stays; a kept-alive connection would
    keep reaching this pod until it exits and be cut under a request in flight."""

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], _CLOSE]}
        await send(message)

    return closing_send


def _too_large(limit: int) -> TooLargeError:
    return TooLargeError(f"request body larger than the {limit}-byte limit")


async def _read_body(first: Message, receive: Receive, limit: int) -> bytes:
    """A body that came in more than one message, from its first on (or one too large)."""
    chunks: list[bytes] = []
    size = 0
    message = first
    while True:
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:  # chunked uploads declare no length up front
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
        message = await receive()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError("Inference-Header-Content-Length must be an integer") from None


class RestApp:
    """The ASGI application for the main port."""

    def __init__(self, plane: DataPlane, *, owns_plane: bool = True) -> None:
        self.plane = plane
        # With other transports on the plane, the entry point starts and closes it instead.
        self._owns_plane = owns_plane
        settings = plane.settings
        self._tokens = TokenFile(settings.token_file) if settings.token_file else None
        self._limit = settings.max_body_bytes
        self._limit_digits = len(str(self._limit))
        self._retry_after = [(b"retry-after", str(settings.retry_after_s).encode())]
        self._retry_after_line = b"retry-after: %d\r\n" % settings.retry_after_s
        # Probes stay open so the kubelet needs no token.
        self._open: dict[str, Callable[[Send], Awaitable[None]]] = {
            "/v2/health/live": self._live,
            "/v2/health/ready": self._ready,
        }
        # /metrics lives on its own port; here only when that port is off, and behind the token.
        self._metrics_here = settings.metrics_port == 0
        # The served model's infer paths, matched without the regular expression.
        name, version = settings.model_name, settings.model_version
        self._model_name, self._model_version = name, version
        self._infer_paths: dict[str, tuple[str, str | None]] = {
            f"/v2/models/{name}/infer": (name, None),
            f"/v2/models/{name}/versions/{version}/infer": (name, version),
        }
        self._codec: RestCodec | None = None  # once the model is loaded
        # transport.DirectApp: the infer paths, once a request there can be answered without
        # waiting (the model loaded and run on the event loop); the protocol answers them.
        self.direct_urls: set[bytes] = set()
        self.body_limit = self._limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.plane.draining:
                send = _closing(send)
            try:
                if scope["path"] in self._infer_paths:  # the served model: no name check
                    await self._infer(scope, None, dict(scope["headers"]), receive, send)
                else:
                    await self._http(scope, receive, send)
            except ConnectionError:
                pass
            except Exception:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                await _error(send, InferenceFailedError("internal server error"))
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":  # only when a server offers upgrades: refuse the handshake
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._owns_plane:
                    await self.plane.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._owns_plane:
                    await self.plane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = dict(scope["headers"])
        route = _MODEL_PATH.fullmatch(path)
        if route is not None and route[3] == "infer":
            await self._infer(scope, (route[1], route[2]), headers, receive, send)
            return
        try:
            handler = self._open.get(path)
            if handler is not None:
                if method != "GET":
                    raise MethodNotAllowedError("method not allowed")
                await handler(send)
                return
            if path == "/metrics" and self._metrics_here:
                self._authenticate(headers)
                await self._metrics(send)
                return
            if route is None and path not in ("/v2", "/v2/"):
                raise NotFoundError(f"no route for {path}")
            self._authenticate(headers)
            if method != "GET":
                raise MethodNotAllowedError("method not allowed")
            if route is None:
                await _json(send, 200, self.plane.server_metadata())
            else:
                self.plane.check_model(route[1], route[2])
                if route[3] == "ready":
                    await self._model_ready(route[1], send)
                else:
                    await _json(send, 200, self.plane.model_metadata())
        except ServingError as exc:
            await _error(send, exc)

    def _authenticate(self, headers: dict[bytes, bytes]) -> None:
        if self._tokens is not None and not self._tokens.allows(headers.get(b"authorization")):
            raise UnauthenticatedError("missing or invalid bearer token")

    async def _live(self, send: Send) -> None:
        await _json(send, 200, {"live": True})

    async def _ready(self, send: Send) -> None:
        if self.plane.ready:
            await _json(send, 200, {"ready": True})
        else:
            await _json(send, 503, {"ready": False, "error": self.plane.not_ready_reason})

    async def _metrics(self, send: Send) -> None:
        await _respond(send, 200, self.plane.metrics.render(), METRICS_CONTENT_TYPE.encode())

    async def _model_ready(self, name: str, send: Send) -> None:
        if self.plane.ready:
            await _json(send, 200, {"name": name, "ready": True})
        else:
            doc = {"name": name, "ready": False, "error": self.plane.not_ready_reason}
            await _json(send, 503, doc)

    async def _infer(
        self,
        scope: Scope,
        model: tuple[str, str | None] | None,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
    ) -> None:
        # One coroutine from admission to the response, the common case's steps inline: each
        # call or await saved is a few hundred instructions, and the whole request (transport
        # included) a few hundred thousand, so they add up to whole percents of throughput.
        plane = self.plane
        started = time.perf_counter()
        # The operator's synthetic traffic (a header of its own): counted apart as well.
        synthetic = SYNTHETIC in headers
        try:
            plane.enter()
        except OverloadedError as exc:
            await _respond(send, 429, _error_body(exc), extra=self._retry_after)
            plane.metrics.count(429, synthetic)
            return
        status = 500
        try:
            try:
                codec = self._codec
                if codec is None or model is not None or self._tokens is not None:
                    codec = self._admit(scope, model, headers)
                elif scope["method"] != "POST":
                    raise MethodNotAllowedError("method not allowed")
                declared = headers.get(b"content-length")
                # Refused before its body is read; a length of fewer digits than the limit's
                # is under it, and needs no int().
                if (
                    declared is not None
                    and len(declared) >= self._limit_digits
                    and declared.isdigit()
                    and int(declared) > self._limit
                ):
                    raise _too_large(self._limit)
                message = await receive()
                body = message.get("body", b"")
                if message.get("more_body", False) or len(body) > self._limit:
                    body = await _read_body(message, receive, self._limit)
                elif message["type"] != "http.request":
                    raise ConnectionError("client disconnected")
                raw_length = headers.get(HEADER_LENGTH)
                request = codec.decode(body, None if raw_length is None else _int(raw_length))
                if plane.run_inline:
                    results = plane.infer_now(request)
                else:
                    results = await plane.infer(request)
                payload, json_length = codec.encode(request, results)
                status = 200
            except ServingError as exc:
                status, payload, json_length = http_status(exc), _error_body(exc), None
            length = (b"content-length", str(len(payload)).encode())
            if json_length is None:
                start = {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [_JSON_TYPE, length],
                }
            else:
                extra = (HEADER_LENGTH, str(json_length).encode())
                start = {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [_BINARY_TYPE, length, extra],
                }
            await send(start)
            await send({"type": "http.response.body", "body": payload})
        except ConnectionError:
            # Gone before its body arrived: not a server error, counted apart as nginx does;
            # or cut off by the body deadline, a client error.
            status = 408 if scope.get(TIMED_OUT) else CLIENT_CLOSED
            raise
        finally:
            plane.leave()
            plane.metrics.request_done(status, synthetic, time.perf_counter() - started)

    # transport.DirectApp: a request answered from the protocol's callbacks, its body in hand.

    def answer(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes, bytes]:
        """``_infer`` for a body already read, when the model runs on the event loop."""
        plane = self.plane
        started = time.perf_counter()
        fields = dict(headers)
        synthetic = SYNTHETIC in fields
        codec = self._codec
        try:
            plane.enter()
        except OverloadedError as exc:
            plane.metrics.count(429, synthetic)
            payload = _error_body(exc)
            return 429, _json_head(payload) + self._retry_after_line, payload
        json_length = None
        try:
            if self._tokens is not None:
                self._authenticate(fields)
            assert codec is not None  # direct_urls is filled once the codec is made
            raw_length = fields.get(HEADER_LENGTH)
            request = codec.decode(body, None if raw_length is None else _int(raw_length))
            payload, json_length = codec.encode(request, plane.infer_now(request))
            status = 200
        except ServingError as exc:
            status, payload = http_status(exc), _error_body(exc)
        except Exception:
            log.exception("unhandled error on POST %s", self._model_name)
            status, payload = 500, _error_body(InferenceFailedError("internal server error"))
        finally:
            plane.leave()
        plane.metrics.request_done(status, synthetic, time.perf_counter() - started)
        if json_length is None:
            return status, _json_head(payload), payload
        return status, _binary_head(payload, json_length), payload

    def refuse_too_large(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bytes]:
        self.plane.metrics.count(413, SYNTHETIC in dict(headers))
        payload = _error_body(_too_large(self._limit))
        return 413, _json_head(payload), payload

    def unanswered(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.plane.metrics.count(status, SYNTHETIC in dict(headers))

    @property
    def closing(self) -> bool:
        return self.plane.draining

    def _admit(
        self, scope: Scope, model: tuple[str, str | None] | None, headers: dict[bytes, bytes]
    ) -> RestCodec:
        """Auth, method and model checked; the codec of the loaded model."""
        self._authenticate(headers)
        if scope["method"] != "POST":
            raise MethodNotAllowedError("method not allowed")
        if model is not None:
            self.plane.check_model(*model)
        codec = self._codec
        if codec is None:
            # Draining still serves: endpoints lag behind readiness and clients retry less
            # gracefully than a slightly later shutdown.
            runtime = self.plane.loaded()
            codec = RestCodec(
                runtime.inputs,
                runtime.outputs,
                self.plane.limits,
                model_name=self._model_name,
                model_version=self._model_version,
            )
            self._codec = codec
            if self.plane.run_inline:
                self.direct_urls.update(path.encode() for path in self._infer_paths)
        return codec


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
            await _error(send, NotFoundError("only /metrics is served on this port"))
