"""`make demo`: the local control plane, the CRD, the operator and the examples, converged.

python -m hack.demo up     # start everything, apply examples/, wait for Ready, leave it running
python -m hack.demo down   # stop the operator and the control plane
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from hack import localcluster
from hack.models import write_mlp

REPO = localcluster.REPO
CRD = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
EXAMPLES = REPO / "examples" / "quickstart.yaml"


def _kubectl(directory: Path, *args: str) -> str:
    kubectl = directory / "bin" / "kubectl"
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(directory / "kubeconfig"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _operator_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "operator.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_operator(directory: Path) -> None:
    if _operator_pid(directory):
        return
    env = os.environ | {
        "MODELROLLOUT_KUBECONFIG": str(directory / "kubeconfig"),
        "KUBECONFIG": str(directory / "kubeconfig"),
        "MODELROLLOUT_RESYNC_SECONDS": "5",
        "MODELROLLOUT_BIND_ADDRESS": "127.0.0.1",
        "MODELROLLOUT_METRICS_PORT": str(localcluster.free_port()),
        "MODELROLLOUT_HEALTH_PORT": str(localcluster.free_port()),
    }
    with (directory / "operator.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelrollout"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (directory / "operator.pid").write_text(str(proc.pid))
    (directory / "operator.env").write_text(
        f"metrics=http://127.0.0.1:{env['MODELROLLOUT_METRICS_PORT']}/metrics\n"
    )


def stop_operator(directory: Path) -> None:
    pid = _operator_pid(directory)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    (directory / "operator.pid").unlink(missing_ok=True)


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


def up(directory: Path) -> int:
    started = time.monotonic()
    if localcluster.cmd_up(directory) != 0:
        return 1
    print("Installing the ModelDeployment CRD ...")
    _kubectl(directory, "apply", "--server-side", "-f", str(CRD))
    _kubectl(
        directory, "wait", "--for=condition=Established", "crd/modeldeployments.modelrollout.io"
    )
    print("Starting the operator (log: .cluster/operator.log) ...")
    start_operator(directory)
    print(f"Applying {EXAMPLES.relative_to(REPO)} (models generated into {directory}/models) ...")
    manifest = directory / "quickstart.yaml"
    manifest.write_text(localise(EXAMPLES.read_text(), directory / "models"))
    print(_kubectl(directory, "apply", "-f", str(manifest)), end="")
    print("Waiting for every ModelDeployment to be Ready ...")
    _kubectl(directory, "wait", "--for=condition=Ready", "mdep", "--all", "--timeout=120s")
    print(_kubectl(directory, "get", "mdep,deployments,hpa,pods", "-o", "wide"))
    kubeconfig = (directory / "kubeconfig").resolve()
    print(
        f"Converged in {time.monotonic() - started:.0f}s; the control plane and operator keep "
        "running.\n"
        f"Explore:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export PATH={(directory / 'bin').resolve()}:$PATH\n"
        f"  kubectl get mdep\n"
        f"  kubectl describe mdep iris\n"
        f"  kubectl explain mdep.spec.rollout\n"
        f"Change the model version and watch it roll:\n"
        f'  kubectl patch mdep iris --type merge -p \'{{"spec":{{"model":{{"version":"v2"}}}}}}\'\n'
        f"  kubectl get mdep iris -w\n"
        f"Stop everything: make cluster-down"
    )
    return 0


def down(directory: Path) -> int:
    stop_operator(directory)
    return localcluster.cmd_down(directory)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.demo", description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    return up(directory) if args.command == "up" else down(directory)


if __name__ == "__main__":
    sys.exit(main())
