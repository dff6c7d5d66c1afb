"""When does a live object already hold a desired manifest?"""

from fractions import Fraction
from typing import Any

import pytest

from modelrollout.k8s.diff import contains, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Fraction(1)),
        ("1000m", Fraction(1)),
        ("500m", Fraction(1, 2)),
        ("1Gi", Fraction(2**30)),
        ("1G", Fraction(10**9)),
        ("1e3", Fraction(1000)),
        ("2Ki", Fraction(2048)),
    ],
)
def test_parse_quantity(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["abc", "1Zi", "", "http"])
def test_not_a_quantity(text: str) -> None:
    assert parse_quantity(text) is None


LIVE: dict[str, Any] = {
    "metadata": {"name": "m", "resourceVersion": "7", "labels": {"a": "1", "extra": "x"}},
    "spec": {
        "replicas": 3,
        "template": {
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        },
        "ports": [{"port": 80, "protocol": "TCP"}],
    },
}


@pytest.mark.parametrize(
    ("desired", "held"),
    [
        ({"metadata": {"labels": {"a": "1"}}}, True),
        ({"metadata": {"labels": {"a": "2"}}}, False),
        ({"metadata": {"labels": {"b": "1"}}}, False),
        (
            {"spec": {"template": {"containers": [{"resources": {"requests": {"cpu": "1000m"}}}]}}},
            True,
        ),
        (
            {"spec": {"template": {"containers": [{"resources": {"requests": {"cpu": "2"}}}]}}},
            False,
        ),
        ({"spec": {"ports": [{"port": 80}]}}, True),
        ({"spec": {"ports": [{"port": 80}, {"port": 81}]}}, False),
        ({"spec": {"ports": []}}, False),
        ({"spec": {"replicas": "3"}}, True),
        ({"spec": {"missing": {"x": 1}}}, False),
    ],
)
def test_contains(desired: dict[str, Any], held: bool) -> None:
    assert contains(LIVE, desired) is held
