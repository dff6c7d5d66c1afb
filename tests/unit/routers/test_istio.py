"""VirtualService steering as pure functions: which http routes change, host spellings, Istio's
weight defaults, and the weight read back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelrollout.routers.base import RouterError, RouteTarget
from modelrollout.routers.istio import read_mirror, read_weight, service_of, with_weight

T = RouteTarget("ml", "iris", "iris-stable", "iris-canary", 8080)


def dest(host: str, weight: int | None = None, port: int | None = 8080, **extra: Any) -> Any:
    destination: dict[str, Any] = {"host": host}
    if port is not None:
        destination["port"] = {"number": port}
    out: dict[str, Any] = {"destination": destination, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def ours(canary: int) -> list[dict[str, Any]]:
    return [dest("iris-stable", 100 - canary), dest("iris-canary", canary)]


MATCH = [{"uri": {"prefix": "/v2"}}]
DOCS = {"name": "docs", "match": [{"uri": {"prefix": "/docs"}}], "route": [dest("docs", port=80)]}
SET_A = {"request": {"set": {"a": "b"}}}
HOSTS = {"hosts": ["iris.example.com"], "gateways": ["istio-system/public"]}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("iris-stable", "iris-stable"),
        ("iris-stable.ml", "iris-stable"),
        ("iris-stable.ml.svc", "iris-stable"),
        ("iris-stable.ml.svc.cluster.local", "iris-stable"),
        ("iris-stable.ml.svc.corp.internal", "iris-stable"),
        ("iris-stable.other", None),
        ("iris-stable.other.svc.cluster.local", None),
        ("iris-stable.example.com", None),
        ("iris-stable.ml.example.com", None),
    ],
)
def test_service_of(host: str, expected: str | None) -> None:
    assert service_of(host, "ml") == expected


@pytest.mark.parametrize(
    ("http", "weight", "expected"),
    [
        pytest.param(
            [{"match": MATCH, "route": [dest("iris-stable", port=None)]}],
            10,
            [{"match": MATCH, "route": ours(10)}],
            id="stable-only-route-gains-the-canary",
        ),
        pytest.param(
            [DOCS, {"match": MATCH, "retries": {"attempts": 2}, "route": [dest("iris-stable")]}],
            25,
            [DOCS, {"match": MATCH, "retries": {"attempts": 2}, "route": ours(25)}],
            id="unrelated-route-untouched",
        ),
        pytest.param(
            [{"match": MATCH, "route": ours(10)}, {"route": [dest("iris-canary.ml.svc", 100)]}],
            50,
            [
                {"match": MATCH, "route": ours(50)},
                {"route": [dest("iris-canary.ml.svc", 50), dest("iris-stable", 50)]},
            ],
            id="every-route-naming-ours-is-steered-host-spelling-kept",
        ),
        pytest.param(
            [{"match": MATCH, "route": [dest("placeholder")]}, DOCS],
            10,
            [{"match": MATCH, "route": ours(10)}, DOCS],
            id="no-reference-first-route-replaced",
        ),
        pytest.param([], 30, [{"route": ours(30)}], id="no-http-one-route-created"),
        pytest.param([{"route": ours(10)}], 0, [{"route": ours(0)}], id="zero-keeps-canary"),
        pytest.param([{"route": ours(90)}], 100, [{"route": ours(100)}], id="100-keeps-stable"),
        pytest.param(
            [{"route": [dest("iris-canary", 10), dest("iris-stable", 90)]}],
            40,
            [{"route": [dest("iris-canary", 40), dest("iris-stable", 60)]}],
            id="order-kept",
        ),
        pytest.param(
            [
                {
                    "route": [
                        dest("iris-stable", 90, port=9000, headers=SET_A),
                        {"destination": {"host": "iris-canary", "subset": "v2"}, "weight": 10},
                    ]
                }
            ],
            20,
            [
                {
                    "route": [
                        dest("iris-stable", 80, headers=SET_A),
                        {
                            "destination": {
                                "host": "iris-canary",
                                "subset": "v2",
                                "port": {"number": 8080},
                            },
                            "weight": 20,
                        },
                    ]
                }
            ],
            id="destination-fields-kept-port-follows-target",
        ),
        pytest.param(
            [{"route": [dest("iris-stable.other.svc.cluster.local")]}, {"route": ours(5)}],
            10,
            [{"route": [dest("iris-stable.other.svc.cluster.local")]}, {"route": ours(10)}],
            id="same-name-other-namespace-is-not-ours",
        ),
    ],
)
def test_with_weight(
    http: list[dict[str, Any]], weight: int, expected: list[dict[str, Any]]
) -> None:
    spec = {**HOSTS, "http": http, "tcp": [{"route": [dest("db", port=5432)]}]}
    given = copy.deepcopy(spec)
    update = with_weight(spec, T, weight)
    assert update.spec == {**HOSTS, "http": expected, "tcp": [{"route": [dest("db", port=5432)]}]}
    assert update.changed
    assert spec == given  # pure: the input is not modified
    assert read_weight(update.spec, T) == weight


def test_absent_http_field_gets_one_route() -> None:
    assert with_weight(HOSTS, T, 5).spec == {**HOSTS, "http": [{"route": ours(5)}]}


@pytest.mark.parametrize("weight", [0, 10, 100])
def test_weights_already_in_place_signal_no_change(weight: int) -> None:
    spec = {**HOSTS, "http": [DOCS, {"match": MATCH, "route": ours(weight)}]}
    update = with_weight(spec, T, weight)
    assert not update.changed
    assert update.spec == spec


def test_every_weight_round_trips() -> None:
    spec: dict[str, Any] = {"http": [{"route": [dest("iris-stable")]}]}
    for weight in range(101):
        spec = with_weight(spec, T, weight).spec
        assert read_weight(spec, T) == weight


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        pytest.param([], None, id="no-http"),
        pytest.param([DOCS], None, id="no-reference"),
        pytest.param([{"route": [dest("iris-stable")]}], None, id="lone-stable"),
        pytest.param([{"route": ours(10)}], 10, id="set"),
        pytest.param(
            [{"route": [dest("iris-stable", 100), dest("iris-canary")]}], 0, id="absent-weight-0"
        ),
        pytest.param(
            [{"route": [dest("iris-stable"), dest("iris-canary")]}], None, id="no-weights-at-all"
        ),
        pytest.param(
            [{"route": [dest("iris-stable", 2), dest("iris-canary", 1)]}], 33, id="relative"
        ),
        pytest.param(
            [{"route": [dest("iris-stable", 7), dest("iris-canary", 1)]}], 13, id="half-up"
        ),
        pytest.param(
            [{"route": [dest("iris-stable.ml.svc.cluster.local", 60), dest("iris-canary.ml", 40)]}],
            40,
            id="qualified-hosts",
        ),
        pytest.param(
            [{"route": [dest("iris-stable", 50), dest("iris-canary", 25), dest("old", 25)]}],
            25,
            id="other-destination-counts-in-total",
        ),
        pytest.param([{"route": ours(30)}, {"route": ours(40)}], None, id="disagree"),
        pytest.param([{"route": ours(30)}, {"route": ours(30)}, DOCS], 30, id="agree"),
        pytest.param([{"redirect": {"uri": "/x"}}, {"route": ours(30)}], 30, id="redirect-ignored"),
    ],
)
def test_read_weight(http: list[dict[str, Any]], expected: int | None) -> None:
    assert read_weight({"http": http}, T) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"http": {"route": []}}, r"spec.http must be a list", id="http-not-list"),
        pytest.param({"http": [[]]}, r"spec.http\[0\] must be an object", id="entry-not-object"),
        pytest.param(
            {"http": [{"route": {"destination": {}}}]},
            r"spec.http\[0\].route must be a list",
            id="route-not-list",
        ),
        pytest.param(
            {"http": [{"route": [{"weight": 100}]}]},
            r"spec.http\[0\].route\[0\].destination must be an object, got None",
            id="no-destination",
        ),
        pytest.param(
            {"http": [{"route": [{"destination": {"host": ""}}]}]},
            r"spec.http\[0\].route\[0\].destination.host must be a non-empty string",
            id="empty-host",
        ),
        pytest.param(
            {"http": [{"route": [dest("iris-stable", -5)]}]},
            r"spec.http\[0\].route\[0\].weight must be a non-negative integer, got -5",
            id="negative-weight",
        ),
        pytest.param(
            {"http": [{"route": [{"destination": {"host": "x"}, "weight": 0.5}]}]},
            r"spec.http\[0\].route\[0\].weight must be a non-negative integer, got 0.5",
            id="float-weight",
        ),
    ],
)
def test_malformed_specs_are_router_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RouterError, match=r"VirtualService ml/iris: " + message):
        with_weight(spec, T, 10)
    with pytest.raises(RouterError, match=message):
        read_weight(spec, T)


def test_a_route_mixing_ours_with_another_host_is_refused() -> None:
    spec = {"http": [{"route": [dest("iris-stable", 50), dest("legacy.ml.svc", 50)]}]}
    with pytest.raises(
        RouterError, match=r"spec.http\[0\].route sends traffic to legacy.ml.svc besides"
    ):
        with_weight(spec, T, 10)


def test_a_service_named_twice_is_refused() -> None:
    spec = {
        "http": [{"route": [dest("iris-stable", 50), dest("iris-stable.ml.svc.cluster.local", 50)]}]
    }
    with pytest.raises(RouterError, match="names the stable Service twice"):
        with_weight(spec, T, 10)


@pytest.mark.parametrize(
    "entry",
    [
        {"redirect": {"uri": "/v3"}},
        {"directResponse": {"status": 503}},
        {"delegate": {"name": "inner", "namespace": "ml"}},
    ],
)
def test_a_non_routing_first_entry_cannot_take_the_destinations(entry: dict[str, Any]) -> None:
    with pytest.raises(RouterError, match=rf"spec.http\[0\] has {next(iter(entry))}"):
        with_weight({"http": [entry, DOCS]}, T, 10)


OUR_MIRROR = {"host": "iris-canary", "port": {"number": 8080}}


def test_a_shadow_step_mirrors_every_request_to_the_canary() -> None:
    spec = {"http": [{"match": MATCH, "route": ours(10), "timeout": "5s"}, DOCS]}
    mirrored = with_weight(spec, T, 0, mirror=True)
    entry = mirrored.spec["http"][0]
    assert entry["mirror"] == OUR_MIRROR
    assert entry["mirrorPercentage"] == {"value": 100.0}
    assert (entry["timeout"], entry["route"]) == ("5s", ours(0))
    assert mirrored.spec["http"][1] == DOCS
    assert (read_weight(mirrored.spec, T), read_mirror(mirrored.spec, T)) == (0, True)
    assert not with_weight(mirrored.spec, T, 0, mirror=True).changed
    after = with_weight(mirrored.spec, T, 50).spec["http"][0]
    assert "mirror" not in after
    assert "mirrorPercentage" not in after
    assert read_mirror({"http": [after]}, T) is False


def test_another_hosts_mirror_is_kept_but_cannot_take_a_shadow_step() -> None:
    theirs = {"match": MATCH, "route": ours(0), "mirror": {"host": "audit"}}
    assert with_weight({"http": [theirs]}, T, 10).spec["http"][0]["mirror"] == {"host": "audit"}
    assert read_mirror({"http": [theirs]}, T) is False
    with pytest.raises(RouterError, match=r"spec.http\[0\].mirror already mirrors"):
        with_weight({"http": [theirs]}, T, 0, mirror=True)


def test_a_partial_mirror_is_not_a_shadow_step() -> None:
    half = {"route": ours(0), "mirror": OUR_MIRROR, "mirrorPercentage": {"value": 50.0}}
    assert read_mirror({"http": [half]}, T) is False
    assert with_weight({"http": [half]}, T, 0, mirror=True).spec["http"][0]["mirrorPercentage"] == {
        "value": 100.0
    }
