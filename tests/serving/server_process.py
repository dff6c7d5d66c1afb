"""The real ``modelserver`` entry point as a child process on loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ENTRY_POINT = Path(sys.executable).parent / "modelserver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, server.log()
            time.sleep(0.05)
        else:
            pytest.fail("server did not become ready: " + server.log())
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
