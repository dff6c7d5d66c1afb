"""When does a live object already hold a desired manifest?"""

import copy
from fractions import Fraction
from typing import Any

import pytest

from modelrollout.api.names import ANNOTATION_APPLIED
from modelrollout.k8s.diff import contains, parse_quantity, stamped


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


GPU: dict[str, Any] = {
    "metadata": {"name": "m", "namespace": "ns", "annotations": {"note": "kept"}},
    "spec": {
        "template": {
            "spec": {
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            }
        }
    },
}


def _live(applied: dict[str, Any]) -> dict[str, Any]:
    """What the API server holds after an apply: the manifest plus defaults and status."""
    live = copy.deepcopy(applied)
    live["metadata"]["resourceVersion"] = "9"
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["status"] = {"replicas": 1}
    return live


def test_stamped_keeps_the_manifest_and_adds_its_digest() -> None:
    before = copy.deepcopy(GPU)
    out = stamped(GPU)
    assert before == GPU  # not mutated
    assert out["spec"] == GPU["spec"]
    assert out["metadata"]["annotations"]["note"] == "kept"
    assert len(out["metadata"]["annotations"][ANNOTATION_APPLIED]) == 16
    assert stamped(copy.deepcopy(GPU)) == out  # the same manifest, the same digest


def test_a_field_dropped_from_the_manifest_is_applied_away() -> None:
    live = _live(stamped(GPU))
    assert contains(live, stamped(GPU))  # unchanged: no write
    cpu = copy.deepcopy(GPU)
    del cpu["spec"]["template"]["spec"]["nodeSelector"]
    del cpu["spec"]["template"]["spec"]["tolerations"]
    # Without the digest the live object (which still has the GPU fields) holds every field
    # of the smaller manifest, and nothing would remove them.
    assert contains(live, cpu)
    assert not contains(live, stamped(cpu))


@pytest.mark.timeout(10)
def test_digests_that_read_as_huge_quantities_differ_at_once() -> None:
    """A hex digest can be digits, 'e', digits: read as a quantity, 10 to the power of a
    ten-digit number, which an exact parse never finishes (an operator hung on one)."""
    live = {"metadata": {"annotations": {ANNOTATION_APPLIED: "12e4567890123456"}}}
    desired = {"metadata": {"annotations": {ANNOTATION_APPLIED: "34e5678901234567"}}}
    assert not contains(live, desired)
    assert contains(live, live)
