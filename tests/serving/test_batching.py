"""Dynamic batching: batched results equal unbatched ones, and batches really form."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import onnxruntime as ort

from .conftest import Models, ServeFactory

LABELS = {"model": "mlp", "version": "1", "revision": "", "track": "stable"}


def body(x: np.ndarray[Any, Any], name: str = "features", datatype: str = "FP32") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


async def test_batched_equals_unbatched(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), batch_max_size=16, batch_window_ms=30)
    rng = np.random.default_rng(11)
    inputs = [
        rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32) for _ in range(24)
    ]
    responses = await asyncio.gather(*(s.client.post(s.infer_url(), json=body(x)) for x in inputs))

    session = ort.InferenceSession(str(models.mlp), providers=["CPUExecutionProvider"])
    for x, r in zip(inputs, responses, strict=True):
        assert r.status_code == 200, r.text
        outs = {o["name"]: o for o in r.json()["outputs"]}
        logits, probs = session.run(["logits", "probabilities"], {"features": x})
        assert outs["logits"]["shape"] == [x.shape[0], 8]
        np.testing.assert_array_equal(
            np.array(outs["logits"]["data"], np.float32).reshape(logits.shape), logits
        )
        np.testing.assert_array_equal(
            np.array(outs["probabilities"]["data"], np.float32).reshape(probs.shape), probs
        )

    runs = s.registry.get_sample_value("modelserver_batch_size_count", LABELS)
    rows = s.registry.get_sample_value("modelserver_batch_size_sum", LABELS)
    assert rows == sum(x.shape[0] for x in inputs)
    assert runs is not None
    assert runs < len(inputs)
    largest = s.registry.get_sample_value("modelserver_batch_size_bucket", {**LABELS, "le": "8.0"})
    assert largest is not None
    assert largest < runs


async def test_full_batch_does_not_wait_for_window(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), batch_max_size=4, batch_window_ms=2000)
    x = np.ones((1, 16), np.float32)
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(s.client.post(s.infer_url(), json=body(x)) for _ in range(4))
    )
    assert time.perf_counter() - started < 1.5
    assert all(r.status_code == 200 for r in responses)
    assert s.registry.get_sample_value("modelserver_batch_size_count", LABELS) == 1


async def test_mixed_shapes_and_oversized_requests(serve: ServeFactory, models: Models) -> None:
    s = await serve(
        model_uri=str(models.identity["FP32"]),
        model_name="echo",
        batch_max_size=8,
        batch_window_ms=20,
    )
    rng = np.random.default_rng(3)
    inputs = [
        rng.standard_normal((rows, width)).astype(np.float32)
        for rows, width in [(1, 3), (2, 5), (1, 3), (20, 3), (3, 5), (1, 1)]
    ]
    responses = await asyncio.gather(
        *(s.client.post(s.infer_url(), json=body(x, "value")) for x in inputs)
    )
    for x, r in zip(inputs, responses, strict=True):
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == list(x.shape)
        np.testing.assert_array_equal(np.array(out["data"], np.float32).reshape(x.shape), x)


async def test_fixed_batch_model_is_not_batched(serve: ServeFactory, models: Models) -> None:
    s = await serve(
        model_uri=str(models.fixed), model_name="fixed", batch_max_size=8, batch_window_ms=50
    )
    assert s.plane._batcher is None
    x = np.ones((1, 8), np.float32)
    responses = await asyncio.gather(
        *(s.client.post(s.infer_url(), json=body(x, "x")) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [200, 200, 200]


def test_lone_request_under_uvloop_is_not_stranded() -> None:
    # uvloop timers may fire before loop.time() reaches their deadline; a lone request must
    # still be dispatched when the window closes.
    import concurrent.futures

    import uvloop

    from modelserver.batching import Batcher

    def run(feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        return {"y": feeds["x"] * 2}

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = Batcher(run, pool, max_batch_size=32, window_s=0.003)
            for i in range(30):
                x = np.full((1, 2), i, np.float32)
                out = await asyncio.wait_for(batcher.submit({"x": x}), timeout=2)
                np.testing.assert_array_equal(out["y"], x * 2)
            await batcher.close()

    uvloop.run(main())
