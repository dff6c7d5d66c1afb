"""A private Prometheus (Debian's `prometheus` package) that scrapes the local model servers.

`make prometheus` installs it. Debian's package also ships a system service on :9090; we never
use it: each `Prometheus` here has its own config, data directory and loopback port, so several
can run side by side (tests, demo) whether or not the system one is up.

    with Prometheus(workdir, runner.file_sd_path) as prom:
        prom.query('sum by (revision) (modelserver_requests_total)')

    python -m hack.prometheus --dir .cluster/prometheus --file-sd .cluster/podrunner/file_sd/...
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from hack.processes import die_with_parent, free_port, until_signal

JOB = "modelserver"
INSTALL_HINT = "run `make prometheus` (installs Debian's prometheus package)"


class PrometheusNotInstalledError(RuntimeError):
    pass


def find_binary() -> Path | None:
    found = shutil.which("prometheus")
    return Path(found) if found else None


def require_binary() -> Path:
    binary = find_binary()
    if binary is None:
        raise PrometheusNotInstalledError(f"prometheus is not on PATH: {INSTALL_HINT}")
    return binary


def config(file_sd_path: Path, scrape_interval: str = "1s", job: str = JOB) -> dict[str, Any]:
    """Prometheus config (JSON is valid YAML): one job whose targets come from the file."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": job,
                # Target labels (namespace, pod, deployment, revision) win over the server's own
                # `revision`, as pod-label relabelling would in a cluster; the server's value
                # stays visible as exported_revision.
                "honor_labels": False,
                "file_sd_configs": [{"files": [str(file_sd_path)], "refresh_interval": "1s"}],
                "metrics_path": "/metrics",
            }
        ],
    }


def pod_targets(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """File-SD target groups for Running pods annotated `prometheus.io/scrape: "true"`, at their
    pod IP and `prometheus.io/port`, labelled as kubernetes_sd relabelling would in a cluster:
    namespace, pod, deployment, revision and track. Pure."""
    groups = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        annotations = meta.get("annotations") or {}
        port, ip = annotations.get("prometheus.io/port"), status.get("podIP")
        if annotations.get("prometheus.io/scrape") != "true" or not port or not ip:
            continue
        if status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        labels = meta.get("labels") or {}
        groups.append(
            {
                "targets": [f"{ip}:{port}"],
                "labels": {
                    "namespace": meta.get("namespace", ""),
                    "pod": meta.get("name", ""),
                    **{
                        name: labels.get(f"modelrollout.io/{name}", "")
                        for name in ("deployment", "revision", "track")
                    },
                },
            }
        )
    return sorted(groups, key=lambda g: str(g["targets"]))


class PodDiscovery:
    """Finds the pods to scrape through the API server and hands them to Prometheus as a file.
    Debian's Prometheus is built without kubernetes_sd_configs; this is its role `pod`."""

    def __init__(self, kubeconfig: Path, file_sd_path: Path, interval_s: float = 1.0) -> None:
        self.kubeconfig, self.file_sd_path, self.interval_s = kubeconfig, file_sd_path, interval_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="pod-discovery")

    def _run(self) -> None:
        from lightkube import ALL_NS, Client, KubeConfig
        from lightkube.resources.core_v1 import Pod

        client = Client(KubeConfig.from_file(str(self.kubeconfig)), trust_env=False)
        last = ""
        while not self.stop_event.is_set():
            try:
                pods = [pod.to_dict() for pod in client.list(Pod, namespace=ALL_NS)]
            except Exception as exc:  # the API server may be restarting; try again
                print(f"pod discovery: {exc}", file=sys.stderr, flush=True)
            else:
                text = json.dumps(pod_targets(pods), indent=1)
                if text != last:
                    part = self.file_sd_path.with_suffix(".part")
                    part.write_text(text)
                    part.replace(self.file_sd_path)  # atomic: Prometheus never reads half a file
                    last = text
            self.stop_event.wait(self.interval_s)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


class Prometheus:
    """One Prometheus process on 127.0.0.1:<free port>, data in workdir (wiped on start)."""

    def __init__(
        self,
        workdir: Path,
        file_sd_path: Path,
        scrape_interval: str = "1s",
        *,
        port: int = 0,
        binary: Path | None = None,
        retention: str = "1h",
        kubeconfig: Path | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.file_sd_path = file_sd_path.resolve()
        # With a kubeconfig, the pods to scrape come from the API server (PodDiscovery).
        self.kubeconfig = kubeconfig
        self.discovery: PodDiscovery | None = None
        self.scrape_interval = scrape_interval
        self.port = port
        self.binary = binary
        self.retention = retention
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, timeout: float = 60.0) -> Prometheus:
        binary = self.binary or require_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)  # a fresh TSDB: no series from an earlier run
        if not self.file_sd_path.exists():
            # Prometheus logs errors for a missing SD file; an empty target list is valid.
            self.file_sd_path.parent.mkdir(parents=True, exist_ok=True)
            self.file_sd_path.write_text("[]")
        doc = config(self.file_sd_path, self.scrape_interval)
        self.config_path.write_text(json.dumps(doc, indent=2))
        if self.kubeconfig is not None:
            self.discovery = PodDiscovery(self.kubeconfig, self.file_sd_path)
            self.discovery.start()
        if not self.port:
            self.port = free_port()
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={data}",
                    f"--storage.tsdb.retention.time={self.retention}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.popen is None or self.popen.poll() is not None:
                    raise RuntimeError(f"prometheus exited:\n{self.log_tail()}")
                try:
                    resp = client.get(f"{self.url}/-/ready")
                    if resp.status_code == 200:
                        return
                    last = f"{resp.status_code} {resp.text.strip()}"
                except httpx.HTTPError as exc:
                    last = str(exc)
                time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s: {last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- queries ------------------------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the `result` list of a vector (each item has `metric` and `value`)."""
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            resp = client.get(f"{self.url}/api/v1/query", params={"query": promql})
        resp.raise_for_status()
        doc = resp.json()
        if doc.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {doc}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with their labels, health and last error."""
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            resp = client.get(f"{self.url}/api/v1/targets", params={"state": "active"})
        resp.raise_for_status()
        active: list[dict[str, Any]] = resp.json()["data"]["activeTargets"]
        return active

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll `promql` until `predicate(result)` holds; the result that satisfied it."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql!r} did not match within {timeout}s: {result}")
            time.sleep(0.5)


# --- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.prometheus", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    targets = parser.add_mutually_exclusive_group(required=True)
    targets.add_argument("--file-sd", type=Path)
    targets.add_argument("--kubeconfig", type=Path, help="find pods through the API server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scrape-interval", default="1s")
    args = parser.parse_args(argv)
    file_sd = args.file_sd or args.dir / "file_sd.json"
    prom = Prometheus(
        args.dir, file_sd, args.scrape_interval, port=args.port, kubeconfig=args.kubeconfig
    )
    with until_signal() as stop, prom:
        print(f"prometheus ready at {prom.url}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if prom.popen is None or prom.popen.poll() is not None:
                print(f"prometheus exited:\n{prom.log_tail()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
