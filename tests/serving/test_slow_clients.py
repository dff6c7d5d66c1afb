"""Against the real process: slow clients dropped, upgrades refused cleanly, memory bounded."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Models
from .server_process import ServerProcess, running_server

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.1] * 16}]}


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("slow")
    with running_server(models.mlp, tmp_path, header_timeout_s="1", body_timeout_s="1") as s:
        yield s


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.settimeout(5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):  # returns b"" once the server closes
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_headers_dropped(server: ServerProcess) -> None:
    sock = _connect(server)
    sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\n")
    started = time.monotonic()
    closed_after = None
    for _ in range(20):  # one header byte every 0.25 s: never complete
        try:
            sock.sendall(b"x")
        except OSError:
            closed_after = time.monotonic() - started
            break
        time.sleep(0.25)
    reply = b"" if closed_after is not None else _read_all(sock)
    closed_after = closed_after or time.monotonic() - started
    sock.close()
    assert closed_after < 3.5, closed_after
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply


def test_slow_body_after_a_request_on_the_same_connection(server: ServerProcess) -> None:
    # The deadline timer outlives a request on a kept-alive connection: the next request's
    # deadline must still count from that request, not from the first one or never.
    body = httpx.Request("POST", "http://x", json=BODY).content
    sock = _connect(server)
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    sock.sendall(head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    first = b""
    while b"\r\n\r\n" not in first or not first.endswith(b"}"):  # one whole JSON response
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    time.sleep(0.7)  # most of a deadline spent idle between the requests
    sock.sendall(head + b"content-length: 1000\r\n\r\n" + b'{"inputs": [')
    started = time.monotonic()
    reply = _read_all(sock)
    waited = time.monotonic() - started
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"body not received in 1 s" in reply
    assert 0.8 < waited < 3, waited


def test_silent_connection_dropped(server: ServerProcess) -> None:
    sock = _connect(server)
    started = time.monotonic()
    assert _read_all(sock) == b""
    assert time.monotonic() - started < 3
    sock.close()


def test_slow_body_answered_408(server: ServerProcess) -> None:
    sock = _connect(server)
    sock.sendall(
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n" + b'{"inputs": ['
    )
    started = time.monotonic()
    reply = _read_all(sock)
    sock.close()
    assert time.monotonic() - started < 3
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"body not received in 1 s" in reply
    scraped = httpx.get(f"{server.metrics}/metrics", timeout=5).text
    assert 'modelserver_requests_total{code="408"' in scraped
    assert 'code="5' not in scraped
    assert httpx.post(f"{server.base}/v2/models/mlp/infer", json=BODY).status_code == 200


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nhost: x\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\n"
        b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    ],
    ids=["websocket", "h2c"],
)
def test_upgrade_answered_as_plain_http(server: ServerProcess, request_head: bytes) -> None:
    sock = _connect(server)
    sock.sendall(request_head)
    reply = sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply
    time.sleep(0.2)
    log = server.log()
    assert "ERROR" not in log, log
    assert "Traceback" not in log, log


def test_bytes_request_memory_bounded(models: Models, tmp_path: Path) -> None:
    n = 2_000_000  # 8 MiB of empty strings once took RSS from 90 MB to 687 MB
    body = b'{"inputs":[{"name":"value","datatype":"BYTES","shape":[%d,1],"data":[%s]}]}' % (
        n,
        b",".join([b'""'] * n),
    )
    with running_server(models.identity["BYTES"], tmp_path) as server:
        before = server.rss_bytes()
        r = httpx.post(f"{server.base}/v2/models/mlp/infer", content=body, timeout=30)
        assert r.status_code == 413, r.text[:300]
        grown = server.rss_bytes() - before
        assert grown < 100 * 2**20, grown
        one = {"name": "value", "datatype": "BYTES", "shape": [1, 1], "data": ["ok"]}
        r = httpx.post(f"{server.base}/v2/models/mlp/infer", json={"inputs": [one]}, timeout=5)
        assert r.json()["outputs"][0]["data"] == ["ok"]
