"""Requests answered from the HTTP protocol's callbacks (transport.DirectApp), without an ASGI
task: the same answers, counts, limits and deadlines as the ASGI path, on the real process.

A URL with a query string is not a direct URL, so ``?asgi`` sends the same request down the
ASGI path of the same server: the two are compared byte for byte (the date header aside).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.server import ServerState

from modelserver.dataplane import DataPlane
from modelserver.rest import RestApp
from modelserver.settings import Settings
from modelserver.transport import guarded

from .conftest import Models
from .server_process import ServerProcess, closed, raw_post, read_answer, running_server

URL = b"/v2/models/mlp/infer"
# The model runs on the event loop (what direct answers need) however slow the machine is.
INLINE = 1000.0
ROW = [0.25] * 16


def _json(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _tensor(**over: Any) -> dict[str, Any]:
    return {"name": "features", "datatype": "FP32", "shape": [1, 16], "data": ROW, **over}


def _binary_body() -> tuple[bytes, int]:
    header = _json(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16],
                     "parameters": {"binary_data_size": 64}}],
         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    )  # fmt: skip
    return header + struct.pack("<16f", *ROW), len(header)


BODIES: dict[str, tuple[bytes, int | None]] = {
    "valid": (_json({"inputs": [_tensor()]}), None),
    "with id": (_json({"id": "r-1", "inputs": [_tensor()]}), None),
    "two rows": (_json({"inputs": [_tensor(shape=[2, 16], data=ROW * 2)]}), None),
    "one output": (_json({"inputs": [_tensor()], "outputs": [{"name": "logits"}]}), None),
    "binary in and out": _binary_body(),
    "wrong shape": (_json({"inputs": [_tensor(shape=[1, 15], data=ROW[:15])]}), None),
    "wrong datatype": (_json({"inputs": [_tensor(datatype="INT8")]}), None),
    "string data": (_json({"inputs": [_tensor(data=["0.5"] * 16)]}), None),
    "unknown input": (_json({"inputs": [_tensor(name="nope")]}), None),
    "malformed json": (b'{"inputs": [', None),
    "empty body": (b"", None),
    "bad header length": (_json({"inputs": [_tensor()]}), 10_000),
}


ANSWERED = ("valid", "with id", "two rows", "one output", "binary in and out")


def _without_date(head: bytes) -> list[bytes]:
    return [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]


def _count(server: ServerProcess, name: str, code: int) -> float:
    text = httpx.get(f"{server.metrics}/metrics", timeout=10).text
    prefix = f"{name}{{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("direct")
    with running_server(
        models.mlp,
        root,
        max_body_bytes="4096",
        header_timeout_s="1",
        body_timeout_s="1",
        connection_max_age_s="0",
        inline_run_max_ms=str(INLINE),
    ) as s:
        # The first request loads the codec; direct answers start from the second.
        body, _ = BODIES["valid"]
        assert httpx.post(f"{s.base}{URL.decode()}", content=body).status_code == 200
        yield s


@pytest.mark.parametrize("case", list(BODIES))
def test_direct_answer_is_the_asgi_answer(server: ServerProcess, case: str) -> None:
    body, header_length = BODIES[case]
    extra = (
        [] if header_length is None else [b"inference-header-content-length: %d" % header_length]
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw_post(URL, body, *extra))
        direct_head, direct_body, _ = read_answer(sock)
        sock.sendall(raw_post(URL + b"?asgi", body, *extra))
        asgi_head, asgi_body, _ = read_answer(sock)
    assert _without_date(direct_head) == _without_date(asgi_head)
    assert direct_body == asgi_body
    assert direct_head.startswith(b"HTTP/1.1 200" if case in ANSWERED else b"HTTP/1.1 4")


def test_a_body_in_pieces_is_answered_as_one(server: ServerProcess) -> None:
    body = _json({"id": "pieces", "inputs": [_tensor(shape=[8, 16], data=ROW * 8)]})
    request = raw_post(URL, body)
    head_end = request.index(b"\r\n\r\n") + 4
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request[:head_end])
        for start in range(head_end, len(request), 97):  # each piece its own on_body call
            time.sleep(0.01)
            sock.sendall(request[start : start + 97])
        head, answer, _ = read_answer(sock)
        sock.sendall(request)
        _, whole, _ = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert answer == whole


def test_pipelined_requests_answered_in_order(server: ServerProcess) -> None:
    ids = [b"first", b"second", b"third"]
    targets = [URL, URL + b"?asgi", URL]  # direct, then one behind an ASGI answer
    batch = b"".join(
        raw_post(t, _json({"id": i.decode(), "inputs": [_tensor()]}))
        for t, i in zip(targets, ids, strict=True)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(batch)
        pending = b""
        for want in ids:
            head, body, pending = read_answer(sock, pending)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert orjson.loads(body)["id"] == want.decode()


def test_direct_answers_are_counted(server: ServerProcess) -> None:
    before_ok = _count(server, "modelserver_requests_total", 200)
    before_synthetic = _count(server, "modelserver_synthetic_requests_total", 200)
    before_bad = _count(server, "modelserver_requests_total", 400)
    body, _ = BODIES["valid"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for extra in ([], [b"x-modelrollout-synthetic: 1"], []):
            sock.sendall(raw_post(URL, body, *extra))
            read_answer(sock)
        sock.sendall(raw_post(URL, BODIES["wrong shape"][0]))
        read_answer(sock)
    assert _count(server, "modelserver_requests_total", 200) == before_ok + 3
    assert _count(server, "modelserver_synthetic_requests_total", 200) == before_synthetic + 1
    assert _count(server, "modelserver_requests_total", 400) == before_bad + 1


def test_body_over_the_limit_refused_and_connection_closed(server: ServerProcess) -> None:
    before = _count(server, "modelserver_requests_total", 413)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw_post(URL, b"[" + b"0," * 3000 + b"0]"))
        head, body, _ = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"connection: close" in head.lower()
        assert b"4096-byte limit" in body
        assert closed(sock)
    assert _count(server, "modelserver_requests_total", 413) == before + 1


def test_slow_direct_body_answered_408(server: ServerProcess) -> None:
    before = _count(server, "modelserver_requests_total", 408)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body, _ = BODIES["valid"]
        sock.sendall(raw_post(URL, body))
        read_answer(sock)  # the connection now answers directly
        sock.sendall(raw_post(URL, body)[:-10])  # the last bytes of the body never come
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data
    assert _count(server, "modelserver_requests_total", 408) == before + 1


def test_idle_connection_closed_after_a_direct_answer(server: ServerProcess) -> None:
    """uvicorn arms no keep-alive timer for a direct answer: the deadline timer closes an idle
    connection after uvicorn's keep-alive timeout (5 s), late by at most the header timeout."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw_post(URL, BODIES["valid"][0]))
        read_answer(sock)
        answered = time.monotonic()
        assert closed(sock)
        idle = time.monotonic() - answered
    assert 4.5 < idle < 5 + 1 + 2, idle


def test_direct_answers_need_the_token(models: Models, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    body = BODIES["valid"][0]
    good = b"authorization: Bearer s3cret-token"
    with running_server(
        models.mlp, tmp_path, token_file=str(token), inline_run_max_ms=str(INLINE)
    ) as server:
        auth = {"Authorization": "Bearer s3cret-token"}
        first = httpx.post(f"{server.base}{URL.decode()}", content=body, headers=auth)
        assert first.status_code == 200  # the codec is made: direct answers from here on
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            for extra in ([], [b"authorization: Bearer wrong"], [b"authorization: s3cret-token"]):
                for target in (URL, URL + b"?asgi"):
                    sock.sendall(raw_post(target, body, *extra))
                    head, answer, _ = read_answer(sock)
                    assert head.startswith(b"HTTP/1.1 401"), (extra, target, head)
                    assert orjson.loads(answer) == {"error": "missing or invalid bearer token"}
            sock.sendall(raw_post(URL, body, good))
            head, _, _ = read_answer(sock)
            assert head.startswith(b"HTTP/1.1 200"), head


class _Transport(asyncio.Transport):
    """Records what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_answered_within_the_parser_callback(models: Models, tmp_path: Path) -> None:
    """The point of the direct path: the answer is written while the request's bytes are being
    parsed, with no task started; the first request (no codec yet) takes the ASGI path."""
    settings = Settings(
        model_name="mlp",
        model_uri=str(models.mlp),
        threads=1,
        model_dir=tmp_path,
        inline_run_max_ms=INLINE,
    )
    plane = DataPlane(settings, CollectorRegistry())
    await plane.start()
    await plane.wait_loaded()
    rest = RestApp(plane)
    protocol_class = guarded(10, 60, direct=rest)
    config = uvicorn.Config(rest, http=protocol_class, lifespan="off")
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    request = raw_post(URL, BODIES["valid"][0])
    try:
        protocol.data_received(request)
        assert transport.written == b""  # ASGI: answered once the task runs
        assert len(state.tasks) == 1
        await asyncio.gather(*state.tasks)
        await asyncio.sleep(0)  # the task's done callback takes it out of the set
        assert transport.written.startswith(b"HTTP/1.1 200")
        transport.written = b""
        protocol.data_received(request)
        assert not state.tasks
        assert transport.written.startswith(b"HTTP/1.1 200"), transport.written
        # A client that does not read its answers: the ASGI path, whose send waits for it.
        transport.written = b""
        protocol.pause_writing()
        protocol.data_received(request)
        assert transport.written == b""
        assert len(state.tasks) == 1
        protocol.resume_writing()
        await asyncio.gather(*state.tasks)
        assert transport.written.startswith(b"HTTP/1.1 200")
    finally:
        protocol.connection_lost(None)
        await plane.close()
