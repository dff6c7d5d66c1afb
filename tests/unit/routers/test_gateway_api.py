"""HTTPRoute steering as pure functions: which rules change, what stays the user's, and the
weight read back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelrollout.routers.base import RouterError, RouteTarget
from modelrollout.routers.gateway_api import read_mirror, read_weight, with_weight

T = RouteTarget("ml", "iris", "iris-stable", "iris-canary", 8080)


def ref(name: str, weight: int | None = None, port: int = 8080, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": port, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def ours(canary: int) -> list[dict[str, Any]]:
    return [ref("iris-stable", 100 - canary), ref("iris-canary", canary)]


V2 = [{"path": {"type": "PathPrefix", "value": "/v2"}}]
DOCS = {"matches": [{"path": {"value": "/docs"}}], "backendRefs": [ref("docs", port=80)]}
PARENTS = {"parentRefs": [{"name": "public"}], "hostnames": ["iris.example.com"]}


@pytest.mark.parametrize(
    ("rules", "weight", "expected"),
    [
        pytest.param(
            [{"matches": V2, "backendRefs": [ref("iris-stable")]}],
            10,
            [{"matches": V2, "backendRefs": ours(10)}],
            id="stable-only-rule-gains-the-canary",
        ),
        pytest.param(
            [DOCS, {"matches": V2, "backendRefs": [ref("iris-stable")]}],
            25,
            [DOCS, {"matches": V2, "backendRefs": ours(25)}],
            id="unrelated-rule-untouched",
        ),
        pytest.param(
            [{"matches": V2, "backendRefs": ours(10)}, {"backendRefs": [ref("iris-canary", 3)]}],
            50,
            [
                {"matches": V2, "backendRefs": ours(50)},
                {"backendRefs": [ref("iris-canary", 50), ref("iris-stable", 50)]},
            ],
            id="every-rule-naming-ours-is-steered",
        ),
        pytest.param(
            [{"matches": V2, "backendRefs": [ref("placeholder")]}, DOCS],
            10,
            [{"matches": V2, "backendRefs": ours(10)}, DOCS],
            id="no-reference-first-rule-replaced",
        ),
        pytest.param(
            [{"matches": V2}],
            10,
            [{"matches": V2, "backendRefs": ours(10)}],
            id="first-rule-without-backends",
        ),
        pytest.param([], 30, [{"backendRefs": ours(30)}], id="no-rules-one-rule-created"),
        pytest.param(
            [{"backendRefs": ours(10)}], 0, [{"backendRefs": ours(0)}], id="zero-keeps-canary"
        ),
        pytest.param(
            [{"backendRefs": ours(90)}], 100, [{"backendRefs": ours(100)}], id="100-keeps-stable"
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-canary", 10), ref("iris-stable", 90)]}],
            40,
            [{"backendRefs": [ref("iris-canary", 40), ref("iris-stable", 60)]}],
            id="order-kept",
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", port=9000)]}],
            10,
            [{"backendRefs": ours(10)}],
            id="port-follows-target",
        ),
        pytest.param(
            [
                {
                    "backendRefs": [
                        ref("iris-stable", 1, group="", kind="Service", filters=[{"type": "X"}]),
                        ref("iris-canary", 1, namespace="ml"),
                    ]
                }
            ],
            20,
            [
                {
                    "backendRefs": [
                        ref("iris-stable", 80, group="", kind="Service", filters=[{"type": "X"}]),
                        ref("iris-canary", 20, namespace="ml"),
                    ]
                }
            ],
            id="ref-fields-kept",
        ),
        pytest.param(
            [
                {"backendRefs": [ref("iris-stable", namespace="elsewhere")]},
                {"backendRefs": [ref("iris-stable", kind="ServiceImport", group="mcs")]},
                {"backendRefs": [ref("iris-stable")]},
            ],
            10,
            [
                {"backendRefs": [ref("iris-stable", namespace="elsewhere")]},
                {"backendRefs": [ref("iris-stable", kind="ServiceImport", group="mcs")]},
                {"backendRefs": ours(10)},
            ],
            id="same-name-other-namespace-or-kind-is-not-ours",
        ),
    ],
)
def test_with_weight(
    rules: list[dict[str, Any]], weight: int, expected: list[dict[str, Any]]
) -> None:
    spec = {**PARENTS, "rules": rules}
    given = copy.deepcopy(spec)
    update = with_weight(spec, T, weight)
    assert update.spec == {**PARENTS, "rules": expected}
    assert update.changed
    assert spec == given  # pure: the input is not modified
    assert read_weight(update.spec, T) == weight


def test_absent_rules_field_gets_one_rule() -> None:
    assert with_weight(PARENTS, T, 5).spec == {**PARENTS, "rules": [{"backendRefs": ours(5)}]}


@pytest.mark.parametrize("weight", [0, 10, 100])
def test_weights_already_in_place_signal_no_change(weight: int) -> None:
    spec = {**PARENTS, "rules": [DOCS, {"matches": V2, "backendRefs": ours(weight)}]}
    update = with_weight(spec, T, weight)
    assert not update.changed
    assert update.spec == spec


def test_server_defaults_do_not_count_as_change() -> None:
    """Read back, refs carry group/kind the API server defaulted: still no change."""
    refs = [ref(r["name"], r["weight"], group="", kind="Service") for r in ours(30)]
    assert not with_weight({"rules": [{"backendRefs": refs}]}, T, 30).changed


def test_every_weight_round_trips() -> None:
    spec: dict[str, Any] = {"rules": [{"backendRefs": [ref("iris-stable")]}]}
    for weight in range(101):
        spec = with_weight(spec, T, weight).spec
        assert read_weight(spec, T) == weight


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([], None, id="no-rules"),
        pytest.param([DOCS], None, id="no-reference"),
        pytest.param([{"backendRefs": [ref("iris-stable", 100)]}], None, id="stable-only"),
        pytest.param([{"backendRefs": [ref("iris-canary", 100)]}], None, id="canary-only"),
        pytest.param([{"backendRefs": ours(10)}], 10, id="set"),
        pytest.param(
            [{"backendRefs": [ref("iris-stable"), ref("iris-canary")]}], 50, id="default-weight-1"
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", 2), ref("iris-canary", 1)]}], 33, id="rounded"
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", 1), ref("iris-canary", 2)]}], 67, id="rounded-up"
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", 7), ref("iris-canary", 1)]}], 13, id="half-up"
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", 0), ref("iris-canary", 0)]}], None, id="all-zero"
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", 500), ref("iris-canary", 500)]}],
            50,
            id="not-percent-scale",
        ),
        pytest.param(
            [{"backendRefs": [ref("iris-stable", 25), ref("iris-canary", 25), ref("legacy", 50)]}],
            25,
            id="other-backend-counts-in-total",
        ),
        pytest.param([DOCS, {"backendRefs": ours(30)}], 30, id="unrelated-rule-ignored"),
        pytest.param([{"backendRefs": ours(30)}, {"backendRefs": ours(30)}], 30, id="agree"),
        pytest.param([{"backendRefs": ours(30)}, {"backendRefs": ours(40)}], None, id="disagree"),
        pytest.param(
            [{"backendRefs": ours(30)}, {"backendRefs": [ref("iris-stable")]}],
            None,
            id="one-rule-not-split",
        ),
    ],
)
def test_read_weight(rules: list[dict[str, Any]], expected: int | None) -> None:
    assert read_weight({"rules": rules}, T) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"rules": {"a": 1}}, r"spec.rules must be a list", id="rules-not-list"),
        pytest.param({"rules": ["x"]}, r"spec.rules\[0\] must be an object", id="rule-not-object"),
        pytest.param(
            {"rules": [{"backendRefs": "iris"}]},
            r"spec.rules\[0\].backendRefs must be a list",
            id="refs-not-list",
        ),
        pytest.param(
            {"rules": [{"backendRefs": [7]}]},
            r"spec.rules\[0\].backendRefs\[0\] must be an object",
            id="ref-not-object",
        ),
        pytest.param(
            {"rules": [{"backendRefs": [{"port": 80}]}]},
            r"spec.rules\[0\].backendRefs\[0\].name must be a string",
            id="ref-without-name",
        ),
        pytest.param(
            {"rules": [{"backendRefs": [ref("iris-stable", -1)]}]},
            r"spec.rules\[0\].backendRefs\[0\].weight must be a non-negative integer, got -1",
            id="negative-weight",
        ),
        pytest.param(
            {"rules": [{"backendRefs": [{"name": "iris-stable", "weight": "10"}]}]},
            r"spec.rules\[0\].backendRefs\[0\].weight must be a non-negative integer, got '10'",
            id="string-weight",
        ),
        pytest.param(
            {"rules": [{"backendRefs": [{"name": "iris-stable", "weight": True}]}]},
            r"spec.rules\[0\].backendRefs\[0\].weight must be a non-negative integer, got True",
            id="bool-weight",
        ),
    ],
)
def test_malformed_specs_are_router_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RouterError, match=r"HTTPRoute ml/iris: " + message):
        with_weight(spec, T, 10)
    with pytest.raises(RouterError, match=message):
        read_weight(spec, T)


def test_a_rule_mixing_ours_with_another_backend_is_refused() -> None:
    spec = {"rules": [{"backendRefs": [ref("iris-stable"), ref("legacy"), ref("old")]}]}
    with pytest.raises(
        RouterError, match=r"spec.rules\[0\].backendRefs sends traffic to legacy, old besides"
    ):
        with_weight(spec, T, 10)


def test_a_service_named_twice_is_refused() -> None:
    spec = {"rules": [{"backendRefs": [ref("iris-canary", 1), ref("iris-canary", 2)]}]}
    with pytest.raises(RouterError, match="names the canary Service twice"):
        with_weight(spec, T, 10)


def test_a_redirecting_first_rule_cannot_take_the_backends() -> None:
    redirect = {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]}
    with pytest.raises(RouterError, match=r"spec.rules\[0\] redirects"):
        with_weight({"rules": [redirect, DOCS]}, T, 10)


@pytest.mark.parametrize("weight", [-1, 101, 1.5, True, "10"])
def test_a_weight_outside_0_to_100_is_a_caller_bug(weight: Any) -> None:
    with pytest.raises(ValueError, match="canary weight must be"):
        with_weight({"rules": []}, T, weight)


MIRROR = {"type": "RequestMirror", "requestMirror": {"backendRef": ref("iris-canary")}}
HEADER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "a"}]}}


def test_a_shadow_step_adds_the_mirror_filter_and_keeps_the_users() -> None:
    spec = {"rules": [{"matches": V2, "filters": [HEADER], "backendRefs": ours(10)}, DOCS]}
    mirrored = with_weight(spec, T, 0, mirror=True)
    assert mirrored.changed
    rule = mirrored.spec["rules"][0]
    assert rule["filters"] == [HEADER, MIRROR]
    assert rule["backendRefs"] == ours(0)
    assert mirrored.spec["rules"][1] == DOCS
    assert (read_weight(mirrored.spec, T), read_mirror(mirrored.spec, T)) == (0, True)
    assert not with_weight(mirrored.spec, T, 0, mirror=True).changed
    # After the step: the mirror goes, the user's filter stays.
    after = with_weight(mirrored.spec, T, 50).spec
    assert after["rules"][0]["filters"] == [HEADER]
    assert (read_weight(after, T), read_mirror(after, T)) == (50, False)


def test_mirror_on_a_taken_over_first_rule_and_its_removal() -> None:
    mirrored = with_weight({"rules": [{"backendRefs": [ref("placeholder")]}]}, T, 0, True).spec
    assert mirrored["rules"][0]["filters"] == [MIRROR]
    assert "filters" not in with_weight(mirrored, T, 0).spec["rules"][0]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([], False, id="no-rules"),
        pytest.param([{"backendRefs": ours(0)}], False, id="no-filter"),
        pytest.param([{"filters": [MIRROR], "backendRefs": ours(0)}], True, id="mirrored"),
        pytest.param(
            [
                {"filters": [MIRROR], "backendRefs": ours(0)},
                {"matches": V2, "backendRefs": ours(0)},
            ],
            False,
            id="one-steered-rule-not-mirrored",
        ),
        pytest.param(
            [
                {
                    "filters": [
                        {"type": "RequestMirror", "requestMirror": {"backendRef": ref("other")}}
                    ],
                    "backendRefs": ours(0),
                }
            ],
            False,
            id="mirror-to-someone-else",
        ),
    ],
)
def test_read_mirror(rules: list[dict[str, Any]], expected: bool) -> None:
    assert read_mirror({"rules": rules}, T) is expected
