"""Hostile requests: each is refused with a 4xx naming what is wrong, never counted as a 5xx."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from hack.processes import free_port
from modelserver.dataplane import DataPlane
from modelserver.rest import RestApp
from modelserver.settings import Settings

from .conftest import Models, ServeFactory

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.1] * 16}]}
LABELS = {"model": "mlp", "version": "1", "revision": "", "track": "stable"}


def _nested(value: str, depth: int) -> bytes:
    """JSON text of ``value`` inside ``depth`` lists (deeper than orjson will encode)."""
    return b"[" * depth + value.encode() + b"]" * depth


def _with(doc: Any, placeholder: str, raw: bytes) -> bytes:
    return orjson.dumps(doc).replace(orjson.dumps(placeholder), raw)


def _codes(registry: CollectorRegistry) -> dict[str, float]:
    codes: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "modelserver_requests_total":
                codes[sample.labels["code"]] = sample.value
    return codes


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("datatype", b"{}", "input 'features': datatype must be a string, got an object"),
        ("datatype", b"[1]", "input 'features': datatype must be a string, got a list of 1"),
        ("shape", _nested("1", 986), "input 'features': shape must be a list of non-negative"),
        ("shape", b"[1, " + _nested("16", 986) + b"]", "element 1 is a list of 1"),
        ("data", _nested("0.5", 990), "input 'features': data is ragged or has mixed types"),
    ],
    ids=["datatype object", "datatype list", "shape deep", "shape element deep", "data deep"],
)
async def test_malformed_fields_are_named(
    serve: ServeFactory, models: Models, field: str, value: bytes, message: str
) -> None:
    s = await serve(model_uri=str(models.mlp))
    body = orjson.loads(orjson.dumps(BODY))
    body["inputs"][0][field] = "@placeholder"
    r = await s.client.post(s.infer_url(), content=_with(body, "@placeholder", value))
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert _codes(s.registry) == {"400": 1.0}


async def test_bytes_nested_deep(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.identity["BYTES"]), model_name="mlp")
    value: dict[str, Any] = {"name": "value", "datatype": "BYTES", "shape": [1, 1], "data": "@"}
    deep = _with({"inputs": [value]}, "@", _nested('"a"', 990))
    r = await s.client.post(s.infer_url(), content=deep)
    assert r.status_code == 400, r.text
    assert "input 'value': BYTES data is nested deeper than the shape's rank 2" in r.text
    value["data"] = [["a"]]
    ok = await s.client.post(s.infer_url(), content=orjson.dumps({"inputs": [value]}))
    assert ok.json()["outputs"][0]["data"] == ["a"]


async def test_bytes_elements_bounded_before_decoding(serve: ServeFactory, models: Models) -> None:
    """2M empty strings in 8 MiB: refused from the shape, before a string is decoded."""
    s = await serve(model_uri=str(models.identity["BYTES"]), model_name="mlp")
    n = 2_000_000
    body = b'{"inputs":[{"name":"value","datatype":"BYTES","shape":[%d,1],"data":[%s]}]}' % (
        n,
        b",".join([b'""'] * n),
    )
    r = await s.client.post(s.infer_url(), content=body)
    assert r.status_code == 413, r.text[:300]
    assert "input 'value': shape [2000000, 1] of BYTES" in r.json()["error"]
    assert "MODELSERVER_MAX_REQUEST_MEMORY_BYTES" in r.json()["error"]


async def test_json_part_limited(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), max_json_bytes=1000)
    body = {"inputs": [{**BODY["inputs"][0], "shape": [8, 16], "data": [0.123456] * 128}]}
    r = await s.client.post(s.infer_url(), json=body)
    assert r.status_code == 413
    assert "MODELSERVER_MAX_JSON_BYTES" in r.json()["error"]


async def test_client_gone_mid_body_is_499(models: Models) -> None:
    registry = CollectorRegistry()
    plane = DataPlane(Settings(model_name="mlp", model_uri=str(models.mlp), threads=1), registry)
    await plane.start()
    await plane.wait_loaded()
    app = RestApp(plane)
    messages: Iterator[dict[str, Any]] = iter(
        [
            {"type": "http.request", "body": b'{"inputs": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/mlp/infer",
        "headers": [(b"content-length", b"100")],
    }
    try:
        await app(scope, receive, send)
    finally:
        await plane.close()
    assert sent == []  # nobody is left to answer
    assert _codes(registry) == {"499": 1.0}


async def test_requests_in_flight_capped(serve: ServeFactory, models: Models) -> None:
    s = await serve(
        model_uri=str(models.mlp), fault_latency_ms=300, max_inflight_requests=2, retry_after_s=2
    )
    responses = await asyncio.gather(*(s.client.post(s.infer_url(), json=BODY) for _ in range(5)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429, 429]
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers["retry-after"] == "2" for r in refused)
    assert "2 requests in flight, the limit is 2" in refused[0].json()["error"]
    assert _codes(s.registry) == {"200": 2.0, "429": 3.0}
    assert s.plane.inflight == 0
    assert (await s.client.post(s.infer_url(), json=BODY)).status_code == 200


async def test_credentials_never_shown(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    uri = (
        f"http://alice:hunter2-pw@127.0.0.1:{free_port()}/m.onnx"
        "?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=5ec7e75164a7"
    )
    caplog.set_level(logging.DEBUG)
    s = await serve(model_uri=uri, download_retries=1)
    r = await s.client.get("/v2/health/ready")
    assert r.status_code == 503
    reason = r.json()["error"]
    assert "alice:REDACTED@127.0.0.1" in reason, reason
    assert "X-Amz-Signature=REDACTED" in reason
    for secret in ("hunter2-pw", "AKIAEXAMPLE", "5ec7e75164a7"):
        assert secret not in reason
        assert secret not in caplog.text
    assert "download attempt 1 of http://alice:REDACTED@" in caplog.text
