"""Pod settings merged into the generated pod template: the operator's fields win."""

from typing import Any

import pytest

from modelrollout.api.pod import PodSettings
from modelrollout.plan.pod import HOSTNAME, ZONE, default_spread, merge_pod_settings

SELECTOR = {"modelrollout.io/deployment": "m", "modelrollout.io/revision": "r1"}


def template() -> dict[str, Any]:
    return {
        "metadata": {
            "labels": dict(SELECTOR) | {"app.kubernetes.io/name": "modelserver"},
            "annotations": {"prometheus.io/port": "9090"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "modelserver",
                    "env": [{"name": "MODELSERVER_MODEL_URI", "value": "file:///m.onnx"}],
                    "envFrom": [{"secretRef": {"name": "store"}}],
                    "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                }
            ],
            "volumes": [{"name": "models", "emptyDir": {}}],
        },
    }


def merged(**settings: Any) -> dict[str, Any]:
    return merge_pod_settings(template(), PodSettings.model_validate(settings), SELECTOR)


def test_no_settings_only_adds_the_default_spread() -> None:
    out = merged()
    assert out["metadata"] == template()["metadata"]
    expected = template()["spec"] | {"topologySpreadConstraints": default_spread(SELECTOR)}
    assert out["spec"] == expected
    keys = [c["topologyKey"] for c in out["spec"]["topologySpreadConstraints"]]
    assert keys == [HOSTNAME, ZONE]
    assert {c["whenUnsatisfiable"] for c in out["spec"]["topologySpreadConstraints"]} == {
        "ScheduleAnyway"
    }


@pytest.mark.parametrize(
    ("settings", "path", "value"),
    [
        ({"serviceAccountName": "reader"}, ("spec", "serviceAccountName"), "reader"),
        ({"automountServiceAccountToken": True}, ("spec", "automountServiceAccountToken"), True),
        ({"imagePullSecrets": [{"name": "reg"}]}, ("spec", "imagePullSecrets"), [{"name": "reg"}]),
        ({"priorityClassName": "high"}, ("spec", "priorityClassName"), "high"),
        (
            {"affinity": {"podAntiAffinity": {"x": 1}}},
            ("spec", "affinity"),
            {"podAntiAffinity": {"x": 1}},
        ),
        ({"topologySpreadConstraints": []}, ("spec", "topologySpreadConstraints"), None),
        (
            {"labels": {"team": "fraud"}},
            ("metadata", "labels"),
            SELECTOR | {"app.kubernetes.io/name": "modelserver", "team": "fraud"},
        ),
        (
            {"annotations": {"a": "b"}},
            ("metadata", "annotations"),
            {"a": "b", "prometheus.io/port": "9090"},
        ),
        (
            {"envFrom": [{"configMapRef": {"name": "tuning"}}]},
            ("spec", "containers", 0, "envFrom"),
            [{"secretRef": {"name": "store"}}, {"configMapRef": {"name": "tuning"}}],
        ),
        (
            {
                "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            },
            ("spec", "containers", 0, "volumeMounts"),
            [
                {"name": "models", "mountPath": "/models"},
                {"name": "cache", "mountPath": "/cache", "readOnly": True},
            ],
        ),
        (
            {"volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}]},
            ("spec", "volumes"),
            [
                {"name": "models", "emptyDir": {}},
                {"name": "cache", "persistentVolumeClaim": {"claimName": "c"}},
            ],
        ),
    ],
)
def test_settings_land_where_kubernetes_reads_them(
    settings: dict[str, Any], path: tuple[Any, ...], value: Any
) -> None:
    node: Any = merged(**settings)
    for key in path[:-1]:
        node = node[key]
    assert node.get(path[-1]) == value


def test_the_operators_labels_and_env_win() -> None:
    # Admission refuses these; an object stored before a rule existed still cannot move a pod
    # out of its revision's selector.
    settings = PodSettings.model_construct(labels={"modelrollout.io/revision": "other"})
    out = merge_pod_settings(template(), settings, SELECTOR)
    assert out["metadata"]["labels"]["modelrollout.io/revision"] == "r1"
    assert out["spec"]["containers"][0]["env"] == template()["spec"]["containers"][0]["env"]


def test_a_spread_constraint_without_selector_gets_the_revisions() -> None:
    out = merged(
        topologySpreadConstraints=[
            {"maxSkew": 2, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule"}
        ]
    )
    (c,) = out["spec"]["topologySpreadConstraints"]
    assert c["labelSelector"] == {"matchLabels": SELECTOR}
    assert c["maxSkew"] == 2
