"""`make demo`: a real control plane, the operator, the examples converged, and then, live, a
healthy new model promoted step by step, then one answering with errors and one predicting
wrongly (its label map shuffled) each rolled back by itself.

    python -m hack.demo up [--no-rollout] [--kwok-only]   # start everything, run the show
    python -m hack.demo down                              # stop everything `up` started

Two modes, and `up` says which it runs in. Where the machine allows a real node (Linux, root,
Debian's container packages: hack/realnode.py), the model servers are real pods of the serving
image built here, Ready when their readiness probe passes, Prometheus finds them through the API
server and the show's traffic goes through the model's Service (hack/demonode.py). Otherwise
pods run on kwok nodes and `up` starts local stand-ins: a `modelserver` process per pod
(hack/podrunner.py), Debian's Prometheus scraping them (hack/prometheus.py) and a gateway that
splits requests by the HTTPRoute's weights (hack/gateway.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from hack import demonode, localcluster, realnode, s3server
from hack.demoshow import SHOW, run_show
from hack.models import write_mlp
from hack.processes import free_port

REPO = localcluster.REPO
CRD = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
ROUTE_CRDS = REPO / "hack" / "crds"
EXAMPLES = REPO / "examples" / "quickstart.yaml"


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


def publish(text: str, models: Path, store: str, real: bool = False) -> str:
    """Put a model generated here (nothing is downloaded) at each example's own s3:// URI in the
    local S3-compatible store, and point the example at that store (`spec.model.endpoint`):
    the URI, the Secret and auto mode stay as written, and the operator profiles the file
    through the same S3 requests it makes on a real cluster. On the real node, the pods are
    placed there."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    for i, doc in enumerate(docs):
        path = models / f"{doc['metadata']['name']}.onnx"
        write_mlp(path, seed=i)
        s3server.put(store, doc["spec"]["model"]["uri"], path.read_bytes())
        doc["spec"]["model"]["endpoint"] = store
        if real:
            demonode.place(doc)
    return yaml.safe_dump_all(docs, sort_keys=False)


def start_store(directory: Path, real: bool) -> str:
    """moto's S3-compatible server, at an address the operator (and on the real node, its
    pods) can reach; the Secret `model-store` in the default namespace holds its keys."""
    host = realnode.NODE_IP if real else "127.0.0.1"
    port = free_port()
    spawn(directory, "s3", ["moto.server", "-H", host, "-p", str(port)])
    endpoint = f"http://{host}:{port}"
    _wait_http(f"{endpoint}/moto-api/")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "model-store"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": s3server.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3server.SECRET_KEY,
        },
    }
    _kubectl(directory, "apply", "-f", "-", stdin=json.dumps(secret))
    return endpoint


# --- up / down ---------------------------------------------------------------------------------


def up(directory: Path, rollout: bool, kwok_only: bool = False) -> int:
    started = time.monotonic()
    reason = demonode.mode_reason(kwok_only)
    real = reason is None
    if real:
        print("Mode: real node. Model servers run as pods of the serving image built here, by a")
        print("kubelet in containerd; readiness probes hold traffic until a model is loaded.")
    else:
        print(f"Mode: kwok only ({reason}). Pods are simulated; model servers run as local")
        print("processes behind a weighted gateway (docs/real-node.md tells the difference).")
    if localcluster.cmd_up(directory, real_node=real) != 0:
        return 1
    print("Installing the ModelDeployment CRD (and stand-in HTTPRoute/VirtualService CRDs) ...")
    _kubectl(directory, "apply", "--server-side", "-f", str(CRD))
    for crd in sorted(ROUTE_CRDS.glob("*.yaml")):
        _kubectl(directory, "apply", "--server-side", "-f", str(crd))
    _kubectl(directory, "wait", "--for=condition=Established", "crd", "--all")

    kubeconfig = str(directory / "kubeconfig")
    if real:
        print("Starting the operator, Prometheus (pods found through the API server) ...")
        prometheus, operator_env = demonode.start_helpers(directory, spawn)
        gateway = ""
    else:
        print("Starting the operator, model server stand-ins, Prometheus and the gateway ...")
        prometheus, gateway = _start_stand_ins(directory, kubeconfig)
        operator_env = {}
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
            # The demo's models are in a local S3-compatible store, at a loopback or node
            # address the chart's defaults would refuse; its Secret is read to profile them.
            "MODELROLLOUT_POLICY": json.dumps(demonode.policy(real, prometheus)),
            **operator_env,
        },
    )
    _wait_http(f"{prometheus}/-/ready")
    if gateway:
        _wait_http(f"{gateway}/_gateway/healthz")
    (directory / "endpoints.env").write_text(f"PROMETHEUS={prometheus}\nGATEWAY={gateway}\n")

    print("Starting a local S3-compatible store (moto) with the examples' models ...")
    store = start_store(directory, real)
    (directory / "store.url").write_text(store)
    print(f"Applying {EXAMPLES.relative_to(REPO)} (models generated into {directory}/models) ...")
    manifest = directory / "quickstart.yaml"
    models = directory / "models"
    models.mkdir(exist_ok=True)
    manifest.write_text(publish(EXAMPLES.read_text(), models, store, real))
    print(_kubectl(directory, "apply", "-f", str(manifest)), end="")
    print("Waiting for every ModelDeployment to be Ready ...")
    _kubectl(directory, "wait", "--for=condition=Ready", "mdep", "--all", "--timeout=240s")
    print(_kubectl(directory, "get", "mdep,deployments,hpa,pods", "-o", "wide"))
    if rollout:
        kubectl = functools.partial(_kubectl, directory)
        store = (directory / "store.url").read_text().strip()
        run_show(kubectl, directory / "models", store, gateway, prometheus, real)
        print()
        print(_kubectl(directory, "get", "mdep"))
    gateway_hint = f"  curl -s {gateway}/_gateway/routes\n" if gateway else ""
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
        f"{gateway_hint}"
        f"Try a rollout yourself:\n"
        f'  kubectl patch mdep iris --type merge -p \'{{"spec":{{"model":{{"version":"v2"}}}}}}\'\n'
        f"  kubectl get mdep iris -w\n"
        f"Stop everything: make cluster-down"
    )
    return 0


def _start_stand_ins(directory: Path, kubeconfig: str) -> tuple[str, str]:
    """kwok-only mode: model server processes for the pods, Prometheus scraping them through a
    file, and the weighted gateway. Returns the Prometheus and gateway URLs."""
    prom_port, gateway_port = free_port(), free_port()
    runner_dir = directory / "podrunner"
    file_sd = runner_dir / "file_sd" / "modelserver.json"
    spawn(
        directory,
        "podrunner",
        [
            *("hack.podrunner", "--kubeconfig", kubeconfig),
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
    return f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{gateway_port}"


def down(directory: Path) -> int:
    stop_all(directory)
    return localcluster.cmd_down(directory)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.demo", description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster")
    parser.add_argument("--no-rollout", action="store_true", help="skip the live rollout show")
    parser.add_argument(
        "--kwok-only", action="store_true", help="no real node, even where one could run"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "down":
        return down(directory)
    return up(directory, not args.no_rollout, args.kwok_only)


if __name__ == "__main__":
    sys.exit(main())
