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


def kubernetes_sd_config(
    kubeconfig: Path, namespaces: Sequence[str] = (), scrape_interval: str = "1s", job: str = JOB
) -> dict[str, Any]:
    """Prometheus config that finds the model server pods through the API server (role: pod),
    as in a cluster: pods annotated `prometheus.io/scrape`, scraped at their pod IP and
    `prometheus.io/port`, labelled with namespace, pod, deployment, revision and track."""
    sd: dict[str, Any] = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    pod_label = "__meta_kubernetes_pod_label_modelrollout_io_"
    relabel: list[dict[str, Any]] = [
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "regex": "true",
            "action": "keep",
        },
        {
            "source_labels": [
                "__meta_kubernetes_pod_ip",
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
            ],
            "regex": "(.+);(.+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    relabel += [
        {"source_labels": [f"{pod_label}{name}"], "target_label": name}
        for name in ("deployment", "revision", "track")
    ]
    doc = config(Path("/dev/null"), scrape_interval, job)
    doc["scrape_configs"] = [
        {
            "job_name": job,
            "honor_labels": False,
            "kubernetes_sd_configs": [sd],
            "relabel_configs": relabel,
            "metrics_path": "/metrics",
        }
    ]
    return doc


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
        # With a kubeconfig, targets come from the API server instead of the file.
        self.kubeconfig = kubeconfig
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
        if self.kubeconfig is not None:
            doc = kubernetes_sd_config(self.kubeconfig, scrape_interval=self.scrape_interval)
        else:
            doc = config(self.file_sd_path, self.scrape_interval)
        self.config_path.write_text(json.dumps(doc, indent=2))
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
