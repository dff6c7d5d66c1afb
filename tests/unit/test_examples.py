"""Every ModelDeployment in examples/ is valid, and the routes next to them are ones the
operator can steer (checked with the routers' own pure functions)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api import API_VERSION, KIND
from modelrollout.api.spec import GatewayAPIRouter, IstioRouter, ModelDeploymentSpec
from modelrollout.api.types import NAME_PATTERN
from modelrollout.routers import gateway_api, istio
from modelrollout.routers.base import RouteTarget

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))


class KubernetesLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: an unquoted `2026-11-01` stays a string (Go's YAML library keeps
    timestamps as strings when it decodes into untyped values), not a date."""


KubernetesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(path.read_text(), Loader=KubernetesLoader) if d is not None]


def deployments(path: Path) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d.get("kind") == KIND]


def test_there_are_examples() -> None:
    names = {p.name for p in FILES}
    assert {"quickstart.yaml", "gateway-canary.yaml", "gpu-transformer.yaml"} <= names
    assert "manual-approval.yaml" in names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_document_is_a_named_object(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc
    assert deployments(path), f"{path.name} has no {KIND}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_model_deployments_validate(path: Path) -> None:
    for doc in deployments(path):
        assert doc["apiVersion"] == API_VERSION
        name = doc["metadata"]["name"]
        assert re.fullmatch(NAME_PATTERN, name), name
        # Child names are "<name>-<10-char revision>" and must stay a valid 63-char label.
        assert len(name) <= 63 - 11, name
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, "status does not belong"
        ModelDeploymentSpec.model_validate(doc["spec"])


def _target(doc: dict[str, Any], route: str) -> RouteTarget:
    spec = ModelDeploymentSpec.model_validate(doc["spec"])
    name = doc["metadata"]["name"]
    return RouteTarget(
        namespace=doc["metadata"].get("namespace", "default"),
        route_name=route,
        stable_service=f"{name}-stable",
        canary_service=f"{name}-canary",
        port=spec.serving.port,
    )


def _routed() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in FILES
        for doc in deployments(path)
        if doc["spec"].get("rollout", {}).get("trafficRouter", {}).get("type")
        in ("gatewayAPI", "istio")
    ]


def test_both_routers_have_an_example() -> None:
    types = {doc["spec"]["rollout"]["trafficRouter"]["type"] for _, doc in _routed()}
    assert types == {"gatewayAPI", "istio"}


@pytest.mark.parametrize(
    ("path", "doc"), _routed(), ids=[f"{p.name}:{d['metadata']['name']}" for p, d in _routed()]
)
def test_routes_ship_with_their_deployment_and_can_be_steered(
    path: Path, doc: dict[str, Any]
) -> None:
    router = ModelDeploymentSpec.model_validate(doc["spec"]).rollout.traffic_router
    if isinstance(router, GatewayAPIRouter):
        kind, route_name = "HTTPRoute", router.http_route
        with_weight, read_weight = gateway_api.with_weight, gateway_api.read_weight
    else:
        assert isinstance(router, IstioRouter)
        kind, route_name = "VirtualService", router.virtual_service
        with_weight, read_weight = istio.with_weight, istio.read_weight
    (route,) = [
        d for d in documents(path) if d["kind"] == kind and d["metadata"]["name"] == route_name
    ]
    assert route["metadata"].get("namespace") == doc["metadata"].get("namespace")
    target = _target(doc, route_name)
    # As written, the route already points at both track Services: nothing for the operator to
    # take over, and it reads as 0% on the canary.
    assert read_weight(route["spec"], target) == 0
    assert not with_weight(route["spec"], target, 0).changed
    for weight in (1, 50, 100):
        update = with_weight(route["spec"], target, weight)
        assert read_weight(update.spec, target) == weight


def test_dates_stay_strings_as_in_kubectl() -> None:
    (doc, *_) = yaml.load_all("version: 2026-11-01\n", Loader=KubernetesLoader)
    assert doc == {"version": "2026-11-01"}


def test_pause_until_resumed_example() -> None:
    (doc,) = deployments(EXAMPLES / "manual-approval.yaml")
    steps = ModelDeploymentSpec.model_validate(doc["spec"]).rollout.steps
    assert any(s.pause is not None and s.pause.duration is None for s in steps)


def test_gpu_example_asks_for_a_gpu() -> None:
    (doc,) = deployments(EXAMPLES / "gpu-transformer.yaml")
    spec = ModelDeploymentSpec.model_validate(doc["spec"])
    assert spec.hardware.mode == "gpu"
    assert spec.serving.resources is not None
    assert (spec.serving.resources.limits or {}).get("nvidia.com/gpu") == "1"
