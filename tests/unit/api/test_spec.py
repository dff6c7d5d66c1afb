"""Spec validation in the operator (admission refuses the same specs: see the integration tests)."""

from typing import Any

import pytest
from pydantic import ValidationError

from modelrollout.api.spec import GatewayAPIRouter, ModelDeploymentSpec, ReplicaRatioRouter
from modelrollout.api.types import parse_duration

SHA = "a" * 64
SECRET_REF = {"name": "store-creds", "key": "token"}


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"uri": "file:///models/m.onnx", "version": "v1"}}
    base.update(overrides)
    return base


def test_minimal_spec_gets_defaults() -> None:
    parsed = ModelDeploymentSpec.model_validate(spec())
    assert parsed.serving.port == 8080
    assert parsed.autoscaling.min_replicas == 1
    assert parsed.hardware.mode == "auto"
    assert isinstance(parsed.rollout.traffic_router, ReplicaRatioRouter)
    weights = [s.set_weight for s in parsed.rollout.steps if s.set_weight is not None]
    assert weights == [10, 25, 50]


def test_camel_case_round_trip() -> None:
    parsed = ModelDeploymentSpec.model_validate(
        spec(
            autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetRequestsPerSecond": 20},
            rollout={"trafficRouter": {"type": "gatewayAPI", "httpRoute": "web"}},
        )
    )
    assert parsed.autoscaling.target_requests_per_second == 20
    assert isinstance(parsed.rollout.traffic_router, GatewayAPIRouter)
    assert parsed.wire()["autoscaling"]["minReplicas"] == 2


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"model": {"uri": "ftp://x/m.onnx", "version": "v1"}}, "spec.model.uri"),
        ({"model": {"uri": "/m.onnx", "version": "v1", "sha256": "abc"}}, "sha256"),
        ({"model": {"uri": "/m.onnx", "version": "v1", "sha256": SHA.upper()}}, "sha256"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
        ({"hardware": {"mode": "tpu"}}, "mode"),
        ({"serving": {"port": 70000}}, "port"),
        (
            {"serving": {"resources": {"requests": {"memory": "1e999999999"}}}},
            "exponent beyond 64",
        ),
        ({"serving": {"port": 9090}}, "metricsPort"),
        (
            {"rollout": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}},
            "setWeight values must be ascending",
        ),
        ({"rollout": {"steps": [{"setWeight": 50, "pause": {}}]}}, "exactly one"),
        (
            {"rollout": {"steps": [{"shadow": {"duration": "1m"}, "pause": {}}]}},
            "exactly one of setWeight, pause, analysis or shadow",
        ),
        ({"rollout": {"steps": [{"shadow": {}}]}}, "duration"),
        (
            {"rollout": {"steps": [{"shadow": {"duration": "1m"}}]}},
            "a shadow step needs a router that can mirror",
        ),
        ({"rollout": {"trafficRouter": {"type": "linkerd"}}}, "linkerd"),
        ({"rollout": {"analysis": {"interval": "ten seconds"}}}, "interval"),
        ({"unknownField": 1}, "unknownField"),
        (
            {"model": {"uri": "https://alice:hunter2@models.example/m.onnx", "version": "v1"}},
            "must not carry credentials",
        ),
        (
            {
                "serving": {
                    "env": [{"name": "T", "value": "x", "valueFrom": {"secretKeyRef": SECRET_REF}}]
                }
            },
            "give value or valueFrom, not both",
        ),
        (
            {
                "serving": {
                    "env": [
                        {
                            "name": "T",
                            "valueFrom": {
                                "secretKeyRef": SECRET_REF,
                                "configMapKeyRef": SECRET_REF,
                            },
                        }
                    ]
                }
            },
            "exactly one of secretKeyRef and configMapKeyRef",
        ),
        ({"serving": {"auth": {"tokenSecret": {"name": "Bad_Name", "key": "t"}}}}, "name"),
        (
            {"model": {"uri": "/m.onnx", "version": "v1", "reference": {"uri": "/p.json"}}},
            "reference.sha256",
        ),
        (
            {
                "model": {
                    "uri": "/m.onnx",
                    "version": "v1",
                    "reference": {"uri": "ftp://x/p.json", "sha256": SHA},
                }
            },
            "spec.model.reference.uri must be an absolute path",
        ),
        (
            {
                "model": {
                    "uri": "/m.onnx",
                    "version": "v1",
                    "reference": {"uri": "https://a:b@x/p.json", "sha256": SHA},
                }
            },
            "spec.model.reference.uri must not carry credentials",
        ),
    ],
)
def test_invalid_specs_name_the_field(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelDeploymentSpec.model_validate(spec(**overrides))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "5 m", "-1s", "1d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
