"""The real ``modelserver`` entry point as a process: ports, metrics port, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Models
from .server_process import ServerProcess, running_server, until

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.2] * 16}]}
IDENTITY = 'model="mlp",revision="",track="stable",version="1"'
OK_LABELS = f'code="200",{IDENTITY}'


@pytest.fixture
def server(models: Models, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        models.mlp,
        tmp_path,
        fault_latency_ms="1000",  # keeps requests in flight across the SIGTERM
        # The only step of the drain test bound by time: after SIGTERM, the test has this long
        # to see readiness fail and start a request. Every later step waits on an event.
        drain_delay_s="3",
        drain_timeout_s="60",
    ) as s:
        yield s


class HeldRequest:
    """An inference request whose body the test holds back: uvicorn's graceful shutdown waits
    for it, so the server cannot finish its drain (and close its metrics port) before the test
    lets it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.body = json.dumps(BODY).encode()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def start(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(self.body)}\r\n\r\n"
        )
        writer.write(head.encode() + self.body[:10])
        await writer.drain()
        self.streams = reader, writer

    async def finish(self) -> tuple[int, Any]:
        assert self.streams is not None
        reader, writer = self.streams
        writer.write(self.body[10:])
        await writer.drain()
        # Draining, the server closes the connection after the response.
        raw = await asyncio.wait_for(reader.read(), timeout=60)
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(payload)


async def test_drain_on_sigterm(server: ServerProcess) -> None:
    """SIGTERM: not ready at once; a request arriving in the drain delay is still served;
    requests in flight finish; the metrics port answers until the last of them has; exit 0."""
    infer = f"{server.base}/v2/models/mlp/infer"

    def draining() -> bool:
        ready = httpx.get(f"{server.base}/v2/health/ready", timeout=10)
        if ready.status_code == 200:
            return False
        assert ready.json() == {"ready": False, "error": "server is draining"}
        return True

    async with httpx.AsyncClient(timeout=60) as client:
        kept = await client.post(infer, json=BODY)
        assert "connection" not in kept.headers  # kept alive while serving
        in_flight = [asyncio.create_task(client.post(infer, json=BODY)) for _ in range(6)]
        await until(server.inflight, "requests in flight")
        server.proc.send_signal(signal.SIGTERM)
        await until(draining, "readiness to fail")
        # Answers in the drain close their connections, so clients move to pods that stay.
        closing = await client.post(infer, json=BODY)
        assert closing.status_code == 200
        assert closing.headers.get("connection") == "close"
        # Still serving during the drain delay: endpoints may not have caught up yet.
        late = HeldRequest(server.port)
        await late.start()
        responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [200] * 6
        assert all(r.json()["outputs"][0]["shape"] == [1, 8] for r in responses)
        # The late request holds the drain open, so this scrape cannot race the server's exit.
        scraped = await client.get(f"{server.metrics}/metrics")
        assert f"modelserver_requests_total{{{OK_LABELS}}} 8.0" in scraped.text
        status, answer = await late.finish()
        assert status == 200, answer
        assert answer["outputs"][0]["shape"] == [1, 8]

    assert await asyncio.to_thread(server.proc.wait, 60) == 0
    assert "timeout graceful shutdown exceeded" not in server.log()
    with pytest.raises(httpx.TransportError):  # the port is closed
        async with httpx.AsyncClient(timeout=1) as fresh:
            await fresh.get(f"{server.base}/v2/health/live")


def test_metrics_port(server: ServerProcess) -> None:
    assert httpx.post(f"{server.base}/v2/models/mlp/infer", json=BODY, timeout=5).status_code == 200
    r = httpx.get(f"{server.metrics}/metrics", timeout=5)
    assert r.status_code == 200
    assert 'modelserver_model_info{model="mlp"' in r.text
    assert f"modelserver_requests_total{{{OK_LABELS}}} 1.0" in r.text
    assert httpx.get(f"{server.metrics}/v2/health/live", timeout=5).status_code == 404
