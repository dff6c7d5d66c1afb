"""A real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods become Running/Ready),
and optionally a real node beside them (hack/realnode.py: containerd, kubelet, kube-proxy).

    python -m hack.localcluster up   --dir .cluster   # start in the background, print how to use it
    python -m hack.localcluster run  --dir .cluster   # start in the foreground until Ctrl-C
    python -m hack.localcluster down --dir .cluster   # stop what `up` started
    python -m hack.localcluster up --real-node ...    # with the real node (Linux, root)

Tests use `LocalCluster` directly (see tests/integration/conftest.py). Every child process gets
PR_SET_PDEATHSIG, so nothing outlives the process that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hack import certs as certgen
from hack import nodestop, realnode
from hack.processes import die_with_parent, free_port

REPO = Path(__file__).resolve().parent.parent

# Node shapes registered on every start. The GPU node carries what the NVIDIA device plugin and
# GPU feature discovery would publish on a real node, including the usual taint.
CPU_NODES = ("kwok-cpu-0", "kwok-cpu-1")
GPU_NODES = ("kwok-gpu-0",)


def build_tools(*toolsets: str) -> dict[str, Path]:
    """Build (or find in the cache) these toolsets through hack/build-tools.sh: the folder
    holding each one's binaries, by toolset name."""
    out = subprocess.run(
        [str(REPO / "hack" / "build-tools.sh"), *toolsets],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return {k: Path(v) for k, v in (line.split("=", 1) for line in out.split() if "=" in line)}


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    node: realnode.NodeBinaries | None = None

    @classmethod
    def build(cls, real_node: bool = False) -> Binaries:
        """Build (or find in the cache) every binary through hack/build-tools.sh."""
        toolsets = ["k8s", "etcd", "kwok"] + (["coredns", "metrics-server"] if real_node else [])
        dirs = build_tools(*toolsets)
        k8s = dirs["k8s"]
        node = None
        if real_node:
            node = realnode.NodeBinaries(
                kubelet=k8s / "kubelet",
                kube_proxy=k8s / "kube-proxy",
                coredns=dirs["coredns"] / "coredns",
                metrics_server=dirs["metrics-server"] / "metrics-server",
            )
        return cls(
            etcd=dirs["etcd"] / "etcd",
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=k8s / "kubectl",
            kwok=dirs["kwok"] / "kwok",
            node=node,
        )


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    args: tuple[str, ...] = ()


def controller_workers(controller_qps: int) -> int:
    """kube-controller-manager's Deployment and ReplicaSet workers (each) for an API rate. A
    raised rate only helps if enough workers use it; Kubernetes' 5 each held a 5,000-Deployment
    fleet to about 2 new Deployments a second."""
    return max(5, controller_qps // 10)


def node_manifest(name: str, gpu: bool) -> dict[str, object]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "kwok-gpu" if gpu else "kwok-cpu",
        "type": "kwok",
    }
    allocatable = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    taints: list[dict[str, str]] = []
    if gpu:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": "NVIDIA-A10G",
            "nvidia.com/gpu.count": "4",
        }
        allocatable["nvidia.com/gpu"] = "4"
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }


@dataclass
class LocalCluster:
    directory: Path
    binaries: Binaries
    procs: list[_Proc] = field(default_factory=list)
    api_port: int = 0
    # kube-controller-manager's client rate limit (requests/s); None keeps Kubernetes' default
    # of 20, which gates how fast thousands of Deployments get ReplicaSets and pods.
    controller_qps: int | None = None
    node: realnode.RealNode | None = None
    # What the real node left on the host when it stopped (empty: nothing).
    node_leftovers: dict[str, object] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        # State is ephemeral: each start is a new cluster, so no objects leak between runs.
        for stale in ("etcd", "kcm", "scheduler"):
            shutil.rmtree(self.directory / stale, ignore_errors=True)
        tls = certgen.generate(self.directory / "pki")
        self.api_port = free_port()
        self._write_kubeconfig(tls)
        self._link_tools()
        try:
            if self.binaries.node is not None:
                self.node = realnode.RealNode(self.directory, self.binaries.node, self._spawn)
                self.node.prepare(tls)
                started = time.monotonic()  # a first prepare builds images for minutes
            self._start_etcd()
            self._start_apiserver(tls)
            self._wait_https(f"{self.server}/readyz", deadline=started + timeout, tls=tls)
            self._start_controller_manager(tls)
            self._start_scheduler()
            self._start_kwok()
            self._register_nodes()
            self._wait_nodes_ready(deadline=started + timeout)
            if self.node is not None:
                self.node.start(self.server, tls, self.api_port)
                self.node.register_metrics_api(self.kubectl)
                self.node.wait_ready(self.kubectl, deadline=time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        log(f"control plane ready in {time.monotonic() - started:.1f}s at {self.server}")

    def stop(self) -> None:
        if self.node is not None:
            # While the API server runs, so kubelet can tear the pods down properly.
            self.node.drain(self.kubectl)
            self.node.stop()
            self.node_leftovers = self.node.leftovers
            self.node = None
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        deadline = time.monotonic() + 15
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers for callers -----------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def stop_component(self, name: str, timeout: float = 15.0) -> None:
        """Stop one control-plane process (etcd, kube-apiserver, ...) as an outage would; its
        data directory, port and flags stay, so `start_component` brings the same one back."""
        proc = self._proc(name)
        if proc.popen.poll() is None:
            proc.popen.terminate()
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def start_component(self, name: str) -> None:
        """Start a process stopped by `stop_component` again, with the same flags. Call it from
        a thread that outlives the process: PR_SET_PDEATHSIG fires when the starting thread
        ends, not only the process."""
        proc = self._proc(name)
        if proc.popen.poll() is None:
            return
        # Same place in the list: `stop` tears the control plane down in reverse start order.
        index = self.procs.index(proc)
        self.procs.remove(proc)
        self.procs.insert(index, self._spawn(name, proc.args, append=True))
        self.procs.pop()

    def _proc(self, name: str) -> _Proc:
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise KeyError(f"no control-plane process named {name!r}")

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited:\n{_tail(proc.log_path)}")

    # --- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str | Path], append: bool = False) -> _Proc:
        log_path = self.directory / "logs" / f"{name}.log"
        argv = tuple(str(a) for a in args)
        with log_path.open("ab" if append else "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        proc = _Proc(name, popen, log_path, argv)
        self.procs.append(proc)
        return proc

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                self.binaries.etcd,
                "--name=local",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=local=http://127.0.0.1:{peer}",
                # A throwaway test cluster: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                # 8 GiB rather than the default 2: make bench-scale at 5,000 ModelDeployments
                # keeps tens of thousands of objects plus every revision written between the API
                # server's 5-minute compactions, and a full quota fails every later write.
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, tls: certgen.ClusterCerts) -> None:
        if self.node is not None:
            node_args = self.node.apiserver_args(tls, self.api_port)
        else:
            node_args = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # No kubelets or kube-proxy read the `kubernetes` Service endpoints here.
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
            ]
        self._spawn(
            "kube-apiserver",
            [
                self.binaries.kube_apiserver,
                f"--etcd-servers={self.etcd_url}",
                *node_args,
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.directory / 'pki'}",
                f"--tls-cert-file={tls.serving_cert}",
                f"--tls-private-key-file={tls.serving_key}",
                f"--client-ca-file={tls.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={tls.sa_pub}",
                f"--service-account-signing-key-file={tls.sa_key}",
                f"--service-cluster-ip-range={realnode.SERVICE_CIDR}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controller_manager(self, tls: certgen.ClusterCerts) -> None:
        kc = self.kubeconfig
        self._spawn(
            "kube-controller-manager",
            [
                self.binaries.kube_controller_manager,
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.directory / 'kcm'}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={tls.sa_key}",
                f"--root-ca-file={tls.ca_cert}",
                # Faster garbage collection and ReplicaSet reactions for tests.
                "--concurrent-gc-syncs=10",
                "--v=1",
                *self._controller_rate_flags(),
            ],
        )

    def _controller_rate_flags(self) -> list[str]:
        if self.controller_qps is None:
            return []
        workers = controller_workers(self.controller_qps)
        return [
            f"--kube-api-qps={self.controller_qps}",
            f"--kube-api-burst={2 * self.controller_qps}",
            f"--concurrent-deployment-syncs={workers}",
            f"--concurrent-replicaset-syncs={workers}",
        ]

    def _start_scheduler(self) -> None:
        kc = self.kubeconfig
        self._spawn(
            "kube-scheduler",
            [
                self.binaries.kube_scheduler,
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.directory / 'scheduler'}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _start_kwok(self) -> None:
        self._spawn(
            "kwok",
            [
                self.binaries.kwok,
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{free_port()}",
                # Pod and node IPs are only written into status; nothing routes to them.
                "--cidr=10.244.0.1/16",
                "--node-ip=10.243.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )

    # --- setup -------------------------------------------------------------------------------

    def _write_kubeconfig(self, tls: certgen.ClusterCerts) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(tls.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(tls.admin_cert),
                        "client-key": str(tls.admin_key),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _link_tools(self) -> None:
        bindir = self.directory / "bin"
        bindir.mkdir(exist_ok=True)
        link = bindir / "kubectl"
        link.unlink(missing_ok=True)
        link.symlink_to(self.binaries.kubectl)

    def _wait_https(self, url: str, deadline: float, tls: certgen.ClusterCerts) -> None:
        ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
        ctx.load_cert_chain(str(tls.admin_cert), str(tls.admin_key))
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.3)
        raise TimeoutError(f"{url} not ready: {last}")

    def _register_nodes(self) -> None:
        nodes = [node_manifest(n, gpu=False) for n in CPU_NODES]
        nodes += [node_manifest(n, gpu=True) for n in GPU_NODES]
        manifest = {"apiVersion": "v1", "kind": "List", "items": nodes}
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def _wait_nodes_ready(self, deadline: float) -> None:
        expected = set(CPU_NODES + GPU_NODES)
        while time.monotonic() < deadline:
            self.check_alive()
            ready_path = '{.status.conditions[?(@.type=="Ready")].status}'
            out = self.kubectl(
                "get",
                "nodes",
                "-o",
                f'jsonpath={{range .items[*]}}{{.metadata.name}}={ready_path}{{"\\n"}}{{end}}',
            )
            ready = {line.split("=")[0] for line in out.split() if line.endswith("=True")}
            if expected <= ready:
                return
            time.sleep(0.5)
        raise TimeoutError(f"kwok nodes not Ready: expected {sorted(expected)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- command line -----------------------------------------------------------------------------


def _pid_file(directory: Path) -> Path:
    return directory / "supervisor.pid"


def _leftovers_file(directory: Path) -> Path:
    return directory / "node-leftovers.json"


def _running_pid(directory: Path) -> int | None:
    try:
        pid = int(_pid_file(directory).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def cmd_run(directory: Path, real_node: bool = False) -> int:
    cluster = LocalCluster(directory, Binaries.build(real_node))
    stop = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _pid_file(directory).parent.mkdir(parents=True, exist_ok=True)
    _pid_file(directory).write_text(str(os.getpid()))
    ready = directory / "ready"
    ready.unlink(missing_ok=True)
    try:
        cluster.start()
        ready.write_text(cluster.server)
        while not stop:
            cluster.check_alive()
            time.sleep(0.5)
    finally:
        ready.unlink(missing_ok=True)
        cluster.stop()
        if cluster.node_leftovers:  # for `cluster-down` to report
            _leftovers_file(directory).write_text(json.dumps(cluster.node_leftovers, indent=2))
        _pid_file(directory).unlink(missing_ok=True)
        log("control plane stopped")
    return 0


def cmd_up(directory: Path, real_node: bool = False) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    if _running_pid(directory) and (directory / "ready").exists():
        log(f"already running ({directory / 'kubeconfig'})")
        return 0
    # Build in the foreground so progress is visible; the supervisor then finds the cache.
    Binaries.build(real_node)
    supervisor_log = directory / "supervisor.log"
    node_flag = ["--real-node"] if real_node else []
    with supervisor_log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hack.localcluster", "run", "--dir", str(directory), *node_flag],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    # A first real-node start builds and imports its images.
    deadline = time.monotonic() + (1800 if real_node else 180)
    while not (directory / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log(f"control plane failed to start:\n{_tail(supervisor_log)}")
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            return 1
        time.sleep(0.3)
    kubeconfig = (directory / "kubeconfig").resolve()
    print(
        f"Local control plane is up.\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export PATH={(directory / 'bin').resolve()}:$PATH\n"
        f"  kubectl get nodes\n"
        f"Stop it with: make cluster-down"
    )
    return 0


def cmd_down(directory: Path, real_node: bool = False) -> int:
    pid = _running_pid(directory)
    if pid is None:
        log("not running")
        nodestop.cleanup_after_crash(directory)
        return 0
    _leftovers_file(directory).unlink(missing_ok=True)
    os.kill(pid, signal.SIGTERM)
    # A real node first lets kubelet delete its pods (up to 20 s), then restores the host.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return _stopped(directory)
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    nodestop.cleanup_after_crash(directory)
    return 0


def _stopped(directory: Path) -> int:
    leftovers = _leftovers_file(directory)
    if leftovers.exists():
        log(f"stopped, but the real node left host changes behind:\n{leftovers.read_text()}")
        return 1
    log("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "run", "down"])
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster")
    parser.add_argument(
        "--real-node", action="store_true", help="also run a real node (kubelet, containerd)"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    commands = {"up": cmd_up, "run": cmd_run, "down": cmd_down}
    return commands[args.command](directory, args.real_node)


@contextlib.contextmanager
def running(
    directory: Path, real_node: bool = False, controller_qps: int | None = None
) -> Iterator[LocalCluster]:
    """Start a cluster for the duration of a `with` block (used by the test fixtures)."""
    cluster = LocalCluster(directory, Binaries.build(real_node), controller_qps=controller_qps)
    with cluster:
        yield cluster


if __name__ == "__main__":
    sys.exit(main())
