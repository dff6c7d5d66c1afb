"""`make demo`: a real control plane, the operator, the examples converged, and then, live, a
healthy new model promoted step by step and a bad one rolled back by itself.

    python -m hack.demo up [--no-rollout]   # start everything and run the show; leave it running
    python -m hack.demo down                # stop everything `up` started

Pods run on kwok nodes, so `up` also starts the local stand-ins: a `modelserver` process per
pod (hack/podrunner.py), Debian's Prometheus scraping them (hack/prometheus.py) and a gateway
that splits requests by the HTTPRoute's weights (hack/gateway.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hack import localcluster
from hack.loadgen import LoadStats, infer_payload, run_load
from hack.models import write_mlp
from hack.processes import free_port

REPO = localcluster.REPO
CRD = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
ROUTE_CRDS = REPO / "hack" / "crds"
EXAMPLES = REPO / "examples" / "quickstart.yaml"
SHOW = "sentiment"  # the ModelDeployment the live rollout show uses


def _kubectl(directory: Path, *args: str, stdin: str | None = None) -> str:
    kubectl = directory / "bin" / "kubectl"
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(directory / "kubeconfig"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


# --- background processes, one pid file each -------------------------------------------------


def _pid_dir(directory: Path) -> Path:
    path = directory / "pids"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def spawn(
    directory: Path, name: str, args: Sequence[str], env: dict[str, str] | None = None
) -> None:
    pid_file = _pid_dir(directory) / f"{name}.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text() or 0)):
        return
    with (directory / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=os.environ | (env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))


def stop_all(directory: Path) -> None:
    """Stop every process `spawn` started, newest first."""
    files = sorted(_pid_dir(directory).glob("*.pid"), key=lambda p: p.stat().st_mtime, reverse=True)
    for pid_file in files:
        pid = int(pid_file.read_text() or 0)
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


# --- the examples ------------------------------------------------------------------------------


def localise(text: str, models: Path) -> str:
    """Point each example at a model generated here: nothing is downloaded, and the operator
    profiles the real file (its size decides the hardware tier)."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    for i, doc in enumerate(docs):
        path = models / f"{doc['metadata']['name']}.onnx"
        sha = write_mlp(path, seed=i)
        doc["spec"]["model"]["uri"] = f"file://{path}"
        doc["spec"]["model"]["sha256"] = sha
    return yaml.safe_dump_all(docs, sort_keys=False)


def show_manifest(models: Path, prometheus: str, version: str, env: dict[str, str]) -> str:
    path = models / f"{SHOW}.onnx"
    sha = write_mlp(path, seed=7)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": SHOW},
        "spec": {
            "parentRefs": [{"name": "public-gateway"}],
            "rules": [{"backendRefs": [{"name": f"{SHOW}-stable", "port": 8080, "weight": 100}]}],
        },
    }
    mdep = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": SHOW},
        "spec": {
            "model": {"uri": f"file://{path}", "sha256": sha, "version": version},
            "serving": {"env": [{"name": k, "value": v} for k, v in env.items()]},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
            "rollout": {
                "steps": [
                    {"setWeight": 20},
                    {"analysis": {}},
                    {"setWeight": 50},
                    {"analysis": {}},
                ],
                "analysis": {
                    "interval": "2s",
                    "minRequests": 20,
                    "maxLatencyRatio": 3,
                    "prometheusUrl": prometheus,
                },
                "trafficRouter": {"type": "gatewayAPI", "httpRoute": SHOW},
                "bakeTime": "10s",
                "scaleDownDelay": "5s",
            },
        },
    }
    return yaml.safe_dump_all([route, mdep], sort_keys=False)


# --- the live show -----------------------------------------------------------------------------


def _status(directory: Path) -> dict[str, Any]:
    obj = json.loads(_kubectl(directory, "get", "mdep", SHOW, "-o", "json"))
    return dict(obj.get("status") or {})


def _line(status: dict[str, Any]) -> str:
    analysis = (status.get("rollout") or {}).get("lastAnalysis") or {}
    verdict = f" | last analysis {analysis['verdict']}" if analysis else ""
    weight = status.get("canaryWeight", 0)
    bar = "#" * (weight // 5) + "." * (20 - weight // 5)
    return f"  {status.get('phase', '?'):<12} canary [{bar}] {weight:>3}%{verdict}"


def follow(directory: Path, done: Any, timeout: float) -> dict[str, Any]:
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(directory)
        line = _line(status)
        if line != last:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
            last = line
        if done(status):
            return status
        time.sleep(1)
    raise SystemExit("the rollout did not finish in time; see .cluster/operator.log")


def run_show(directory: Path, gateway: str, prometheus: str) -> None:
    models = directory / "models"
    print("\n== Live rollout: model 'sentiment' behind an HTTPRoute, 30 requests/s of traffic ==")
    _kubectl(directory, "apply", "-f", "-", stdin=show_manifest(models, prometheus, "v1", {}))
    _kubectl(directory, "wait", "--for=condition=Ready", f"mdep/{SHOW}", "--timeout=120s")
    stop = threading.Event()
    stats: list[LoadStats] = []

    def load() -> None:
        payload = infer_payload(4, input_name="input")
        while not stop.is_set():
            stats.append(run_load(gateway, "default", SHOW, 30, 2, payload, timeout_s=5))

    # kwok marks pods Ready at once; the stand-in process needs a moment to load its model.
    probe = infer_payload(4, input_name="input")
    deadline = time.monotonic() + 60
    while run_load(gateway, "default", SHOW, 5, 1, probe, timeout_s=5).by_status.get(200, 0) < 3:
        if time.monotonic() > deadline:
            raise SystemExit(
                "the sentiment model server did not answer; see .cluster/podrunner.log"
            )
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        time.sleep(3)
        print("\n-- v2, healthy: 20% -> analysis -> 50% -> analysis -> promoted --")
        _kubectl(directory, "apply", "-f", "-", stdin=show_manifest(models, prometheus, "v2", {}))
        follow(
            directory,
            lambda s: s.get("modelVersion") == "v2" and not s.get("canaryRevision"),
            timeout=180,
        )
        print("\n-- v3, answers 30% of requests with errors: rolled back by itself --")
        bad = {"MODELSERVER_FAULT_ERROR_RATIO": "0.3"}
        _kubectl(directory, "apply", "-f", "-", stdin=show_manifest(models, prometheus, "v3", bad))
        final = follow(directory, lambda s: s.get("phase") == "RolledBack", timeout=180)
    finally:
        stop.set()
        thread.join(timeout=15)
    print(f"\nRolled back: {final['history'][0]['reason']}")
    print("History (newest first):")
    for entry in final["history"]:
        print(
            f"  {entry['revision']}  {entry['modelVersion']:<4} {entry['outcome']:<10} "
            f"{entry['reason']}"
        )
    served: dict[str, int] = {}
    for s in stats:
        for code, n in s.by_status.items():
            served[str(code)] = served.get(str(code), 0) + n
    print(f"Requests answered during the show, by status code: {served}")
    if served.get("503"):
        print(
            "  (503: a canary's stand-in process was still loading its model after kwok had "
            "reported the pod Ready; on a real node the readiness probe holds it back)"
        )


# --- up / down ---------------------------------------------------------------------------------


def up(directory: Path, rollout: bool) -> int:
    started = time.monotonic()
    if localcluster.cmd_up(directory) != 0:
        return 1
    print("Installing the ModelDeployment CRD (and stand-in HTTPRoute/VirtualService CRDs) ...")
    _kubectl(directory, "apply", "--server-side", "-f", str(CRD))
    for crd in sorted(ROUTE_CRDS.glob("*.yaml")):
        _kubectl(directory, "apply", "--server-side", "-f", str(crd))
    _kubectl(directory, "wait", "--for=condition=Established", "crd", "--all")

    kubeconfig = str(directory / "kubeconfig")
    prom_port, gateway_port = free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prom_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    print("Starting the operator, model server stand-ins, Prometheus and the gateway ...")
    spawn(
        directory,
        "operator",
        ["modelrollout"],
        env={
            "MODELROLLOUT_KUBECONFIG": kubeconfig,
            "KUBECONFIG": kubeconfig,
            "MODELROLLOUT_RESYNC_SECONDS": "5",
            "MODELROLLOUT_BIND_ADDRESS": "127.0.0.1",
            "MODELROLLOUT_METRICS_PORT": str(free_port()),
            "MODELROLLOUT_HEALTH_PORT": str(free_port()),
            "MODELROLLOUT_PROMETHEUS_URL": prometheus,
            # Run outside a cluster: the demo's models are local files (the chart forbids them).
            "MODELROLLOUT_POLICY": json.dumps(
                {"modelUriSchemes": ["file"], "prometheusUrls": [prometheus]}
            ),
        },
    )
    runner_dir = directory / "podrunner"
    file_sd = runner_dir / "file_sd" / "modelserver.json"
    spawn(
        directory,
        "podrunner",
        [
            "hack.podrunner",
            "--kubeconfig",
            kubeconfig,
            "--dir",
            str(runner_dir),
            "--file-sd",
            str(file_sd),
        ],
    )
    spawn(
        directory,
        "prometheus",
        [
            "hack.prometheus",
            "--dir",
            str(directory / "prometheus"),
            "--file-sd",
            str(file_sd),
            "--port",
            str(prom_port),
        ],
    )
    spawn(
        directory,
        "gateway",
        [
            "hack.gateway",
            "--kubeconfig",
            kubeconfig,
            "--registry",
            str(runner_dir / "pods.json"),
            "--port",
            str(gateway_port),
        ],
    )
    _wait_http(f"{prometheus}/-/ready")
    _wait_http(f"{gateway}/_gateway/healthz")
    (directory / "endpoints.env").write_text(f"PROMETHEUS={prometheus}\nGATEWAY={gateway}\n")

    print(f"Applying {EXAMPLES.relative_to(REPO)} (models generated into {directory}/models) ...")
    manifest = directory / "quickstart.yaml"
    manifest.write_text(localise(EXAMPLES.read_text(), directory / "models"))
    print(_kubectl(directory, "apply", "-f", str(manifest)), end="")
    print("Waiting for every ModelDeployment to be Ready ...")
    _kubectl(directory, "wait", "--for=condition=Ready", "mdep", "--all", "--timeout=120s")
    print(_kubectl(directory, "get", "mdep,deployments,hpa,pods", "-o", "wide"))
    if rollout:
        run_show(directory, gateway, prometheus)
        print()
        print(_kubectl(directory, "get", "mdep"))
    print(
        f"Done in {time.monotonic() - started:.0f}s; everything keeps running.\n"
        f"Explore:\n"
        f"  export KUBECONFIG={Path(kubeconfig).resolve()}\n"
        f"  export PATH={(directory / 'bin').resolve()}:{(REPO / '.venv' / 'bin')}:$PATH\n"
        f"  kubectl get mdep\n"
        f"  kubectl modelrollout status {SHOW}\n"
        f"  kubectl explain mdep.spec.rollout\n"
        f"  curl -s '{prometheus}/api/v1/query?query="
        "sum+by+(revision,code)(modelserver_requests_total)'\n"
        f"  curl -s {gateway}/_gateway/routes\n"
        f"Try a rollout yourself:\n"
        f'  kubectl patch mdep iris --type merge -p \'{{"spec":{{"model":{{"version":"v2"}}}}}}\'\n'
        f"  kubectl get mdep iris -w\n"
        f"Stop everything: make cluster-down"
    )
    return 0


def down(directory: Path) -> int:
    stop_all(directory)
    return localcluster.cmd_down(directory)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.demo", description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster")
    parser.add_argument("--no-rollout", action="store_true", help="skip the live rollout show")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    return up(directory, not args.no_rollout) if args.command == "up" else down(directory)


if __name__ == "__main__":
    sys.exit(main())
