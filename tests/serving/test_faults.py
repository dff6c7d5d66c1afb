"""Test-only fault injection: off by default, errors and latency when set."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelserver.batching import Arrays
from modelserver.errors import InferenceFailedError
from modelserver.faults import with_faults
from modelserver.settings import Settings

from .conftest import Models, ServeFactory

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.1] * 16}]}
LABELS = {"model": "mlp", "version": "1", "revision": "", "track": "stable"}


def test_off_by_default() -> None:
    s = Settings()
    assert (s.fault_error_ratio, s.fault_latency_ms) == (0.0, 0.0)


async def test_wrapper_installed_only_when_configured() -> None:
    async def run(feeds: Arrays) -> Arrays:
        return feeds

    assert with_faults(run, Settings()) is run  # the served path carries no fault checks
    assert with_faults(run, Settings(fault_latency_ms=1)) is not run
    with pytest.raises(InferenceFailedError, match="injected fault"):
        await with_faults(run, Settings(fault_error_ratio=1.0))({})


async def test_error_ratio(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), fault_error_ratio=1.0)
    r = await s.client.post(s.infer_url(), json=BODY)
    assert r.status_code == 500
    assert "injected fault" in r.json()["error"]
    half = await serve(model_uri=str(models.mlp), fault_error_ratio=0.5)
    codes = [(await half.client.post(half.infer_url(), json=BODY)).status_code for _ in range(200)]
    failed = codes.count(500)
    assert codes.count(200) + failed == 200
    assert 50 < failed < 150  # binomial(200, 0.5): outside this is a 1-in-10^12 event
    assert (
        half.registry.get_sample_value("modelserver_requests_total", {**LABELS, "code": "500"})
        == failed
    )


async def test_added_latency(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), fault_latency_ms=150)
    started = time.perf_counter()
    responses = await asyncio.gather(*(s.client.post(s.infer_url(), json=BODY) for _ in range(4)))
    elapsed = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    assert 0.15 <= elapsed < 1.0  # concurrent: the delay is per request, not serialised
    clean = await serve(model_uri=str(models.mlp))
    started = time.perf_counter()
    assert (await clean.client.post(clean.infer_url(), json=BODY)).status_code == 200
    assert time.perf_counter() - started < 0.15


async def test_faults_can_start_late(serve: ServeFactory, models: Models) -> None:
    """A version that is healthy at first, then regresses (the bake-window scenario)."""
    s = await serve(model_uri=str(models.mlp), fault_error_ratio=1.0, fault_after_s=0.5)
    assert (await s.client.post(s.infer_url(), json=BODY)).status_code == 200
    await asyncio.sleep(0.6)
    r = await s.client.post(s.infer_url(), json=BODY)
    assert r.status_code == 500
    assert "injected fault" in r.json()["error"]
