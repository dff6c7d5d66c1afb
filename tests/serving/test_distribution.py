"""Output and input counters: the binning rules, the caps, and the served series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserver.distribution import DEFAULT_EDGES, FLUSH_EVERY, Distribution, default_bins
from modelserver.reference import ProfileError, parse_profile

from .conftest import Models, ServeFactory, sha256

IDENT = ["m", "1", "r1", "stable"]


def _counts(d: Distribution) -> dict[tuple[str, ...], int]:
    out = {}
    for family in d.collect():
        for s in family.samples:
            keys = ("output", "bucket") if "output" in s.labels else ("input", "feature", "bucket")
            out[tuple(s.labels[k] for k in keys)] = int(s.value)
    return out


def _profile(doc: dict[str, object]) -> bytes:
    return json.dumps({"format": "modelrollout.io/reference-profile", "version": 1} | doc).encode()


@pytest.mark.parametrize(
    ("datatype", "shape", "kind", "buckets"),
    [
        ("FP32", (-1, 3), "classes", 4),  # 3 classes by argmax, and "other"
        ("FP32", (-1, 1), "histogram", len(DEFAULT_EDGES) + 1),
        ("FP32", (-1,), "histogram", len(DEFAULT_EDGES) + 1),
        ("FP32", (-1, 64), "histogram", len(DEFAULT_EDGES) + 1),  # too wide for classes
        ("INT64", (-1,), "classes", 32),  # values 0..30 and "other": the cap
        ("BYTES", (-1,), None, 0),  # not counted
    ],
)
def test_default_bins(
    datatype: str, shape: tuple[int, ...], kind: str | None, buckets: int
) -> None:
    chosen = default_bins({"y": (datatype, shape)})
    assert [b.kind for b in chosen] == ([kind] if kind else [])
    assert sum(len(b.labels) for b in chosen) == buckets


def test_histogram_bins_hold_values_up_to_their_edge() -> None:
    d = Distribution(IDENT, {"y": ("FP32", (-1, 1))}, {})
    d.record({}, {"y": np.array([[-5000.0], [0.0], [0.05], [0.1], [0.1001], [0.95], [5e6]])})
    c = _counts(d)
    assert c[("y", "-1000")] == 1
    assert c[("y", "0")] == 1  # 0 is in (-0.1, 0]
    assert c[("y", "0.1")] == 2  # 0.05 and 0.1 itself
    assert c[("y", "0.2")] == 1
    assert c[("y", "1")] == 1
    assert c[("y", "+Inf")] == 1
    assert sum(c.values()) == 7


def test_classes_by_argmax_and_by_value() -> None:
    d = Distribution(IDENT, {"p": ("FP32", (-1, 3)), "label": ("INT64", (-1,))}, {})
    d.record({}, {"p": np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]), "label": np.array([2, 99])})
    d.record({}, {"p": np.array([[0.0, 0.1, 0.9]]), "label": np.array([-1])})
    c = _counts(d)
    assert (c[("p", "0")], c[("p", "1")], c[("p", "2")], c[("p", "other")]) == (1, 1, 1, 0)
    assert c[("label", "2")] == 1
    assert c[("label", "other")] == 2  # 99 is over the cap, -1 is no class


def test_profile_classes_and_features() -> None:
    profile = parse_profile(
        _profile(
            {
                "outputs": [{"name": "label", "kind": "classes", "classes": [3, 7]}],
                "inputs": [
                    {
                        "name": "x",
                        "features": [
                            {"index": 2, "name": "age", "edges": [18, 65]},
                            {"index": 0, "edges": [0.5]},
                        ],
                    }
                ],
            }
        )
    )
    d = Distribution(IDENT, {"label": ("INT64", (-1,))}, {"x": ("FP32", (-1, 3))}, profile)
    x = np.array([[0.2, 0.0, 10.0], [0.9, 0.0, 18.0], [0.5, 0.0, 70.0]], dtype=np.float32)
    d.record({"x": x}, {"label": np.array([7, 3, 5])})
    c = _counts(d)
    assert (c[("label", "3")], c[("label", "7")], c[("label", "other")]) == (1, 1, 1)
    assert (c[("x", "age", "18")], c[("x", "age", "65")], c[("x", "age", "+Inf")]) == (2, 0, 1)
    assert (c[("x", "0", "0.5")], c[("x", "0", "+Inf")]) == (2, 1)


def test_profile_must_fit_the_model() -> None:
    profile = parse_profile(
        _profile({"outputs": [{"name": "nope", "kind": "histogram", "edges": [0]}]})
    )
    with pytest.raises(ProfileError, match="no output 'nope'"):
        Distribution(IDENT, {"y": ("FP32", (-1,))}, {}, profile)
    profile = parse_profile(
        _profile({"inputs": [{"name": "x", "features": [{"index": 5, "edges": [0]}]}]})
    )
    with pytest.raises(ProfileError, match="out of range"):
        Distribution(IDENT, {"y": ("FP32", (-1,))}, {"x": ("FP32", (-1, 3))}, profile)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "other"}, "format must be"),
        ({"version": 2}, "version 2 is not supported"),
        ({"outputs": [{"name": "y", "kind": "histogram", "edges": [1, 0]}]}, "strictly increasing"),
        ({"outputs": [{"name": "y", "kind": "histogram", "edges": list(range(40))}]}, "1 to 31"),
        ({"outputs": [{"name": "y", "kind": "histogram", "edges": [1, 1.0000001]}]}, "too close"),
        (
            {"outputs": [{"name": "y", "kind": "histogram", "edges": [0], "frequencies": [1]}]},
            "2 non",
        ),
        ({"outputs": [{"name": "y", "kind": "classes", "classes": [1, 1]}]}, "distinct"),
        ({"outputs": [{"name": "y", "kind": "median"}]}, "kind must be"),
        (
            {"outputs": [{"name": f"y{i}", "kind": "classes", "classes": [0]} for i in range(9)]},
            "9 outputs",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "features": [{"index": i, "edges": [0]} for i in range(17)]}
                ]
            },
            "17 features",
        ),
        ({"outputs": [{"name": "y", "kind": "classes", "classes": [0]}] * 2}, "appears twice"),
    ],
)
def test_profile_errors_name_the_field(doc: dict[str, object], message: str) -> None:
    raw = json.dumps({"format": "modelrollout.io/reference-profile", "version": 1} | doc).encode()
    with pytest.raises(ProfileError, match=message):
        parse_profile(raw)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (
            s.name,
            tuple(
                sorted(
                    (k, v)
                    for k, v in s.labels.items()
                    if k in ("output", "feature", "bucket", "track")
                )
            ),
        ): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 16], "data": [0.1] * 32}]}


@pytest.mark.parametrize("batch", [1, 4])
async def test_served_counters(serve: ServeFactory, models: Models, batch: int) -> None:
    s = await serve(
        model_uri=str(models.mlp), metrics_port=0, batch_max_size=batch, batch_window_ms=0
    )
    for _ in range(3):
        assert (await s.client.post(s.infer_url(), json=BODY)).status_code == 200
    text = (await s.client.get("/metrics")).text
    counts = [
        v
        for (name, labels), v in _samples(text).items()
        if name == "modelserver_output_bucket_total" and ("output", "probabilities") in labels
    ]
    assert len(counts) == 9  # 8 classes and "other"
    assert sum(counts) == 6  # 3 requests of 2 rows
    assert "modelserver_input_bucket_total" not in text  # no profile, no input bins


async def test_served_with_a_reference_profile(
    serve: ServeFactory, models: Models, tmp_path: Path
) -> None:
    ref = tmp_path / "profile.json"
    ref.write_bytes(
        _profile(
            {
                "inputs": [
                    {
                        "name": "features",
                        "features": [{"index": 0, "name": "f0", "edges": [0, 0.5]}],
                    }
                ]
            }
        )
    )
    s = await serve(
        model_uri=str(models.mlp),
        metrics_port=0,
        reference_uri=str(ref),
        reference_sha256=sha256(ref),
    )
    assert (await s.client.post(s.infer_url(), json=BODY)).status_code == 200
    samples = _samples((await s.client.get("/metrics")).text)
    key = (
        "modelserver_input_bucket_total",
        (("bucket", "0.5"), ("feature", "f0"), ("track", "stable")),
    )
    assert samples[key] == 2


async def test_a_bad_profile_fails_readiness(
    serve: ServeFactory, models: Models, tmp_path: Path
) -> None:
    ref = tmp_path / "profile.json"
    ref.write_bytes(_profile({"outputs": [{"name": "missing", "kind": "classes", "classes": [0]}]}))
    s = await serve(model_uri=str(models.mlp), reference_uri=str(ref))
    r = await s.client.get("/v2/health/ready")
    assert r.status_code == 503
    assert "reference profile: the model has no output 'missing'" in s.plane.not_ready_reason
    s2 = await serve(model_uri=str(models.mlp), reference_uri=str(ref), reference_sha256="0" * 64)
    assert "reference profile: sha256 mismatch" in s2.plane.not_ready_reason


def test_held_requests_are_binned_together_whatever_their_shapes() -> None:
    d = Distribution(IDENT, {"p": ("FP32", (-1, 3)), "y": ("FP32", (-1,))}, {})
    n = FLUSH_EVERY + 8  # past one flush
    for i in range(n):
        d.record({}, {"p": np.eye(3)[i % 3 : i % 3 + 1], "y": np.full(i % 2 + 1, 0.5)})
    d.record({}, {"p": np.array([[0.0, 1.0]]), "y": np.array([0.05])})  # another width
    assert len(d._pending) == 9  # held until the next flush or scrape
    c = _counts(d)
    classes = [sum(1 for i in range(n) if i % 3 == k) for k in range(3)]
    classes[1] += 1  # the last is a "1"
    assert [c[("p", "0")], c[("p", "1")], c[("p", "2")]] == classes
    assert (c[("y", "0.5")], c[("y", "0.1")]) == (sum(i % 2 + 1 for i in range(n)), 1)
    big = np.zeros((1 << 15,))
    d.record({}, {"p": np.array([[1.0, 0.0]]), "y": big})
    assert not d._pending  # a large output is binned at once


def test_a_large_profiled_input_is_binned_at_once() -> None:
    profile = parse_profile(
        _profile({"inputs": [{"name": "x", "features": [{"index": 0, "edges": [0]}]}]})
    )
    d = Distribution(IDENT, {"y": ("FP32", (-1,))}, {"x": ("FP32", (-1, 2))}, profile)
    d.record({"x": np.ones((4, 2))}, {"y": np.ones(4)})
    assert len(d._pending) == 1
    d.record({"x": np.ones((1 << 14, 2))}, {"y": np.ones(1)})
    assert not d._pending
    assert _counts(d)[("x", "0", "+Inf")] == 4 + (1 << 14)
