"""Against the real process: connections older than MODELSERVER_CONNECTION_MAX_AGE_S are closed
after an answer (REST) or sent GOAWAY (gRPC), so a Service balances kept-alive clients again."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .conftest import Models
from .server_process import ServerProcess, closed, raw_post, read_answer, running_server

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.1] * 16}]}
AGE_S = 0.5


@pytest.fixture(scope="module")
def aged(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("aged")
    with running_server(models.mlp, root, grpc=True, connection_max_age_s=str(AGE_S)) as s:
        yield s


@pytest.fixture(scope="module")
def ageless(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ageless")
    with running_server(models.mlp, root, grpc=True, connection_max_age_s="0") as s:
        yield s


def _request() -> bytes:
    return raw_post(b"/v2/models/mlp/infer", httpx.Request("POST", "http://x", json=BODY).content)


def _head(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole response on a kept-alive connection: (lower-cased head, body)."""
    head, body, _ = read_answer(sock)
    return head.lower(), body


def test_rest_connection_closed_after_its_age(aged: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", aged.port), timeout=5) as sock:
        sock.sendall(_request())
        head, _ = _head(sock)
        assert head.startswith(b"http/1.1 200"), head
        assert b"connection: close" not in head  # young: kept alive
        time.sleep(AGE_S + 0.1)
        sock.sendall(_request())
        head, body = _head(sock)
        # The request that finds the connection old is still answered, then the connection goes.
        assert head.startswith(b"http/1.1 200"), head
        assert b'"outputs"' in body
        assert b"connection: close" in head
        assert closed(sock)


def test_rest_connection_kept_without_an_age(ageless: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", ageless.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(_request())
            head, _ = _head(sock)
            assert head.startswith(b"http/1.1 200"), head
            assert b"connection: close" not in head, head
            time.sleep(AGE_S + 0.1)


def _connectivity(target: str, watch_s: float) -> list[grpc.ChannelConnectivity]:
    """The states a channel goes through in `watch_s` after one call, and a last call's."""
    seen: list[grpc.ChannelConnectivity] = []
    changed = threading.Event()

    def record(state: grpc.ChannelConnectivity) -> None:
        seen.append(state)
        changed.set()

    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        channel.subscribe(record)
        deadline = time.monotonic() + watch_s
        while time.monotonic() < deadline and grpc.ChannelConnectivity.IDLE not in seen:
            changed.wait(0.1)
            changed.clear()
        # After a GOAWAY the channel connects again on its own for the next call.
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        channel.unsubscribe(record)
    return seen


def test_grpc_goaway_after_its_age(aged: ServerProcess) -> None:
    # grpc adds up to a tenth of jitter and checks ages on its own timer: a generous window.
    seen = _connectivity(aged.grpc_target, watch_s=20)
    assert grpc.ChannelConnectivity.IDLE in seen, seen


def test_grpc_channel_kept_without_an_age(ageless: ServerProcess) -> None:
    seen = _connectivity(ageless.grpc_target, watch_s=3 * AGE_S)
    assert grpc.ChannelConnectivity.IDLE not in seen, seen
