"""Entry point: the REST, gRPC and metrics servers in one event loop, drained on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine, Generator
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from . import grpcserver
from .dataplane import DataPlane
from .rest import MetricsApp, RestApp
from .settings import Settings
from .transport import guarded

log = logging.getLogger("modelserver")


class _Server(uvicorn.Server):
    """uvicorn's server minus its signal handling: shutdown is ours to sequence."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(settings: Settings) -> None:
    plane = DataPlane(settings, CollectorRegistry())
    common: dict[str, Any] = {
        "host": settings.host,
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "proxy_headers": False,  # client addresses are not used: skip the middleware
        "timeout_graceful_shutdown": settings.drain_timeout_s,
    }
    common["ws"] = "none"  # no WebSocket endpoint: an upgrade request is answered as plain HTTP
    deadlines = (settings.header_timeout_s, settings.body_timeout_s, settings.connection_max_age_s)
    rest = RestApp(plane, owns_plane=False)
    main = _Server(
        uvicorn.Config(
            rest, port=settings.port, lifespan="on", http=guarded(*deadlines, direct=rest), **common
        )
    )
    metrics = (
        _Server(
            uvicorn.Config(
                MetricsApp(plane),
                port=settings.metrics_port,
                lifespan="off",
                http=guarded(*deadlines),
                **common,
            )
        )
        if settings.metrics_port
        else None
    )

    await plane.start()
    grpc_server = await grpcserver.start(plane) if settings.grpc_port else None
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    async def drain() -> None:
        plane.draining = True  # readiness fails first, so endpoints stop sending traffic
        log.info("draining: not ready, stopping in %.1fs", settings.drain_delay_s)
        await asyncio.sleep(settings.drain_delay_s)
        main.should_exit = True  # uvicorn stops accepting and waits for in-flight requests
        if grpc_server is not None:  # the same for gRPC: no new calls, in-flight ones may finish
            await grpc_server.stop(settings.drain_timeout_s)

    def on_signal(sig: signal.Signals) -> None:
        if draining:  # a second signal means "now"
            main.force_exit = True
            main.should_exit = True
            if grpc_server is not None:
                draining.append(loop.create_task(grpc_server.stop(None)))
            return
        log.info("received %s", sig.name)
        draining.append(loop.create_task(drain()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    jobs: list[Coroutine[Any, Any, None]] = [main.serve()]
    if metrics is not None:
        jobs.append(metrics.serve())
    main_task = asyncio.ensure_future(jobs[0])
    metrics_task = asyncio.ensure_future(jobs[1]) if len(jobs) > 1 else None
    await main_task
    if draining:
        await asyncio.gather(*draining)  # gRPC drains beside REST
    if grpc_server is not None:  # REST failed to start, or gRPC drained already (a no-op)
        await grpc_server.stop(None)
    await plane.close()  # after every transport's in-flight requests have finished
    if metrics is not None and metrics_task is not None:
        metrics.should_exit = True  # metrics outlive the main port to record the drain
        await metrics_task
    if not main.started:
        raise SystemExit(f"could not listen on {settings.host}:{settings.port}")
    log.info("stopped")


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"modelserver: invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux-only extra
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
