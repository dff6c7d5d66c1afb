"""The transport floor, modelserver, MLServer and KServe on one tabular model, side by side.

Each server in turn on core 0 (one onnxruntime thread), wrk on core 1: one connection for the
unloaded p50, then 32 connections for saturation throughput and p99; every server once per
round, rounds interleaved, so a change in the machine's load touches all of them alike.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.serving.serving_models import mlp

from .rig import (
    KSERVE_PY,
    MLSERVER_BIN,
    Body,
    Server,
    check,
    json_body,
    run_wrk,
    start_floor,
    start_kserve,
    start_mlserver,
    start_modelserver,
    with_cpu,
)

NAME = "tabular"
SAT_CONNS = 32
COUNTED = "modelserver+counters"


def _starters(model: Path, work: Path) -> dict[str, Callable[[], Server]]:
    starters: dict[str, Callable[[], Server]] = {
        "floor": lambda: start_floor(model, work),
        # The floor target is judged without the output and input counters, and again with them
        # (the server's default) against a target of their own.
        "modelserver": lambda: start_modelserver(model, NAME, work, distribution="false"),
        COUNTED: lambda: start_modelserver(model, NAME, work),
    }
    if MLSERVER_BIN.exists():
        starters["mlserver"] = lambda: start_mlserver(model, NAME, work)
    if KSERVE_PY.exists():
        starters["kserve"] = lambda: start_kserve(model, NAME, work)
    return starters


def tabular(work: Path) -> tuple[Path, Body]:
    """The model and request of this comparison: an MLP 64->256->10, one [1,64] FP32 row."""
    model = mlp(work / "tabular.onnx", features=64, hidden=256, classes=10)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    return model, json_body(work / "tabular.json", "features", x)


def compare(work: Path, seconds: int, rounds: int = 2) -> dict[str, Any]:
    model, body = tabular(work)
    results: dict[str, Any] = {"rounds": rounds, "runs": {}, "mlserver": _mlserver_version()}
    for round_no in range(rounds):
        for who, start in _starters(model, work).items():
            print(f"peers round {round_no + 1}: {who}", flush=True)
            srv = start()
            try:
                url = f"{srv.base}/v2/models/{NAME}/infer"
                assert check(url, body), who
                one = run_wrk(url, body, 1, seconds)
                sat = with_cpu(srv.proc.pid, seconds, run_wrk, url, body, SAT_CONNS, seconds)
            finally:
                srv.stop()
            results["runs"].setdefault(who, []).append({"one": one, "sat": sat})
    return results


def _mlserver_version() -> str:
    if not MLSERVER_BIN.exists():
        return "not installed"
    python = MLSERVER_BIN.parent / "python"
    code = "from importlib.metadata import version as v; print(v('mlserver'), v('httptools'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    mlserver, _, httptools = out.stdout.strip().partition(" ")
    return f"{mlserver} with httptools {httptools}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(r: dict[str, Any]) -> list[str]:
    runs = r["runs"]
    floor = runs["floor"]
    lines = [
        "## Transport floor and peers (tabular MLP 64->256->10, two outputs, [1,64] FP32 JSON)",
        "",
        f"MLServer {r['mlserver']}, no worker pool (`parallel_workers: 0`), no metrics "
        "endpoint; KServe as in the table above. `modelserver` runs without the output and "
        "input counters (`MODELSERVER_DISTRIBUTION=false`), `modelserver+counters` with them "
        "(the default: output bins, no reference profile). "
        "Per round: req/s at 32 connections, the server's CPU time per request over that run "
        "(user + system, from /proc: it holds still when neighbours take the core, where req/s "
        "does not), p50 at one connection, p99 at 32 connections; ratios to the floor of the "
        "same round.",
        "",
        "| server | round | req/s (32 conns) | vs floor | CPU us/req | vs floor "
        "| p50 ms (1 conn) | vs floor | p99 ms (32 conns) | vs floor | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for who, rounds in runs.items():
        for i, run in enumerate(rounds):
            one, sat = run["one"], run["sat"]
            base_one, base_sat = floor[i]["one"], floor[i]["sat"]
            lines.append(
                f"| {who} | {i + 1} | {sat['rps']:.0f} | {sat['rps'] / base_sat['rps']:.0%} "
                f"| {sat['cpu_us_per_req']:.0f} "
                f"| {_ratio(sat['cpu_us_per_req'], base_sat['cpu_us_per_req'])} "
                f"| {one['p50_ms']:.3f} | {_ratio(one['p50_ms'], base_one['p50_ms'])} "
                f"| {sat['p99_ms']:.2f} | {_ratio(sat['p99_ms'], base_sat['p99_ms'])} "
                f"| {sat['non_2xx'] + one['non_2xx']} |"
            )
    return lines


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for modelserver against the floor, on its worst round.

    Saturation is judged on CPU time per request (the floor's over ours: the throughput each
    would reach on a core of its own), because req/s swings with the neighbours' load.
    """
    pairs = list(zip(r["runs"]["modelserver"], r["runs"]["floor"], strict=True))
    sat, rps = _saturation(pairs)
    p50 = max(m["one"]["p50_ms"] / f["one"]["p50_ms"] for m, f in pairs)
    p99 = max(m["sat"]["p99_ms"] / f["sat"]["p99_ms"] for m, f in pairs)
    out = [
        (
            "tabular: saturation >= 95% of the floor (CPU per request, worst round)",
            f"{sat:.0%} (wrk req/s ratios per round: {rps})",
            sat >= 0.95,
        ),
        (
            "tabular: p50 at one connection <= 1.2x the floor's (worst round)",
            f"{p50:.2f}x",
            p50 <= 1.2,
        ),
        ("tabular: p99 at saturation <= 1.5x the floor's (worst round)", f"{p99:.2f}x", p99 <= 1.5),
    ]
    if COUNTED in r["runs"]:
        counted = list(zip(r["runs"][COUNTED], r["runs"]["floor"], strict=True))
        sat, rps = _saturation(counted)
        out.append(
            (
                "tabular, output counters on: saturation >= 90% of the floor (worst round)",
                f"{sat:.0%} (wrk req/s ratios per round: {rps})",
                sat >= 0.90,
            )
        )
    return out


def _saturation(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[float, str]:
    """The worst round's floor CPU per request over ours, and every round's req/s ratio."""
    sat = min(f["sat"]["cpu_us_per_req"] / m["sat"]["cpu_us_per_req"] for m, f in pairs)
    rps = ", ".join(f"{m['sat']['rps'] / f['sat']['rps']:.0%}" for m, f in pairs)
    return sat, rps


def main() -> None:
    """Only this comparison, e.g. while profiling: python -m bench.serving.peers [SECONDS]."""
    import sys
    import tempfile

    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        result = compare(Path(tmp), seconds, rounds=1)
    print("\n".join(report(result)))


if __name__ == "__main__":
    main()
