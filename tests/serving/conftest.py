"""Models generated per session, and an in-process server factory."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from modelserver.dataplane import DataPlane
from modelserver.rest import RestApp
from modelserver.settings import Settings

from . import serving_models


@dataclass
class Models:
    mlp: Path
    fixed: Path
    cnn: Path
    identity: dict[str, Path]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("models")
    return Models(
        mlp=serving_models.mlp(root / "mlp.onnx"),
        fixed=serving_models.fixed_batch(root / "fixed.onnx"),
        cnn=serving_models.cnn(root / "cnn.onnx"),
        identity={
            dt: serving_models.identity(root / f"identity_{dt.lower()}.onnx", dt)
            for dt in serving_models.ONNX_TYPES
        },
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Served:
    plane: DataPlane
    client: httpx.AsyncClient
    registry: CollectorRegistry

    def infer_url(self, version: str | None = None) -> str:
        name = self.plane.settings.model_name
        if version is None:
            return f"/v2/models/{name}/infer"
        return f"/v2/models/{name}/versions/{version}/infer"


ServeFactory = Callable[..., Awaitable[Served]]


# Function loop: the batcher's tasks must live and die in the loop of the test using them.
@pytest_asyncio.fixture(loop_scope="function")
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """Start a DataPlane behind the ASGI app, without sockets; ``wait`` blocks until loaded."""
    started: list[Served] = []

    async def factory(*, wait: bool = True, **overrides: Any) -> Served:
        overrides.setdefault("model_name", "mlp")
        overrides.setdefault("threads", 1)
        overrides.setdefault("model_dir", tmp_path / "cache")
        registry = CollectorRegistry()
        plane = DataPlane(Settings(**overrides), registry)
        await plane.start()
        if wait:
            await plane.wait_loaded()
        transport = httpx.ASGITransport(app=RestApp(plane))
        client = httpx.AsyncClient(transport=transport, base_url="http://modelserver.test")
        served = Served(plane, client, registry)
        started.append(served)
        return served

    yield factory
    for served in started:
        await served.client.aclose()
        await served.plane.close()
