"""The real ``modelserver`` entry point as a process: ports, metrics port, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Models
from .server_process import running_server

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.2] * 16}]}


@pytest.fixture
def server(models: Models, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    with running_server(
        models.mlp,
        tmp_path,
        fault_latency_ms="400",  # keeps requests in flight across the SIGTERM
        drain_delay_s="0.6",
        drain_timeout_s="10",
    ) as s:
        yield s.proc, s.base, s.metrics


async def test_drain_on_sigterm(server: tuple[subprocess.Popen[bytes], str, str]) -> None:
    proc, base, metrics = server
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        infer = "/v2/models/mlp/infer"
        in_flight = [asyncio.create_task(client.post(infer, json=BODY)) for _ in range(6)]
        await asyncio.sleep(0.15)  # requests are now inside the 400 ms injected latency
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "error": "server is draining"}
        # Still serving during the drain delay: endpoints may not have caught up yet.
        late = await client.post(infer, json=BODY)
        assert late.status_code == 200
        responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [200] * 6
        assert all(r.json()["outputs"][0]["shape"] == [1, 8] for r in responses)
        async with httpx.AsyncClient(timeout=2) as scraper:
            scraped = await scraper.get(f"{metrics}/metrics")
        assert 'modelserver_requests_total{code="200"' in scraped.text

    returncode = await asyncio.to_thread(proc.wait, 15)
    assert returncode == 0
    assert time.monotonic() - sent_at < 10
    with pytest.raises(httpx.TransportError):  # the port is closed
        async with httpx.AsyncClient(timeout=1) as fresh:
            await fresh.get(f"{base}/v2/health/live")


def test_metrics_port(server: tuple[subprocess.Popen[bytes], str, str]) -> None:
    _, base, metrics = server
    assert httpx.post(f"{base}/v2/models/mlp/infer", json=BODY, timeout=5).status_code == 200
    r = httpx.get(f"{metrics}/metrics", timeout=5)
    assert r.status_code == 200
    assert 'modelserver_model_info{model="mlp"' in r.text
    labels = 'code="200",model="mlp",revision="",track="stable",version="1"'
    assert f"modelserver_requests_total{{{labels}}} 1.0" in r.text
    assert httpx.get(f"{metrics}/v2/health/live", timeout=5).status_code == 404
