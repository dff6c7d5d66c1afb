"""Chaos runs on the real node: the ModelDeployment moved onto it, and the traffic checks read
from the answers alone (through kube-proxy no answer names its pod)."""

from __future__ import annotations

from pathlib import Path

from bench.chaos.env import RealNodeParts
from bench.chaos.onnode import failed_answers, place
from bench.rig import model_deployment
from hack.loadgen import Answer


def answer(code: int) -> Answer:
    return Answer(0.0, 0.1, "", "-", code)


def test_no_answer_and_proxy_errors_are_unserved_the_bad_canarys_500s_are_not_counted() -> None:
    answers = [answer(c) for c in (200, 200, 0, 502, 503, 504, 500, 404)]
    assert failed_answers(answers, bad_canary=False) == (4, 2)
    assert failed_answers(answers, bad_canary=True) == (4, 1)
    assert failed_answers([answer(200)] * 5, bad_canary=False) == (0, 0)


def test_placed_on_the_real_node_routed_by_replica_ratio() -> None:
    class FakeRig:
        model_uri = "file:///work/models/small.onnx"
        model_sha256 = "ab" * 32

    manifest = model_deployment(
        FakeRig(),  # type: ignore[arg-type]
        "ns",
        "v2",
        env={"MODELSERVER_FAULT_ERROR_RATIO": "0.3"},
        replicas=(1, 1),
        weights=(20, 50),
        analysis={"interval": "1s", "prometheusUrl": "http://127.0.0.1:1"},
        bake_s=3,
    )
    real = RealNodeParts(
        "localhost/modelrollout/modelserver:x", "http://10.0.0.1:9/small.onnx", "http://127.0.0.1:2"
    )
    spec = place(manifest, real)["spec"]
    assert spec["model"]["uri"] == real.model_uri
    assert spec["serving"]["image"] == real.image
    assert spec["serving"]["env"] == [{"name": "MODELSERVER_FAULT_ERROR_RATIO", "value": "0.3"}]
    assert spec["hardware"]["nodeSelector"] == {"modelrollout.io/node": "real"}
    assert "trafficRouter" not in spec["rollout"]
    assert spec["rollout"]["analysis"]["prometheusUrl"] == real.prometheus_url
    assert Path(spec["model"]["uri"]).name == "small.onnx"
