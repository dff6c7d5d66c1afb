"""The real ``modelserver`` entry point as a process: ports, metrics port, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Models

ENTRY_POINT = Path(sys.executable).parent / "modelserver"
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.2] * 16}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(models: Models, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    port, metrics_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELSERVER_")},
        "MODELSERVER_MODEL_NAME": "mlp",
        "MODELSERVER_MODEL_URI": str(models.mlp),
        "MODELSERVER_HOST": "127.0.0.1",
        "MODELSERVER_PORT": str(port),
        "MODELSERVER_METRICS_PORT": str(metrics_port),
        "MODELSERVER_THREADS": "1",
        "MODELSERVER_MODEL_DIR": str(tmp_path),
        "MODELSERVER_FAULT_LATENCY_MS": "400",  # keeps requests in flight across the SIGTERM
        "MODELSERVER_DRAIN_DELAY_S": "0.6",
        "MODELSERVER_DRAIN_TIMEOUT_S": "10",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([str(ENTRY_POINT)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("server did not become ready: " + (tmp_path / "server.log").read_text())
    yield proc, base, f"http://127.0.0.1:{metrics_port}"
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    log.close()


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
