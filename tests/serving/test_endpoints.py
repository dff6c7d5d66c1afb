"""Every OIP v2 REST endpoint, with results checked against onnxruntime directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from .conftest import Models, ServeFactory


def reference(path: Any, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def features(rows: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


async def test_health_and_server_metadata(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp))
    live = await s.client.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = await s.client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = (await s.client.get("/v2")).json()
    assert meta["name"] == "modelserver"
    assert "binary_tensor_data" in meta["extensions"]
    assert isinstance(meta["version"], str)


async def test_model_metadata_read_from_onnx(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), model_version="3")
    for url in ("/v2/models/mlp", "/v2/models/mlp/versions/3", "/v2/models/mlp/"):
        r = await s.client.get(url)
        assert r.status_code == 200, url
        assert r.json() == {
            "name": "mlp",
            "versions": ["3"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, 8]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 8]},
            ],
        }
    fixed = await serve(model_uri=str(models.fixed), model_name="fixed")
    meta = (await fixed.client.get("/v2/models/fixed")).json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 8]}]


async def test_model_ready(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), model_version="2")
    for url in ("/v2/models/mlp/ready", "/v2/models/mlp/versions/2/ready"):
        r = await s.client.get(url)
        assert (r.status_code, r.json()) == (200, {"name": "mlp", "ready": True})


async def test_unknown_model_version_and_route(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), model_version="2")
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]
    }
    cases = [
        ("GET", "/v2/models/nope", "unknown model 'nope'"),
        ("GET", "/v2/models/nope/ready", "unknown model 'nope'"),
        ("GET", "/v2/models/mlp/versions/9", "unknown version '9'"),
        ("GET", "/v2/models/mlp/versions/9/ready", "unknown version '9'"),
        ("POST", "/v2/models/nope/infer", "unknown model 'nope'"),
        ("POST", "/v2/models/mlp/versions/9/infer", "unknown version '9'"),
        ("GET", "/v1/models/mlp", "no route"),
        ("GET", "/v2/models/mlp/whatever", "no route"),
        ("GET", "/v2/health/other", "no route"),
        ("POST", "/v2/models/mlp/versions/2/extra/infer", "no route"),
        ("POST", "/v2/models//infer", "no route"),
        ("GET", "/v2/modelsmlp", "no route"),
        ("GET", "/v2/models/mlp/versions/2/ready/infer", "no route"),
    ]
    for method, url, message in cases:
        r = await s.client.request(method, url, json=body if method == "POST" else None)
        assert r.status_code == 404, url
        assert message in r.json()["error"], url
    r = await s.client.get("/v2/models/mlp/infer")
    assert r.status_code == 405
    r = await s.client.post("/v2/health/live")
    assert r.status_code == 405


async def test_infer_json_flat_and_nested(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), model_version="2")
    x = features(3)
    want = reference(models.mlp, {"features": x})
    for data in (x.reshape(-1).tolist(), x.tolist()):
        for url in (s.infer_url(), s.infer_url("2")):
            body = {
                "id": "req-7",
                "parameters": {"custom": 1},
                "inputs": [
                    {"name": "features", "datatype": "FP32", "shape": [3, 16], "data": data}
                ],
            }
            r = await s.client.post(url, json=body)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            doc = r.json()
            assert (doc["model_name"], doc["model_version"], doc["id"]) == ("mlp", "2", "req-7")
            outs = {o["name"]: o for o in doc["outputs"]}
            assert set(outs) == {"logits", "probabilities"}
            for name, arr in want.items():
                assert outs[name]["datatype"] == "FP32"
                assert outs[name]["shape"] == [3, 8]
                np.testing.assert_allclose(
                    np.array(outs[name]["data"]).reshape(3, 8), arr, rtol=1e-6
                )


async def test_requested_outputs(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp))
    x = features(2, seed=4)
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [2, 16], "data": x.ravel().tolist()}
        ],
        "outputs": [{"name": "probabilities"}],
    }
    doc = (await s.client.post(s.infer_url(), json=body)).json()
    assert [o["name"] for o in doc["outputs"]] == ["probabilities"]
    assert "id" not in doc
    probs = np.array(doc["outputs"][0]["data"]).reshape(2, 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def split_binary(content: bytes, header_length: int) -> tuple[dict[str, Any], bytes]:
    return orjson.loads(content[:header_length]), content[header_length:]


async def test_binary_tensor_extension(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp))
    x = features(4, seed=9)
    want = reference(models.mlp, {"features": x})
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [4, 16],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [
                {"name": "logits", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": False}},
            ],
        }
    )
    r = await s.client.post(
        s.infer_url(),
        content=header + x.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    doc, blob = split_binary(r.content, length)
    logits, probs = doc["outputs"]
    assert logits["parameters"] == {"binary_data_size": 4 * 8 * 4}
    assert "data" not in logits
    assert len(blob) == 4 * 8 * 4
    np.testing.assert_allclose(np.frombuffer(blob, "<f4").reshape(4, 8), want["logits"], rtol=1e-6)
    np.testing.assert_allclose(
        np.array(probs["data"]).reshape(4, 8), want["probabilities"], rtol=1e-6
    )


async def test_binary_data_output_parameter(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp))
    x = features(1, seed=2)
    want = reference(models.mlp, {"features": x})
    body = {
        "parameters": {"binary_data_output": True},
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 16], "data": x.ravel().tolist()}
        ],
    }
    r = await s.client.post(s.infer_url(), json=body)
    assert r.status_code == 200
    doc, blob = split_binary(r.content, int(r.headers["inference-header-content-length"]))
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [32, 32]
    np.testing.assert_allclose(np.frombuffer(blob[:32], "<f4"), want["logits"].ravel(), rtol=1e-6)
    np.testing.assert_allclose(
        np.frombuffer(blob[32:], "<f4"), want["probabilities"].ravel(), rtol=1e-6
    )


async def test_fixed_batch_model(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.fixed), model_name="fixed", batch_max_size=8)
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    want = reference(models.fixed, {"x": x})["y"]
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": x.ravel().tolist()}]
    }
    doc = (await s.client.post(s.infer_url(), json=body)).json()
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(1, 4), want, rtol=1e-6)
    body["inputs"][0]["shape"] = [2, 8]
    body["inputs"][0]["data"] = [0.0] * 16
    r = await s.client.post(s.infer_url(), json=body)
    assert r.status_code == 400
    assert "does not match the model's [1, 8]" in r.json()["error"]


async def test_cnn_binary_batch(serve: ServeFactory, models: Models) -> None:
    assert 9_000_000 <= serving_param_count(models) <= 11_000_000
    s = await serve(
        model_uri=str(models.cnn), model_name="cnn", batch_max_size=4, batch_window_ms=1
    )
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = reference(models.cnn, {"image": x})["logits"]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [2, 3, 64, 64],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    r = await s.client.post(
        s.infer_url(),
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    doc, blob = split_binary(r.content, int(r.headers["inference-header-content-length"]))
    assert doc["outputs"][0]["shape"] == [2, 1000]
    np.testing.assert_allclose(
        np.frombuffer(blob, "<f4").reshape(2, 1000), want, rtol=1e-5, atol=1e-5
    )


def serving_param_count(models: Models) -> int:
    from .serving_models import parameter_count

    return parameter_count(models.cnn)


async def test_short_runs_inline_long_ones_on_a_thread(serve: ServeFactory, models: Models) -> None:
    """Where the model runs changes nothing in the answer; the collector is frozen after load."""
    import gc

    x = features(3, seed=5)
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 16], "data": x}]}
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    answers = []
    for limit_ms, inline in ((10.0, True), (0.0, False)):
        s = await serve(model_uri=str(models.mlp), inline_run_max_ms=limit_ms)
        assert s.plane._inline is inline
        r = await s.client.post(s.infer_url(), content=content)
        assert r.status_code == 200
        answers.append(r.json()["outputs"])
        labels = {"model": "mlp", "version": "1", "revision": "", "track": "stable"}
        count = "modelserver_inference_duration_seconds_count"
        assert s.registry.get_sample_value(count, labels) == 1
    assert answers[0] == answers[1]
    want = reference(models.mlp, {"features": x})["logits"]
    np.testing.assert_allclose(np.asarray(answers[0][0]["data"]).reshape(3, 8), want, rtol=1e-5)
    assert gc.get_freeze_count() > 0
