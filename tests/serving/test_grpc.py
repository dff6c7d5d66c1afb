"""OIP v2 conformance over gRPC and REST, with Triton's clients against the real server process.

tritonclient is an independent implementation of the protocol: its gRPC client sends inputs as
``raw_input_contents``, its HTTP client the binary tensor extension. Typed ``contents`` go
through tritonclient's own generated messages (the same wire format). This module must not
import modelserver's generated messages: both define ``inference.*`` in protobuf's one pool.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.grpc.aio as tgrpc_aio
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .conftest import Models
from .server_process import ServerProcess, running_server, until

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("grpc")
    token = root / "token"
    token.write_text(TOKEN)
    limits = {"max_body_bytes": "200000", "max_request_memory_bytes": "100000"}
    with running_server(models.mlp, root, grpc=True, token_file=str(token), **limits) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Any]:
    c = tgrpc.InferenceServerClient(server.grpc_target)
    yield c
    c.close()


def _expected(model: Path, x: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return list(session.run(["logits", "probabilities"], {"features": x}))


def _features(rows: int = 3) -> np.ndarray[Any, Any]:
    return np.random.default_rng(7).standard_normal((rows, 16)).astype(np.float32)


def _grpc_input(x: np.ndarray[Any, Any], name: str = "features", datatype: str = "FP32") -> Any:
    tensor = tgrpc.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp", headers=AUTH)
    assert client.is_model_ready("mlp", "1", headers=AUTH)
    meta = client.get_server_metadata(headers=AUTH, as_json=True)
    assert meta["name"] == "modelserver"
    model = client.get_model_metadata("mlp", headers=AUTH, as_json=True)
    assert model["versions"] == ["1"]
    assert model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert [o["name"] for o in model["outputs"]] == ["logits", "probabilities"]


def test_infer_raw_over_grpc(client: Any, models: Models) -> None:
    x = _features()
    result = client.infer(
        "mlp",
        [_grpc_input(x)],
        outputs=[tgrpc.InferRequestedOutput("probabilities")],
        request_id="req-1",
        headers=AUTH,
    )
    response = result.get_response()
    assert response.id == "req-1"
    assert response.model_name == "mlp"
    assert len(response.raw_output_contents) == 1  # raw in, raw out
    assert [o.name for o in response.outputs] == ["probabilities"]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), _expected(models.mlp, x)[1], rtol=1e-5
    )


def test_infer_typed_contents(server: ServerProcess, models: Models) -> None:
    x = _features(2)
    request = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 16])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=list(AUTH.items()), timeout=10)
    assert not response.raw_output_contents  # typed in, typed out
    by_name = {o.name: o for o in response.outputs}
    assert list(by_name["logits"].shape) == [2, 8]
    logits = np.array(by_name["logits"].contents.fp32_contents, dtype=np.float32).reshape(2, 8)
    np.testing.assert_allclose(logits, _expected(models.mlp, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_infer_over_http_binary_and_json(
    server: ServerProcess, models: Models, binary: bool
) -> None:
    x = _features()
    c = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = thttp.InferInput("features", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [thttp.InferRequestedOutput("logits", binary_data=binary)]
        # A copy: tritonclient adds Inference-Header-Content-Length to the dict it is given.
        result = c.infer("mlp", [tensor], outputs=outputs, headers=dict(AUTH))
        assert c.is_server_ready()
    finally:
        c.close()
    np.testing.assert_allclose(
        result.as_numpy("logits"), _expected(models.mlp, x)[0], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        (_grpc_input(np.zeros((2, 5), np.float32)), "input 'features': shape [2, 5]"),
        (_grpc_input(np.zeros((2, 16), np.float64), datatype="FP64"), "input 'features'"),
        (_grpc_input(np.zeros((1, 16), np.float32), name="nope"), "unknown input 'nope'"),
    ],
)
def test_bad_input_is_invalid_argument(client: Any, tensor: Any, says: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp", [tensor], headers=AUTH)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert says in caught.value.message()


def test_limits_are_resource_exhausted(client: Any) -> None:
    over_budget = _grpc_input(np.zeros((2000, 16), np.float32))  # 128 kB decoded, budget 100 kB
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp", [over_budget], headers=AUTH)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "input 'features': shape [2000, 16]" in caught.value.message()
    too_big = _grpc_input(np.zeros((4000, 16), np.float32))  # 256 kB message, limit 200 kB
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp", [too_big], headers=AUTH)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_typed_contents_in_the_wrong_field(server: ServerProcess) -> None:
    request = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 16])
    tensor.contents.int_contents.extend([1] * 16)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=list(AUTH.items()), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'features': FP32 data goes in fp32_contents" in str(caught.value.details())


def test_auth_and_unknown_model(client: Any) -> None:
    x = _features(1)
    for headers in (None, {"authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as caught:
            client.infer("mlp", [_grpc_input(x)], headers=headers)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("mlp", headers=None)
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as caught:
        client.infer("other", [_grpc_input(x)], headers=AUTH)
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model 'other'" in caught.value.message()


def test_metrics_by_protocol(client: Any, server: ServerProcess) -> None:
    # Both outcomes from this test itself, so it holds when run alone.
    client.infer("mlp", [_grpc_input(_features(1))], headers=AUTH)
    with pytest.raises(InferenceServerException):
        client.infer("mlp", [_grpc_input(np.zeros((1, 5), np.float32))], headers=AUTH)
    text = httpx.get(f"{server.metrics}/metrics", timeout=5).text
    assert 'modelserver_grpc_requests_total{code="OK"' in text
    assert 'modelserver_grpc_requests_total{code="INVALID_ARGUMENT"' in text
    assert "modelserver_grpc_request_duration_seconds_count" in text


async def test_cap_and_drain_on_sigterm(models: Models, tmp_path: Path) -> None:
    with running_server(
        models.mlp,
        tmp_path,
        grpc=True,
        fault_latency_ms="1000",  # keeps requests in flight across the SIGTERM
        max_inflight_requests="3",
        # The only step bound by time: seeing the server not ready after SIGTERM.
        drain_delay_s="3",
        drain_timeout_s="60",
    ) as server:
        client = tgrpc_aio.InferenceServerClient(server.grpc_target)

        def draining() -> bool:
            probe = tgrpc.InferenceServerClient(server.grpc_target)
            try:
                return not probe.is_server_ready()  # draining: not ready, still serving
            finally:
                probe.close()

        try:
            x = _features(1)
            calls = [asyncio.create_task(client.infer("mlp", [_grpc_input(x)])) for _ in range(3)]
            await until(lambda: server.inflight() == 3, "three calls in flight")
            with pytest.raises(InferenceServerException) as caught:
                await client.infer("mlp", [_grpc_input(x)])
            assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            server.proc.send_signal(signal.SIGTERM)
            await until(draining, "readiness to fail")
            results = await asyncio.gather(*calls)
            assert all(r.as_numpy("logits").shape == (1, 8) for r in results)
        finally:
            await client.close()
        assert await asyncio.to_thread(server.proc.wait, 60) == 0
        assert "gRPC (OIP v2) listening" in server.log()


def _typed_call(server: ServerProcess, datatype: str, shape: list[int], **contents: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="value", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(request, timeout=10)


def test_bytes_raw_and_typed(models: Models, tmp_path: Path) -> None:
    words = np.array([["héllo", ""], ["a", "longer string"]], dtype=object)
    with running_server(models.identity["BYTES"], tmp_path, grpc=True) as server:
        c = tgrpc.InferenceServerClient(server.grpc_target)
        try:
            tensor = tgrpc.InferInput("value", [2, 2], "BYTES")
            tensor.set_data_from_numpy(words)
            echoed = c.infer("mlp", [tensor]).as_numpy("echo")
        finally:
            c.close()
        assert [[x.decode() for x in row] for row in echoed] == words.tolist()
        flat = [w.encode() for w in words.flat]
        response = _typed_call(server, "BYTES", [2, 2], bytes_contents=flat)
        assert list(response.outputs[0].contents.bytes_contents) == flat


def test_int8_typed_range(models: Models, tmp_path: Path) -> None:
    with running_server(models.identity["INT8"], tmp_path, grpc=True) as server:
        response = _typed_call(server, "INT8", [1, 3], int_contents=[-128, 0, 127])
        assert list(response.outputs[0].contents.int_contents) == [-128, 0, 127]
        with pytest.raises(grpc.RpcError) as caught:
            _typed_call(server, "INT8", [1, 3], int_contents=[1, 2, 300])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'value': values out of range for INT8" in str(caught.value.details())
