"""The real ``modelserver`` entry point as a child process on loopback ports."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hack.processes import free_port

# Startup costs the server about 1 s of CPU (imports, onnxruntime session). On a loaded machine
# the wall time to ready is whatever the scheduler grants (15 s seen on 2 shared cores), so the
# wait is bounded by the CPU the server spent: one that used this much without becoming ready
# is broken, one that was starved is not. The wall bound only stops a server that hangs idle.
STARTUP_CPU_S = 20.0
STARTUP_WALL_S = 300.0

ENTRY_POINT = Path(sys.executable).parent / "modelserver"


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    grpc_port: int = 0

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def inflight(self) -> float:
        """The server's modelserver_inflight_requests gauge (REST and gRPC together)."""
        text = httpx.get(f"{self.metrics}/metrics", timeout=10).text
        gauge = "modelserver_inflight_requests{"
        (line,) = [x for x in text.splitlines() if x.startswith(gauge)]
        return float(line.rsplit(" ", 1)[1])


async def until(check: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    """Poll `check` in a thread (the test's own requests go on in the event loop) until it
    returns something truthy. For events, not for speed: the bound is generous."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.02)


@contextmanager
def running_server(
    model: Path, tmp_path: Path, *, grpc: bool = False, **settings: str
) -> Iterator[ServerProcess]:
    """Start the server with MODELSERVER_* ``settings`` (lower-case names), wait until ready."""
    port, metrics_port = free_port(), free_port()
    grpc_port = free_port() if grpc else 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVER_")}
    env.update(
        {
            "MODELSERVER_MODEL_NAME": "mlp",
            "MODELSERVER_MODEL_URI": str(model),
            "MODELSERVER_HOST": "127.0.0.1",
            "MODELSERVER_PORT": str(port),
            "MODELSERVER_METRICS_PORT": str(metrics_port),
            "MODELSERVER_THREADS": "1",
            "MODELSERVER_MODEL_DIR": str(tmp_path),
            "MODELSERVER_GRPC_PORT": str(grpc_port),
        }
    )
    env.update({f"MODELSERVER_{k.upper()}": v for k, v in settings.items()})
    log_path = tmp_path / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(ENTRY_POINT)], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(proc, port, metrics_port, log_path, grpc_port)
    try:
        wait_ready(server)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(server: ServerProcess) -> None:
    """Poll readiness until 200, the process exits, or it has spent STARTUP_CPU_S of CPU (or
    STARTUP_WALL_S have passed) without becoming ready."""
    started = time.monotonic()
    while True:
        try:
            # A starved server may take long to answer: a timeout only means poll again.
            if httpx.get(f"{server.base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert server.proc.poll() is None, server.log()
        cpu, wall = cpu_seconds(server.proc.pid), time.monotonic() - started
        if cpu > STARTUP_CPU_S or wall > STARTUP_WALL_S:
            pytest.fail(f"server not ready after {cpu:.1f} s of CPU, {wall:.0f} s: {server.log()}")
        time.sleep(0.05)


# Raw HTTP/1.1 on a socket, for tests that watch a connection itself (kept alive, closed,
# pipelined) rather than what a client library makes of it.


def raw_post(target: bytes, body: bytes, *headers: bytes) -> bytes:
    """A JSON POST as bytes on the wire, with more header lines if given."""
    head = [b"POST " + target + b" HTTP/1.1", b"host: x", b"content-type: application/json"]
    head += [b"content-length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def read_answer(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One response off a kept-alive connection: (head, body, what came after it)."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        rest += chunk
    return head, rest[:length], rest[length:]


def closed(sock: socket.socket) -> bool:
    """The server closed the connection (what is left to read is its end)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
