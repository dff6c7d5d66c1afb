"""The operator's writes against a real kube-apiserver: a child is applied only when its
manifest changed, and a field the manifest no longer sets is removed from the live object."""

from __future__ import annotations

import copy
from typing import Any

from hack.localcluster import LocalCluster
from modelrollout.api.names import ANNOTATION_APPLIED
from modelrollout.k8s.caches import Caches
from modelrollout.k8s.cluster import Cluster, make_client

from .kube import Kube

NAME = "applied"


def _deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,  # nothing to schedule: only the object matters here
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "c", "image": "modelserver:test"}],
                    # What a GPU placement adds, and a fall back to CPU takes away.
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                },
            },
        },
    }


async def test_apply_writes_changes_only_and_removes_dropped_fields(
    kube: Kube, cluster: LocalCluster
) -> None:
    client = make_client(cluster.kubeconfig)
    cluster_io = Cluster(
        client, Caches(client, [kube.namespace], lambda _ns, _n: None, capacity=False)
    )
    try:
        gpu = _deployment(kube.namespace)
        assert await cluster_io.apply(gpu, None)
        live = kube.must("deployment", NAME)
        assert live["metadata"]["annotations"][ANNOTATION_APPLIED]
        assert not await cluster_io.apply(gpu, live)  # unchanged: no write

        cpu = copy.deepcopy(gpu)
        pod = cpu["spec"]["template"]["spec"]
        del pod["nodeSelector"], pod["tolerations"]
        assert await cluster_io.apply(cpu, live)
        after = kube.must("deployment", NAME)
        assert "nodeSelector" not in after["spec"]["template"]["spec"]
        assert "tolerations" not in after["spec"]["template"]["spec"]
        assert not await cluster_io.apply(cpu, after)
    finally:
        await client.close()
