"""bench-scale: N ModelDeployments on the local control plane with kwok nodes.

1. template: the operator builds one ModelDeployment's children; they become the floor's
   templates (owner references removed, names and labels renamed per copy).
2. floor: the same children for N copies, server-side applied by a plain script as fast as the
   API server takes them (16 in flight), until every Deployment is Available.
3. ready: N ModelDeployments applied the same way with the operator running, until all Ready.
4. idle: nothing changes for --idle seconds; API server requests (all clients) against a window
   of the same length... with the operator frozen (SIGSTOP: its watches stay open, it sends
   nothing), the operator's own logged requests, its CPU and RSS.
5. rollout: the model version of 10% changed at once (one setWeight 100 step, no analysis),
   until each of those is promoted; the other 90% must see no writes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightkube.types import PatchType

from hack.localcluster import running
from hack.models import write_mlp
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.plan.revision import revision_of
from tests.integration.kube import IMAGE, REPO

from . import report, rig

TEMPLATE = "scaleprobe"
KINDS = ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets")


def name_of(i: int) -> str:
    return f"md-{i:05d}"  # fixed width: a child's owner is the first 8 characters of its name


def spec(model_uri: str, sha256: str, version: str = "v1") -> dict[str, Any]:
    return {
        "model": {"uri": model_uri, "sha256": sha256, "version": version},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "rollout": {"steps": [{"setWeight": 100}], "bakeTime": "0s", "scaleDownDelay": "0s"},
    }


def manifest(name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def templates(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    """The children the operator made for TEMPLATE, as manifests to copy."""
    out = []
    for kind in KINDS:
        items = json.loads(
            cluster.kubectl(
                "-n",
                namespace,
                "get",
                kind,
                "-o",
                "json",
                "-l",
                "app.kubernetes.io/managed-by=modelrollout",
            )
        )["items"]
        for obj in items:
            meta = obj["metadata"]
            keep = {k: meta[k] for k in ("name", "labels", "annotations") if k in meta}
            spec_ = dict(obj["spec"])
            if obj["kind"] == "Service":  # allocated by the API server
                for field in ("clusterIP", "clusterIPs"):
                    spec_.pop(field, None)
            out.append(
                {
                    "apiVersion": obj["apiVersion"],
                    "kind": obj["kind"],
                    "metadata": keep,
                    "spec": spec_,
                }
            )
    return out


def copies(tmpl: list[dict[str, Any]], count: int, namespace: str) -> list[dict[str, Any]]:
    text = json.dumps(tmpl)
    out = []
    for i in range(count):
        for m in json.loads(text.replace(TEMPLATE, name_of(i))):
            m["metadata"]["namespace"] = namespace
            out.append(m)
    return out


def measure_floor(cluster: Any, client: Any, tmpl: list[dict[str, Any]], count: int) -> float:
    rig.create_namespace(client, "floor")
    start = time.monotonic()
    rig.apply_all(client, copies(tmpl, count, "floor"))
    rig.wait_until(
        lambda: rig.deployments_available(client, "floor", count),
        rig.scaled(count, 3600),
        "floor",
        poll=rig.scaled(count, rig.POLL_S),
    )
    seconds = time.monotonic() - start
    # The garbage collector deletes each ReplicaSet and pod at the controller manager's pace.
    rig.delete_namespace(
        client, "floor", rig.scaled(count, 900), poll=rig.scaled(count, rig.POLL_S)
    )
    return seconds


def all_ready(client: Any, names: set[str], revision: str | None = None) -> bool:
    objs = rig.model_deployments(client, "scale")
    done = {o["metadata"]["name"] for o in objs if rig.is_ready(o, revision)}
    return names <= done


def idle(cluster: Any, operator: Any, seconds: float) -> dict[str, float]:
    pid = operator.popen.pid
    offset = operator.log_path.stat().st_size
    a0, p0 = rig.apiserver_requests(cluster), rig.sample(pid)
    time.sleep(seconds)
    a1, p1 = rig.apiserver_requests(cluster), rig.sample(pid)
    own = len(rig.operator_requests(operator.log_path, offset))
    # The same window with the operator frozen: what everything else asks of the API server.
    baseline = min(seconds, 120.0)
    os.kill(pid, signal.SIGSTOP)
    try:
        b0 = rig.apiserver_requests(cluster)
        time.sleep(baseline)
        b1 = rig.apiserver_requests(cluster)
    finally:
        os.kill(pid, signal.SIGCONT)
    elapsed = p1.at - p0.at
    # Each kubectl get --raw /metrics is one request of the bench's own: not counted.
    with_operator = (a1 - a0 - 1) / elapsed
    without = (b1 - b0 - 1) / baseline
    return {
        "idle_s": elapsed,
        "apiserver_rps_with": with_operator,
        "apiserver_rps_without": without,
        "operator_rps": max(with_operator - without, 0.0),
        "operator_logged_rps": own / elapsed,
        "cpu_percent": 100 * (p1.cpu_s - p0.cpu_s) / elapsed,
        "rss_mib": p1.rss_mib,
        "peak_rss_mib": p1.hwm_mib,
    }


def rollout(client: Any, operator: Any, count: int, uri: str, sha: str) -> dict[str, Any]:
    changed = {name_of(i) for i in range(0, count, 10)}
    before = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in rig.model_deployments(client, "scale")
    }
    offset = operator.log_path.stat().st_size
    new_rev = revision_of(ModelDeploymentSpec.model_validate(spec(uri, sha, "v2")), IMAGE)
    start = time.monotonic()
    patch = {"spec": {"model": {"version": "v2"}}}

    def change(name: str) -> None:
        rig.retried(
            lambda: client.patch(
                rig.MDEP, name, patch, namespace="scale", patch_type=PatchType.MERGE
            )
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(change, sorted(changed)))
    rig.wait_until(
        lambda: all_ready(client, changed, new_rev),
        rig.scaled(count, 3600),
        "promoted",
        poll=rig.scaled(count, rig.POLL_S),
    )
    seconds = time.monotonic() - start
    writes = [
        (v, u)
        for v, u in rig.operator_requests(operator.log_path, offset)
        if v in ("PATCH", "POST", "PUT", "DELETE")
    ]
    unchanged_written = sorted(
        {
            u.split("/namespaces/scale/", 1)[1].split("/")[1][:8]
            for _, u in writes
            if "/namespaces/scale/" in u and "/events" not in u
        }
        - changed
    )
    after = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in rig.model_deployments(client, "scale")
    }
    touched = sorted(n for n in before if n not in changed and after.get(n) != before[n])
    return {
        "changed": len(changed),
        "promoted_s": seconds,
        "operator_writes": len(writes),
        "unchanged_with_writes": unchanged_written,
        "unchanged_objects_modified": touched,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-scale")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=300.0, help="idle window, seconds")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument(
        "--controller-qps",
        type=int,
        default=20,
        help="kube-controller-manager's API rate limit (Kubernetes' default: 20)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    model = workdir / "model.onnx"
    sha = write_mlp(model)
    uri = f"file://{model}"
    result: dict[str, Any] = {
        "count": args.count,
        "workers": args.workers,
        "controller_qps": args.controller_qps,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    log = workdir / "operator.log"
    loads: list[str] = []  # the machine's 1-minute load average as the phases start
    with running(workdir / "cluster", controller_qps=args.controller_qps) as cluster:
        crd = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/modeldeployments.modelrollout.io"
        )
        client = rig.client_for(cluster)
        rig.add_nodes(cluster, 2 * args.count + 10)
        operator = rig.start_operator(cluster, log, args.workers)
        try:
            rig.create_namespace(client, "probe")
            rig.apply_all(client, [manifest(TEMPLATE, "probe", spec(uri, sha))])
            rig.wait_until(
                lambda: any(rig.is_ready(o) for o in rig.model_deployments(client, "probe")),
                300,
                "template",
            )
            tmpl = templates(cluster, "probe")
            rig.delete_namespace(client, "probe")  # the operator removes its finalizer
            operator.stop()
            print(f"template: {len(tmpl)} children", flush=True)
            loads.append(rig.load_average())
            result["floor_s"] = measure_floor(cluster, client, tmpl, args.count)
            print(f"floor: {result['floor_s']:.1f}s", flush=True)

            operator.start()
            time.sleep(10)  # its caches' first LIST
            rig.create_namespace(client, "scale")
            names = {name_of(i) for i in range(args.count)}
            start = time.monotonic()
            rig.apply_all(client, [manifest(n, "scale", spec(uri, sha)) for n in sorted(names)])
            rig.wait_until(
                lambda: all_ready(client, names),
                rig.scaled(args.count, 3600),
                "all Ready",
                poll=rig.scaled(args.count, rig.POLL_S),
            )
            result["ready_s"] = time.monotonic() - start
            loads.append(rig.load_average())
            print(f"ready: {result['ready_s']:.1f}s", flush=True)
            time.sleep(rig.scaled(args.count, 30))  # the last status writes and events settle
            result |= idle(cluster, operator, args.idle)
            print(f"idle: {json.dumps(result)}", flush=True)
            loads.append(rig.load_average())
            result |= rollout(client, operator, args.count, uri, sha)
            print(f"rollout: {result['promoted_s']:.1f}s", flush=True)
        finally:
            operator.stop()
    result["load"] = " / ".join(loads)
    report.write(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
