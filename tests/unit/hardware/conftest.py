"""Fixtures: generated ONNX models (nothing downloaded) and a local HTTP server."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import numpy_helper

from modelrollout.hardware import fetch
from modelrollout.hardware.profiler import ModelProfile, ProfileCache
from modelrollout.tenancy import TenantPolicy

from . import onnxgen

BIG_SEQ = 128

# What an operator run outside a cluster is allowed: local files and loopback servers.
LOCAL_POLICY = TenantPolicy.model_validate(
    {"modelUriSchemes": ["file", "http", "https", "s3"], "allowedNetworks": ["127.0.0.0/8"]}
)


def profile_uri(
    uri: str,
    expected_sha256: str | None = None,
    *,
    cache: ProfileCache | None = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
    **kwargs: Any,
) -> ModelProfile:
    """fetch.profile_uri under LOCAL_POLICY, with its read timeout or byte limit changed."""
    update: dict[str, Any] = {}
    if timeout is not None:
        update["read_timeout_seconds"] = timeout
    if max_bytes is not None:
        update["max_model_bytes"] = max_bytes
    policy = LOCAL_POLICY.model_copy(update=update)
    return fetch.profile_uri(uri, expected_sha256, policy=policy, cache=cache, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "large_model: writes and profiles a >= 400 MB model (a few seconds)"
    )


@dataclass(frozen=True)
class OnnxCounts:
    """Parameters, bytes and operators as counted by the onnx package itself."""

    parameters: int
    weight_bytes: int
    ops: Counter[str]
    subgraphs: int


def onnx_counts(model: onnx.ModelProto) -> OnnxCounts:
    params = nbytes = subgraphs = 0
    ops: Counter[str] = Counter()

    def tensor(t: onnx.TensorProto) -> None:
        nonlocal params, nbytes
        arr = numpy_helper.to_array(t)
        params += arr.size
        nbytes += arr.nbytes

    def walk(g: onnx.GraphProto) -> None:
        nonlocal subgraphs
        for t in g.initializer:
            tensor(t)
        for n in g.node:
            ops[n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    tensor(a.t)
                for sub in (*([a.g] if a.type == onnx.AttributeProto.GRAPH else []), *a.graphs):
                    subgraphs += 1
                    walk(sub)

    walk(model.graph)
    return OnnxCounts(params, nbytes, ops, subgraphs)


@pytest.fixture(scope="session")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, onnxgen.GraphBuilder]:
    g = onnxgen.resnet_like()
    path = tmp_path_factory.mktemp("resnet") / "resnet.onnx"
    g.write(path)
    return path, g


@pytest.fixture(scope="session")
def big_transformer(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, onnxgen.GraphBuilder]]:
    """BERT-base-shaped encoder, ~108.5M parameters, 434 MB; deleted after the session."""
    g = onnxgen.transformer(seq=BIG_SEQ)
    path = tmp_path_factory.mktemp("transformer") / "transformer.onnx"
    g.write(path)
    yield path, g
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def big_profile(big_transformer: tuple[Path, onnxgen.GraphBuilder]) -> ModelProfile:
    return profile_uri(str(big_transformer[0]), dim_overrides={"seq": BIG_SEQ}, cache=None)


class _Handler(SimpleHTTPRequestHandler):
    requests_seen: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        if self.path.startswith("/unsized/"):
            # No Content-Length: the body ends when the connection closes (HTTP/1.0).
            data = (Path(self.directory) / self.path.removeprefix("/unsized/")).read_bytes()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()


@dataclass
class HttpServer:
    base: str
    root: Path
    requests: list[str]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    seen: list[str] = []

    class Handler(_Handler):
        requests_seen = seen

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval keeps shutdown() (once per test) from adding half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield HttpServer(f"http://127.0.0.1:{server.server_address[1]}", tmp_path, seen)
    finally:
        server.shutdown()
        server.server_close()
