"""Processes and load generators shared by the serving benchmarks: pinned servers, wrk, bodies."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
KSERVE_PY = ROOT / "bench" / ".venv-kserve" / "bin" / "python"
MLSERVER_BIN = ROOT / "bench" / ".venv-mlserver" / "bin" / "mlserver"
SERVER_CPU, LOAD_CPU = "0", "1"


@dataclass
class Body:
    path: Path
    header_len: int | None
    content_type: str

    def env(self) -> dict[str, str]:
        env = {"BODY_FILE": str(self.path), "CONTENT_TYPE": self.content_type}
        if self.header_len is not None:
            env["HEADER_LEN"] = str(self.header_len)
        return env

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_len is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_len)
        return headers


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def json_body(path: Path, name: str, x: np.ndarray[Any, Any]) -> Body:
    doc = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    path.write_bytes(orjson.dumps(doc))
    return Body(path, None, "application/json")


def binary_body(path: Path, name: str, x: np.ndarray[Any, Any]) -> Body:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    path.write_bytes(header + x.astype("<f4").tobytes())
    return Body(path, len(header), "application/octet-stream")


class Server:
    def __init__(
        self,
        cmd: list[str],
        env: dict[str, str],
        port: int,
        log: Path,
        metrics_port: int = 0,
        ready_s: float = 120,
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                pinned(SERVER_CPU, cmd), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def modelserver_env(
    model: Path, name: str, work: Path, port: int, metrics_port: int, **settings: str
) -> dict[str, str]:
    """The environment of a benchmarked modelserver: MODELSERVER_* settings (lower-case names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVER_")}
    env.update(
        {
            "MODELSERVER_MODEL_NAME": name,
            "MODELSERVER_MODEL_URI": str(model),
            "MODELSERVER_HOST": "127.0.0.1",
            "MODELSERVER_PORT": str(port),
            "MODELSERVER_METRICS_PORT": str(metrics_port),
            "MODELSERVER_THREADS": "1",
            "MODELSERVER_MODEL_DIR": str(work),
            "MODELSERVER_LOG_LEVEL": "warning",
        }
    )
    env.update({f"MODELSERVER_{k.upper()}": v for k, v in settings.items()})
    return env


def start_modelserver(model: Path, name: str, work: Path, **settings: str) -> Server:
    port, metrics_port = free_port(), free_port()
    env = modelserver_env(model, name, work, port, metrics_port, **settings)
    log = work / f"modelserver-{name}.log"
    return Server([str(BIN / "modelserver")], env, port, log, metrics_port)


def start_kserve(model: Path, name: str, work: Path) -> Server:
    port = free_port()
    cmd = [
        str(KSERVE_PY),
        str(HERE / "kserve_server.py"),
        "--served-name", name,
        "--onnx-path", str(model),
        "--listen-port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return Server(cmd, env, port, work / f"kserve-{name}.log")


def check(url: str, body: Body) -> bool:
    r = httpx.post(url, content=body.path.read_bytes(), headers=body.headers(), timeout=30)
    if r.status_code != 200:
        print(f"  {url} answered {r.status_code}: {r.text[:300]}", file=sys.stderr)
    return r.status_code == 200


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, body: Body, connections: int, seconds: int) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    env = {**os.environ, **body.env()}
    out = subprocess.run(
        pinned(LOAD_CPU, cmd), env=env, capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "connections": connections,
        "rps": rps,
        "p50_ms": _ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",  # type: ignore[dict-item]
    }


def floor_command(model: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The transport floor's command line and environment."""
    cmd = [sys.executable, "-m", "bench.serving.floor", str(model), str(port)]
    return cmd, {**os.environ, "PYTHONPATH": str(ROOT)}


def start_floor(model: Path, work: Path) -> Server:
    port = free_port()
    cmd, env = floor_command(model, port)
    return Server(cmd, env, port, work / "floor.log")


def start_mlserver(model: Path, name: str, work: Path) -> Server:
    """MLServer at its best: httptools, no worker pool (no IPC hop), no metrics endpoint."""
    folder = work / f"mlserver-{name}"
    folder.mkdir(exist_ok=True)
    (folder / "mlserver_model.py").write_bytes((HERE / "mlserver_model.py").read_bytes())
    port = free_port()
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
        "metrics_endpoint": None,
        "debug": False,
    }
    (folder / "settings.json").write_bytes(orjson.dumps(settings))
    model_settings = {
        "name": name,
        "implementation": "mlserver_model.OnnxModel",
        "parameters": {"uri": str(model)},
    }
    (folder / "model-settings.json").write_bytes(orjson.dumps(model_settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return Server([str(MLSERVER_BIN), "start", str(folder)], env, port, work / f"{name}.log")


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run_part(
    title: str,
    compare: Callable[[Path, int], dict[str, Any]],
    report: Callable[[dict[str, Any]], list[str]],
    argv: list[str],
) -> None:
    """One part of ``make bench-serving`` on its own: ``argv`` is [SECONDS] [OUT.md]; the
    report, with the machine and the raw results, is printed and written to OUT.md."""
    import tempfile

    seconds = int(argv[0]) if argv else 5
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        result = compare(Path(tmp), seconds)
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join(
        [
            f"# {title}, {dt.date.today().isoformat()}",
            "",
            f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}; Python "
            f"{info['python']}, onnxruntime {info['onnxruntime']}. Load average "
            f"{info['loadavg_start']} at the start, {info['loadavg_end']} at the end. Server "
            f"pinned to core 0 with one onnxruntime thread, load on core 1, {seconds} s per load.",
            "",
            *report(result),
            "",
            "```json",
            json.dumps(result, indent=1, sort_keys=True),
            "```",
            "",
        ]
    )
    print(text)
    if len(argv) > 1:
        Path(argv[1]).write_text(text)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def with_cpu(
    pid: int, seconds: int, load: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """``load(*args)``'s result with the server's CPU time per request over it: that holds
    still when neighbours take the core, where req/s does not."""
    before = cpu_seconds(pid)
    result = load(*args)
    cpu = cpu_seconds(pid) - before
    result["cpu_us_per_req"] = cpu / max(1.0, result["rps"] * seconds) * 1e6
    return result
