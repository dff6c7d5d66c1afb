"""The real node's wait for containerd's CRI plugin, against gRPC servers on a unix socket that
answer the CRI Version call, refuse it the way containerd does while it recovers, or are absent."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hack.realnode import cri_ready

VERSION = "/runtime.v1.RuntimeService/Version"


def _server(path: Path, initialized: bool) -> grpc.Server:
    def version(request: bytes, context: Any) -> bytes:
        assert request == b""  # an empty VersionRequest
        if not initialized:
            context.abort(grpc.StatusCode.UNKNOWN, "server is not initialized yet")
        return b"\n\x050.1.0"  # field 1 (version) = "0.1.0"

    handler = grpc.method_handlers_generic_handler(
        "runtime.v1.RuntimeService",
        {"Version": grpc.unary_unary_rpc_method_handler(version)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), handlers=[handler])
    server.add_insecure_port(f"unix://{path}")
    server.start()
    return server


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "containerd.sock"


@pytest.mark.parametrize(("initialized", "ready"), [(True, True), (False, False)])
def test_cri_ready_follows_the_version_call(
    socket_path: Path, initialized: bool, ready: bool
) -> None:
    server = _server(socket_path, initialized)
    try:
        assert cri_ready(str(socket_path)) is ready
    finally:
        server.stop(None)


def test_no_server_is_not_ready(socket_path: Path) -> None:
    assert cri_ready(str(socket_path)) is False
