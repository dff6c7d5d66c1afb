"""Fuzzing the real process with OIP v2 requests, JSON and binary, valid and not.

Nothing a client sends may be answered >= 500 (the canary analysis rolls back on 5xx), crash
the process or grow its memory without bound; valid requests are still answered correctly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Models
from .server_process import ServerProcess, running_server

DATATYPES = ["FP32", "FP16", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "BF16", "fp32"]
NAMES = ["features", "value", "logits", "", "x" * 300]
SEEN: Counter[int] = Counter()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON via orjson carries
    | st.floats(allow_nan=False, width=64)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=30,
)
dims = st.integers(min_value=-2, max_value=40) | st.sampled_from([0, 16, 2**31, 2**62])
shapes = st.lists(dims, max_size=4) | json_values
numbers = st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-300, 300)
data = (
    st.lists(numbers, max_size=64)
    | st.lists(st.lists(numbers, max_size=17), max_size=4)
    | st.lists(st.text(max_size=5), max_size=8)
    | json_values
)
parameters = st.none() | st.fixed_dictionaries(
    {}, optional={"binary_data_size": st.integers(-5, 200) | json_values}
)
tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(NAMES) | json_values,
        "datatype": st.sampled_from(DATATYPES) | json_values,
        "shape": shapes,
        "data": data,
        "parameters": parameters,
    },
)
outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["logits", "probabilities", "nope"]) | json_values},
        optional={"parameters": st.fixed_dictionaries({"binary_data": json_values})},
    ),
    max_size=3,
)
request_docs = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3) | json_values},
    optional={
        "id": json_values,
        "outputs": outputs | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_output": st.booleans() | json_values}
        ),
    },
)


rows = st.integers(min_value=1, max_value=4)
floats32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    n = draw(rows)
    x = np.asarray(draw(st.lists(floats32, min_size=n * 16, max_size=n * 16)), dtype=np.float32)
    doc: dict[str, Any] = {
        "id": draw(st.text(max_size=8)),
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [n, 16], "data": x.tolist()}],
    }
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": True}
    return doc, x.reshape(n, 16)


FIELDS = ["name", "datatype", "shape", "data", "parameters"]


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with running_server(models.mlp, tmp, max_body_bytes=str(1 << 20)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=10) as c:
        yield c


def _post(client: httpx.Client, content: bytes, headers: dict[str, str] | None = None) -> None:
    r = client.post("/v2/models/mlp/infer", content=content, headers=headers)
    SEEN[r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text, content[:500])
    if r.status_code != 200:  # a 200 may be binary
        assert "error" in r.json()


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@FUZZ
@given(doc=request_docs)
def test_json_requests(client: httpx.Client, doc: dict[str, Any]) -> None:
    _post(client, orjson.dumps(doc, option=orjson.OPT_PASSTHROUGH_SUBCLASS))


@FUZZ
@given(doc=request_docs, payload=st.binary(max_size=300), cut=st.integers(-3, 400))
def test_binary_requests(
    client: httpx.Client, doc: dict[str, Any], payload: bytes, cut: int
) -> None:
    header = orjson.dumps(doc)
    length = len(header) if cut >= 100 else cut  # mostly honest header lengths, sometimes not
    _post(client, header + payload, {"Inference-Header-Content-Length": str(length)})


@FUZZ
@given(request=valid_requests(), field=st.sampled_from(FIELDS), value=json_values | dims)
def test_valid_and_mutated(
    client: httpx.Client,
    request: tuple[dict[str, Any], np.ndarray[Any, Any]],
    field: str,
    value: Any,
) -> None:
    doc, x = request
    r = client.post("/v2/models/mlp/infer", content=orjson.dumps(doc))
    SEEN[r.status_code] += 1
    assert r.status_code == 200, r.text
    length = r.headers.get("inference-header-content-length")
    header = orjson.loads(r.content[: int(length)] if length else r.content)
    assert header["id"] == doc["id"]
    assert [o["shape"] for o in header["outputs"]] == [[x.shape[0], 8]] * 2
    doc["inputs"][0][field] = value  # one field broken: refused, never a server error
    _post(client, orjson.dumps(doc))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(raw=st.binary(max_size=200), header=st.from_regex(r"[!-~]{0,6}", fullmatch=True))
def test_raw_bodies(client: httpx.Client, raw: bytes, header: str) -> None:
    headers = {"Inference-Header-Content-Length": header} if header else None
    _post(client, raw, headers)


def test_after_fuzzing(server: ServerProcess, client: httpx.Client, models: Models) -> None:
    """Run last (file order): alive, memory bounded, correct answers, no 5xx counted."""
    total = sum(SEEN.values())
    rss = server.rss_bytes()
    print(f"fuzz: {total} requests, by status {dict(sorted(SEEN.items()))}, RSS {rss >> 20} MiB")
    assert total >= 1200
    assert server.proc.poll() is None
    assert rss < 400 * 2**20
    x = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 16], "data": x}]}
    r = client.post(
        "/v2/models/mlp/infer", content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    )
    assert r.status_code == 200
    session = ort.InferenceSession(str(models.mlp), providers=["CPUExecutionProvider"])
    want = session.run(["logits"], {"features": x})[0]
    got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    scraped = httpx.get(f"{server.metrics}/metrics", timeout=5).text
    assert 'code="5' not in scraped
    assert "ERROR" not in server.log()
