"""Chaos runs on the real node (`--real-node`): the pod kill scenarios, where the kubelet's
readiness probes and kube-proxy decide who gets a request, run on pods of the serving image.

The ModelDeployment is placed on the real node (its node selector and toleration), runs the
image built here with small requests, reads its model over HTTP at the node address, and is
routed by replica ratio: kube-proxy spreads the Service's requests over the Ready pods of both
revisions (the weighted gateway reaches only the pod runner's processes). The load goes to the
Service's cluster IP. Through kube-proxy no answer names its pod, so the traffic checks read
the answers themselves: a request that got no answer, or 502/503/504, met a pod that could not
serve it (kube-proxy sends requests only to Ready endpoints, so that is a pod taken out too
late or put in too early); any other non-2xx is counted against the stable, except the bad
canary's injected 500s, which cannot be told from a stable's 500 here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.chaos.env import RealNodeParts
from bench.rig import NAME
from hack.loadgen import Answer
from hack.localcluster import LocalCluster
from tests.integration.kube import Kube
from tests.integration.realnode import PLACEMENT, RESOURCES, routed_service

UNSERVED = frozenset({0, 502, 503, 504})  # no answer, or a proxy's for a pod that had none


def place(manifest: dict[str, Any], real: RealNodeParts) -> dict[str, Any]:
    """`manifest` (bench/rig.py) moved onto the real node, routed by replica ratio."""
    spec = manifest["spec"]
    spec["model"]["uri"] = real.model_uri
    spec["serving"] |= {"image": real.image, "resources": RESOURCES}
    spec["hardware"] = PLACEMENT
    rollout = spec["rollout"]
    del rollout["trafficRouter"]  # replica ratio, the default
    rollout["analysis"]["prometheusUrl"] = real.prometheus_url
    return manifest


def service_url(cluster: LocalCluster, namespace: str) -> str:
    """NAME's Service, once kube-proxy sends it to exactly its Ready pods."""
    return f"http://{routed_service(Kube(cluster, namespace), NAME)}:8080"


def failed_answers(answers: Sequence[Answer], bad_canary: bool) -> tuple[int, int]:
    """(requests no Ready pod served, other non-2xx answers but a bad canary's 500s)."""
    unserved = sum(1 for a in answers if a.code in UNSERVED)
    other = sum(
        1
        for a in answers
        if not 200 <= a.code < 300 and a.code not in UNSERVED and not (bad_canary and a.code == 500)
    )
    return unserved, other
