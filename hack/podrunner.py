"""Run a local `modelserver` process for every ModelDeployment pod on the local control plane.

kwok makes pods Running without starting containers. This runner stands in for the kubelet: it
polls the API server for pods labelled `app.kubernetes.io/managed-by=modelrollout` that are
scheduled and Running, starts `python -m modelserver` with the pod's container env (ports moved
to free loopback ports), probes readiness, stops the process when the pod goes away, and keeps
Prometheus' file-based service discovery and a JSON registry of the running servers in step.

    python -m hack.podrunner --kubeconfig .cluster/kubeconfig --dir .cluster/podrunner

Library use (tests, `make demo`, hack/gateway.py):

    with PodRunner(kubeconfig, workdir) as runner:
        runner.wait_for_servers("ns", deployment="iris", count=2)
        for server in runner.servers(namespace="ns"):
            print(server.pod, server.revision, server.url)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from lightkube import ALL_NS, ApiError, Client, KubeConfig
from lightkube.models.core_v1 import Container
from lightkube.resources.core_v1 import Pod, Secret

from hack.processes import die_with_parent, free_port
from modelrollout.plan.children import CONTAINER, LABEL_DEPLOYMENT, LABEL_REVISION, MANAGED_BY

log = logging.getLogger("podrunner")

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
FILE_SD_NAME = "modelserver.json"
REGISTRY_NAME = "pods.json"


def write_atomic(path: Path, text: str) -> None:
    """Readers (Prometheus, the gateway) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass(frozen=True)
class PodServer:
    """One pod's stand-in process, as seen by routers and scrapers."""

    namespace: str
    pod: str
    deployment: str
    revision: str
    labels: Mapping[str, str]
    url: str
    metrics_url: str
    ready: bool
    pid: int
    log_path: str
    # host:port of the gRPC endpoint when the pod serves one (spec.serving.grpc), else "".
    grpc_target: str = ""

    @property
    def metrics_target(self) -> str:
        return self.metrics_url.removeprefix("http://").removesuffix("/metrics")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["labels"] = dict(self.labels)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PodServer:
        return cls(
            namespace=str(doc["namespace"]),
            pod=str(doc["pod"]),
            deployment=str(doc["deployment"]),
            revision=str(doc["revision"]),
            labels={str(k): str(v) for k, v in dict(doc.get("labels") or {}).items()},
            url=str(doc["url"]),
            metrics_url=str(doc["metrics_url"]),
            ready=bool(doc["ready"]),
            pid=int(doc["pid"]),
            log_path=str(doc.get("log_path", "")),
            grpc_target=str(doc.get("grpc_target", "")),
        )


def select(
    servers: Sequence[PodServer],
    *,
    namespace: str | None = None,
    deployment: str | None = None,
    revision: str | None = None,
    labels: Mapping[str, str] | None = None,
    ready: bool | None = None,
) -> list[PodServer]:
    """Filter servers the way a label selector filters pods."""
    out = []
    for s in servers:
        if namespace is not None and s.namespace != namespace:
            continue
        if deployment is not None and s.deployment != deployment:
            continue
        if revision is not None and s.revision != revision:
            continue
        if ready is not None and s.ready != ready:
            continue
        if labels and any(s.labels.get(k) != v for k, v in labels.items()):
            continue
        out.append(s)
    return out


@dataclass(frozen=True)
class _PodWant:
    """What the API server says should be running."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    env: dict[str, str]
    grace_s: float


@dataclass
class _Proc:
    want: _PodWant
    port: int = 0
    metrics_port: int = 0
    grpc_port: int = 0  # 0: the pod serves no gRPC
    popen: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    next_start: float = 0.0  # monotonic; crash-loop back-off
    stopping: bool = False
    kill_at: float = 0.0


SecretReader = Callable[[str, str], dict[str, str]]


def pod_env(
    container: Container, secret: SecretReader | None = None, namespace: str = ""
) -> dict[str, str]:
    """The env of a container as a kubelet builds it: envFrom Secrets (read through `secret`,
    the pod's namespace), then literal values, which win. valueFrom (field refs, single keys)
    has no local source."""
    env: dict[str, str] = {}
    for source in container.envFrom or []:
        ref = source.secretRef
        if ref is not None and ref.name and secret is not None:
            prefix = source.prefix or ""
            env |= {prefix + k: v for k, v in secret(namespace, ref.name).items()}
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = var.value
        elif var.valueFrom is None:
            env[var.name] = ""
    return env


def _want(pod: Pod, secret: SecretReader | None = None) -> _PodWant | None:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    if meta is None or spec is None or meta.name is None or meta.namespace is None:
        return None
    if meta.deletionTimestamp is not None or not spec.nodeName:
        return None
    if status is None or status.phase != "Running":
        return None
    containers = [c for c in spec.containers if c.name == CONTAINER] or spec.containers[:1]
    if not containers:
        return None
    grace = spec.terminationGracePeriodSeconds
    return _PodWant(
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid or "",
        labels=dict(meta.labels or {}),
        env=pod_env(containers[0], secret, meta.namespace),
        grace_s=30.0 if grace is None else float(grace),
    )


@dataclass
class PodRunner:
    """Polls pods and keeps one `modelserver` process per Running pod.

    `start()` runs the loop in a background thread (or use it as a context manager); `run()`
    runs it in the calling thread until `stop()`.
    """

    kubeconfig: Path
    workdir: Path
    poll_interval_s: float = 0.5
    file_sd_path: Path | None = None
    registry_path: Path | None = None
    python: str = sys.executable
    label_selector: Mapping[str, str] = field(
        default_factory=lambda: {LABEL_MANAGED_BY: MANAGED_BY}
    )
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # None serves every namespace; a set serves only those (tests opt their namespace in, so
    # pods of unrelated tests do not cost a process each).
    namespaces: set[str] | None = None
    # Called with the new registry each time it changes (readiness included), on the runner's
    # thread: the moment the gateway starts or stops routing to a pod.
    on_publish: Callable[[tuple[PodServer, ...]], None] | None = None

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        if self.file_sd_path is None:
            self.file_sd_path = self.workdir / "file_sd" / FILE_SD_NAME
        if self.registry_path is None:
            self.registry_path = self.workdir / REGISTRY_NAME
        self._procs: dict[tuple[str, str], _Proc] = {}
        self._draining: list[_Proc] = []
        self._servers: tuple[PodServer, ...] = ()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._published: str | None = None
        self._api_error = ""
        self._ticks = 0

    # --- public -------------------------------------------------------------------------------

    def servers(self, **filters: Any) -> list[PodServer]:
        """Snapshot of the registry; keyword filters as in `select`."""
        with self._lock:
            current = self._servers
        return select(current, **filters)

    def registry(self) -> dict[str, PodServer]:
        """Pod name -> server (pod names of ReplicaSets are unique in practice)."""
        return {s.pod: s for s in self.servers()}

    def wait_for_servers(
        self,
        namespace: str,
        *,
        deployment: str | None = None,
        revision: str | None = None,
        count: int = 1,
        ready: bool = True,
        timeout: float = 60.0,
    ) -> list[PodServer]:
        """Block until exactly `count` matching servers exist (0 waits for them to go away)."""
        deadline = time.monotonic() + timeout
        filters: dict[str, Any] = {"namespace": namespace, "deployment": deployment}
        filters["revision"] = revision
        with self._changed:
            while True:
                found = select(self._servers, **filters)
                if count > 0 and ready:
                    found = [s for s in found if s.ready]
                if len(found) == count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"waited {timeout}s for {count} server(s) in {namespace} "
                        f"(deployment={deployment}, revision={revision}); have {found}; "
                        f"last API error: {self._api_error or 'none'}"
                    )
                self._changed.wait(min(left, 1.0))

    def serve_namespace(self, namespace: str) -> None:
        with self._lock:
            if self.namespaces is not None:
                self.namespaces.add(namespace)

    def forget_namespace(self, namespace: str) -> None:
        """Stop serving a namespace: its processes are stopped as if its pods were deleted."""
        with self._lock:
            if self.namespaces is not None:
                self.namespaces.discard(namespace)

    def start(self) -> PodRunner:
        if self._thread is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._publish(force=True)  # Prometheus may start before the first pod shows up
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="podrunner", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 5)
            self._thread = None

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def run(self) -> None:
        """The loop; returns after `stop()`, with every process it started gone."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        client = Client(config=KubeConfig.from_file(self.kubeconfig), field_manager="podrunner")
        probe = httpx.Client(timeout=httpx.Timeout(0.5), trust_env=False)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self._tick(client, probe)
                self._stop.wait(max(0.0, self.poll_interval_s - (time.monotonic() - started)))
        finally:
            self._shutdown()
            probe.close()
            self._publish()

    # --- the loop -----------------------------------------------------------------------------

    def _tick(self, client: Client, probe: httpx.Client) -> None:
        self._ticks += 1
        wanted = self._list(client)
        now = time.monotonic()
        if wanted is not None:
            for key, proc in list(self._procs.items()):
                want = wanted.get(key)
                if want is None or want.uid != proc.want.uid:
                    self._begin_stop(self._procs.pop(key), now)
            for key, want in wanted.items():
                if key not in self._procs:
                    self._procs[key] = _Proc(want)
        for proc in self._procs.values():
            self._supervise(proc, probe, now)
        self._reap(now)
        self._publish()

    def _list(self, client: Client) -> dict[tuple[str, str], _PodWant] | None:
        """Pods that should run now, or None when the API server could not say (keep all)."""
        try:
            pods = list(client.list(Pod, namespace=ALL_NS, labels=dict(self.label_selector)))
        except ApiError as exc:
            self._note_api_error(str(exc))
            return None
        except Exception as exc:
            # lightkube's transport errors come from its own HTTP stack; whatever the cause, an
            # unreachable API server must not stop every model server.
            self._note_api_error(f"{type(exc).__name__}: {exc}")
            return None
        self._api_error = ""
        with self._lock:
            served = None if self.namespaces is None else frozenset(self.namespaces)
        wanted: dict[tuple[str, str], _PodWant] = {}
        secret = functools.cache(functools.partial(_read_secret, client))
        for pod in pods:
            want = _want(pod, secret)
            if want is not None and (served is None or want.namespace in served):
                wanted[(want.namespace, want.name)] = want
        return wanted

    def _note_api_error(self, message: str) -> None:
        if message != self._api_error:
            log.warning("listing pods failed (keeping current processes): %s", message)
        self._api_error = message

    def _supervise(self, proc: _Proc, probe: httpx.Client, now: float) -> None:
        if proc.popen is not None and proc.popen.poll() is not None:
            code = proc.popen.returncode
            proc.restarts += 1
            # Like the kubelet's CrashLoopBackOff, shorter: 1 s, 2 s, 4 s ... 30 s.
            delay = min(30.0, 2.0 ** (proc.restarts - 1))
            log.warning(
                "%s/%s exited with %s; restart %d in %.0fs (log: %s)",
                proc.want.namespace,
                proc.want.name,
                code,
                proc.restarts,
                delay,
                self._log_path(proc.want),
            )
            proc.popen, proc.ready, proc.next_start = None, False, now + delay
        if proc.popen is None:
            if now >= proc.next_start:
                self._spawn(proc)
            return
        try:
            resp = probe.get(f"http://127.0.0.1:{proc.port}/v2/health/ready")
            proc.ready = resp.status_code == 200
        except httpx.HTTPError:
            proc.ready = False

    def _spawn(self, proc: _Proc) -> None:
        want = proc.want
        proc.port, proc.metrics_port = free_port(), free_port()
        grpc_wanted = want.env.get("MODELSERVER_GRPC_PORT", "0") not in ("", "0")
        proc.grpc_port = free_port() if grpc_wanted else 0
        model_dir = self._model_dir(want)
        model_dir.mkdir(parents=True, exist_ok=True)
        # The host's own MODELSERVER_* settings must not leak into a pod's server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVER_")}
        env |= want.env
        env |= {
            "MODELSERVER_HOST": "127.0.0.1",
            "MODELSERVER_PORT": str(proc.port),
            "MODELSERVER_METRICS_PORT": str(proc.metrics_port),
            "MODELSERVER_GRPC_PORT": str(proc.grpc_port),
            "MODELSERVER_MODEL_DIR": str(model_dir),
            # One intra-op thread stands for a small pod and keeps a 2-core host usable.
            "MODELSERVER_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env |= self.extra_env
        log_path = self._log_path(want)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            out.write(f"--- start {time.strftime('%H:%M:%S')} pod uid {want.uid}\n".encode())
            out.flush()
            proc.popen = subprocess.Popen(
                [self.python, "-m", "modelserver"],
                cwd=model_dir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        proc.ready = False
        log.info(
            "%s/%s: started pid %d on :%d (metrics :%d)",
            want.namespace,
            want.name,
            proc.popen.pid,
            proc.port,
            proc.metrics_port,
        )

    def _begin_stop(self, proc: _Proc, now: float) -> None:
        """The pod is gone or terminating: drain like the kubelet, SIGKILL after the grace."""
        proc.ready = False
        proc.stopping = True
        if proc.popen is None or proc.popen.poll() is not None:
            self._cleanup(proc)
            return
        log.info("%s/%s: stopping pid %d", proc.want.namespace, proc.want.name, proc.popen.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGTERM)
        proc.kill_at = now + proc.want.grace_s
        self._draining.append(proc)

    def _reap(self, now: float) -> None:
        for proc in list(self._draining):
            assert proc.popen is not None
            if proc.popen.poll() is None and now >= proc.kill_at:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
            if proc.popen.poll() is not None:
                self._draining.remove(proc)
                self._cleanup(proc)

    def _cleanup(self, proc: _Proc) -> None:
        shutil.rmtree(self._model_dir(proc.want), ignore_errors=True)

    def _shutdown(self) -> None:
        """Runner stopping: no drain delay. The server stops at once on a second SIGTERM; signals
        sent back to back can merge into one, so repeat until it is gone, then SIGKILL."""
        procs = [p for p in (*self._procs.values(), *self._draining) if p.popen is not None]
        deadline = time.monotonic() + 5
        while True:
            alive = [p for p in procs if p.popen is not None and p.popen.poll() is None]
            if not alive or time.monotonic() >= deadline:
                break
            for proc in alive:
                assert proc.popen is not None
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        for proc in procs:
            assert proc.popen is not None
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait()
            self._cleanup(proc)
        self._procs.clear()
        self._draining.clear()

    # --- publishing ---------------------------------------------------------------------------

    def _snapshot(self) -> tuple[PodServer, ...]:
        out = []
        # Draining processes are still scraped (their last counts matter), never routed to.
        for proc in (*self._procs.values(), *self._draining):
            if proc.popen is None or proc.popen.poll() is not None:
                continue
            want = proc.want
            out.append(
                PodServer(
                    namespace=want.namespace,
                    pod=want.name,
                    deployment=want.labels.get(LABEL_DEPLOYMENT, ""),
                    revision=want.labels.get(LABEL_REVISION, ""),
                    labels=dict(want.labels),
                    url=f"http://127.0.0.1:{proc.port}",
                    metrics_url=f"http://127.0.0.1:{proc.metrics_port}/metrics",
                    ready=proc.ready and not proc.stopping,
                    pid=proc.popen.pid,
                    log_path=str(self._log_path(want)),
                    grpc_target=f"127.0.0.1:{proc.grpc_port}" if proc.grpc_port else "",
                )
            )
        return tuple(sorted(out, key=lambda s: (s.namespace, s.pod)))

    def _publish(self, force: bool = False) -> None:
        servers = self._snapshot()
        doc = json.dumps([s.to_json() for s in servers], indent=1, sort_keys=True)
        if doc == self._published and not force:
            return
        assert self.file_sd_path is not None
        assert self.registry_path is not None
        write_atomic(self.file_sd_path, json.dumps(file_sd(servers), indent=1))
        write_atomic(self.registry_path, doc)
        with self._changed:
            self._servers = servers
            self._published = doc
            self._changed.notify_all()
        if self.on_publish is not None:
            self.on_publish(servers)

    def _model_dir(self, want: _PodWant) -> Path:
        return self.workdir / "models" / f"{want.namespace}_{want.name}"

    def _log_path(self, want: _PodWant) -> Path:
        return self.workdir / "logs" / f"{want.namespace}_{want.name}.log"


def _read_secret(client: Client, namespace: str, name: str) -> dict[str, str]:
    """A Secret's values, as a kubelet gives them to envFrom; {} when it is missing."""
    try:
        found = client.get(Secret, name, namespace=namespace)
    except ApiError:
        return {}
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (found.data or {}).items()}


def file_sd(servers: Sequence[PodServer]) -> list[dict[str, Any]]:
    """Prometheus file_sd_configs content: one target per pod, labelled like kubernetes_sd
    relabelling would label it."""
    return [
        {
            "targets": [s.metrics_target],
            "labels": {
                "namespace": s.namespace,
                "pod": s.pod,
                "deployment": s.deployment,
                "revision": s.revision,
            },
        }
        for s in servers
    ]


def read_registry(path: Path) -> list[PodServer]:
    """The registry a PodRunner in another process writes (empty while it does not exist)."""
    try:
        docs = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [PodServer.from_json(d) for d in docs]


class RegistryFile:
    """A PodRunner's registry read from its JSON file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._servers: list[PodServer] = []

    def servers(self, **filters: Any) -> list[PodServer]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp, self._servers = stamp, read_registry(self.path)
        return select(self._servers, **filters)


# --- command line -----------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_set(event: threading.Event) -> Iterator[None]:
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: event.set())
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.podrunner", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="work directory (logs, models)")
    parser.add_argument("--file-sd", type=Path, help=f"default: DIR/file_sd/{FILE_SD_NAME}")
    parser.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds")
    args = parser.parse_args(argv)
    # Our own messages only: the HTTP clients log every request at INFO.
    logging.basicConfig(level=logging.WARNING, format="[podrunner] %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    stop = threading.Event()
    runner = PodRunner(
        args.kubeconfig, args.dir, poll_interval_s=args.interval, file_sd_path=args.file_sd
    )
    with _signals_set(stop), runner:
        log.info("file SD: %s; registry: %s", runner.file_sd_path, runner.registry_path)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
