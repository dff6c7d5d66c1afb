"""Metric names and labels the canary analysis depends on."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .conftest import Models, ServeFactory, sha256

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 16], "data": [0.1] * 32}]}


async def test_metrics_exposition(serve: ServeFactory, models: Models) -> None:
    s = await serve(
        model_uri=str(models.mlp),
        model_version="2",
        revision="abc123",
        track="canary",
        batch_max_size=4,
        batch_window_ms=0,
        metrics_port=0,  # /metrics on the main port, where the in-process client can reach it
    )
    for _ in range(3):
        assert (await s.client.post(s.infer_url(), json=BODY)).status_code == 200
    synthetic = {"x-modelrollout-synthetic": "1"}
    response = await s.client.post(s.infer_url(), json={"inputs": []}, headers=synthetic)
    assert response.status_code == 400
    assert (await s.client.post("/v2/models/mlp/versions/7/infer", json=BODY)).status_code == 404

    r = await s.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }
    ident = {"model": "mlp", "version": "2", "revision": "abc123", "track": "canary"}

    def value(name: str, **extra: str) -> float:
        return samples[(name, tuple(sorted({**ident, **extra}.items())))]

    assert value("modelserver_requests_total", code="200") == 3
    assert value("modelserver_requests_total", code="400") == 1
    assert value("modelserver_requests_total", code="404") == 1
    # The operator's synthetic requests are counted among all and apart.
    assert value("modelserver_synthetic_requests_total", code="400") == 1
    assert (
        "modelserver_synthetic_requests_total",
        tuple(sorted({**ident, "code": "200"}.items())),
    ) not in samples
    assert value("modelserver_request_duration_seconds_count") == 5
    assert value("modelserver_request_duration_seconds_sum") > 0
    assert value("modelserver_inference_duration_seconds_count") == 3
    assert value("modelserver_batch_size_sum") == 6  # three runs of two rows
    assert value("modelserver_batch_size_bucket", le="1.0") == 0  # "le": at most
    assert value("modelserver_batch_size_bucket", le="2.0") == 3
    assert value("modelserver_batch_size_bucket", le="+Inf") == 3
    assert value("modelserver_inflight_requests") == 0
    assert value("modelserver_model_load_seconds") > 0
    assert (
        value("modelserver_model_info", sha256=sha256(models.mlp), provider="CPUExecutionProvider")
        == 1
    )


async def test_registries_are_independent(serve: ServeFactory, models: Models) -> None:
    # Two servers in one process: no module-level metric state is shared.
    a = await serve(model_uri=str(models.mlp))
    b = await serve(model_uri=str(models.mlp))
    assert (await a.client.post(a.infer_url(), json=BODY)).status_code == 200
    labels = {"model": "mlp", "version": "1", "revision": "", "track": "stable", "code": "200"}
    assert a.registry.get_sample_value("modelserver_requests_total", labels) == 1
    assert b.registry.get_sample_value("modelserver_requests_total", labels) is None
