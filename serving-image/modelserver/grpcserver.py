"""Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService`` on grpcio's asyncio
server, in the event loop that serves REST and sharing its DataPlane.

Handlers are registered by method name with a generic handler rather than generated service
stubs: only the messages are generated (proto/), and nothing untyped enters the server. Domain
errors from the data plane become gRPC status codes here, and only here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
import grpc.aio

from . import errors
from .auth import TokenFile
from .dataplane import DataPlane
from .grpccodec import decode_request, encode_response
from .metrics import FOLD_EVERY
from .proto import grpc_predict_v2_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

GRPC_STATUS: dict[type[errors.ServingError], grpc.StatusCode] = {
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.TooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InferenceFailedError: grpc.StatusCode.INTERNAL,
    errors.NotReadyError: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status(exc: errors.ServingError) -> grpc.StatusCode:
    return GRPC_STATUS.get(type(exc), grpc.StatusCode.INTERNAL)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: errors.ServingError) -> NoReturn:
    await context.abort(grpc_status(exc), exc.message)
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


class InferenceServicer:
    """The six OIP RPCs. ServerLive and ServerReady stay open, as REST's health probes do."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        settings = plane.settings
        self._tokens = TokenFile(settings.token_file) if settings.token_file else None

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._tokens is None:
            return
        header: bytes | None = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value.encode() if isinstance(value, str) else value
                break
        if not self._tokens.allows(header):
            raise errors.UnauthenticatedError("missing or invalid bearer token in 'authorization'")

    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        try:
            self._authenticate(context)
            self.plane.check_model(request.name, request.version or None)
        except errors.ServingError as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        try:
            self._authenticate(context)
        except errors.ServingError as exc:
            await _abort(context, exc)
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"])

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        try:
            self._authenticate(context)
            self.plane.check_model(request.name, request.version or None)
            meta = self.plane.model_metadata()
        except errors.ServingError as exc:
            await _abort(context, exc)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        plane = self.plane
        metrics = plane.metrics
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            plane.enter()
        except errors.OverloadedError as exc:
            metrics.count_grpc(grpc_status(exc).name)
            await _abort(context, exc)
        try:
            self._authenticate(context)
            response = await self._infer(request)
            code = grpc.StatusCode.OK
            return response
        except errors.ServingError as exc:
            code = grpc_status(exc)
            await _abort(context, exc)
        except Exception:
            if not context.cancelled():
                log.exception("unhandled error in ModelInfer")
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "internal server error")
            raise
        finally:
            if context.cancelled():
                code = grpc.StatusCode.CANCELLED  # the client left: its fault, not ours
            plane.leave()
            metrics.count_grpc(code.name)
            pending = metrics.grpc_request_duration.pending
            pending.append(time.perf_counter() - started)
            if len(pending) >= FOLD_EVERY:
                metrics.fold()

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        plane = self.plane
        plane.check_model(request.model_name, request.model_version or None)
        runtime = plane.loaded()
        decoded = decode_request(request, runtime.inputs, runtime.outputs, plane.limits)
        results = plane.infer_now(decoded) if plane.run_inline else await plane.infer(decoded)
        return encode_response(
            model_name=plane.settings.model_name,
            model_version=plane.settings.model_version,
            request=decoded,
            results=results,
        )


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _method(handler: Handler, request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )


def service_handler(plane: DataPlane) -> grpc.GenericRpcHandler[Any, Any]:
    s = InferenceServicer(plane)
    methods = {
        "ServerLive": _method(s.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": _method(s.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": _method(s.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": _method(
            s.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
        ),
        "ModelMetadata": _method(
            s.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
        ),
        "ModelInfer": _method(s.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def start(plane: DataPlane) -> grpc.aio.Server:
    """Listen on the gRPC port; SystemExit with the address when it cannot be bound."""
    settings = plane.settings
    options = [
        # A message holds the whole request: the same bound as a REST body.
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        # grpc shares a busy port by default (SO_REUSEPORT); a second server must fail instead.
        ("grpc.so_reuseport", 0),
    ]
    if settings.connection_max_age_s:
        # As for REST (transport.py): a GOAWAY after this age, grpc's own jitter added, so
        # channels reconnect through the Service; calls in flight get the drain's time to end.
        options += [
            ("grpc.max_connection_age_ms", round(settings.connection_max_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.drain_timeout_s * 1000)),
        ]
    server = grpc.aio.server(handlers=[service_handler(plane)], options=options)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise SystemExit(f"could not listen for gRPC on {address}: {exc}") from None
    if not bound:
        raise SystemExit(f"could not listen for gRPC on {address}")
    await server.start()
    log.info("gRPC (OIP v2) listening on %s", address)
    return server
