"""Prometheus targets from pods, as the local runner hands them over (hack/prometheus.py)."""

from __future__ import annotations

from typing import Any

import pytest

from hack.prometheus import pod_targets


def pod(
    *,
    scrape: str | None = "true",
    port: str | None = "9090",
    ip: str | None = "10.89.0.7",
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    annotations = {}
    if scrape is not None:
        annotations["prometheus.io/scrape"] = scrape
    if port is not None:
        annotations["prometheus.io/port"] = port
    meta: dict[str, Any] = {
        "name": "iris-abc-1",
        "namespace": "ml",
        "annotations": annotations,
        "labels": {"modelrollout.io/deployment": "iris", "modelrollout.io/revision": "abc"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    return {"metadata": meta, "status": {"podIP": ip, "phase": phase}}


def test_a_running_annotated_pod_is_a_target_with_its_labels() -> None:
    assert pod_targets([pod()]) == [
        {
            "targets": ["10.89.0.7:9090"],
            "labels": {
                "namespace": "ml",
                "pod": "iris-abc-1",
                "deployment": "iris",
                "revision": "abc",
                "track": "",
            },
        }
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scrape": None},
        {"scrape": "false"},
        {"port": None},
        {"ip": None},
        {"phase": "Pending"},
        {"deleting": True},
    ],
)
def test_pods_not_to_scrape(kwargs: dict[str, Any]) -> None:
    assert pod_targets([pod(**kwargs)]) == []
