"""The machine facts every benchmark report ends with: CPU, cores, memory, load average, and
the version of every part a result depends on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def memory_gb() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.0f}"
    except OSError:
        pass
    return "?"


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def versions() -> dict[str, str]:
    """The commit and the version of every part a result depends on."""
    from hack.localcluster import Binaries  # builds or finds the cached control-plane binaries

    b = Binaries.build()
    found = {
        "repo commit": _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "python": platform.python_version(),
        "kube-apiserver": _first_line([str(b.kube_apiserver), "--version"]),
        "etcd": _first_line([str(b.etcd), "--version"]),
        "kwok": _first_line([str(b.kwok), "--version"]),
        "prometheus": _first_line(["prometheus", "--version"]),
    }
    for dist in ("modelrollout", "modelserver", "kopf", "onnxruntime", "httpx", "uvicorn"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "?"
    return found
