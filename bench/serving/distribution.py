"""The cost of the output and input counters (modelserver/distribution.py) on one process.

The tabular model of protocols.py (MLP 64->256->10, [1,64] FP32, JSON body), three ways,
interleaved per round: counters off (``MODELSERVER_DISTRIBUTION=false``), on with the default
output bins, and on with a reference profile binning its 16 first input features in 10 bins.
Judged: requests per second at 32 connections and the server's CPU time per request, as ratios
to "off" in the same round (the machine is shared: minutes apart, absolute numbers drift).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.serving.serving_models import mlp

from .rig import check, json_body, run_part, run_wrk, with_cpu
from .rig import start_modelserver as _start

NAME = "tabular"
SAT_CONNS = 32
MODES = ("off", "outputs", "outputs+inputs")


def _profile(path: Path) -> Path:
    edges = [round(float(e), 2) for e in np.linspace(-2, 2, 9)]
    features = [{"index": i, "edges": edges} for i in range(16)]
    doc = {
        "format": "modelrollout.io/reference-profile",
        "version": 1,
        "inputs": [{"name": "features", "features": features}],
    }
    path.write_text(json.dumps(doc))
    return path


def hot_path_us(profile: Path, calls: int = 32_000) -> dict[str, float]:
    """Microseconds per request spent in ``Distribution.record`` (flushes included), in this
    process: steadier than the servers' throughput on a shared machine."""
    import timeit

    from modelserver.distribution import Distribution
    from modelserver.reference import parse_profile

    out_shapes = {"logits": ("FP32", (-1, 10)), "probabilities": ("FP32", (-1, 10))}
    rng = np.random.default_rng(0)
    outputs = {k: rng.random((1, 10)).astype(np.float32) for k in out_shapes}
    feeds = {"features": rng.standard_normal((1, 64)).astype(np.float32)}
    ident = ["m", "1", "r", "stable"]
    result = {}
    for mode, ref in (("outputs", None), ("outputs+inputs", parse_profile(profile.read_bytes()))):
        d = Distribution(ident, out_shapes, {"features": ("FP32", (-1, 64))}, ref)

        def one(d: Distribution = d) -> None:
            d.record(feeds, outputs)

        seconds = min(timeit.repeat(one, number=calls, repeat=3))
        result[mode] = seconds / calls * 1e6
    return result


def compare(work: Path, seconds: int, rounds: int = 2) -> dict[str, Any]:
    model = mlp(work / "distribution.onnx", features=64, hidden=256, classes=10)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    body = json_body(work / "distribution.json", "features", x)
    profile = _profile(work / "profile.json")
    settings = {
        "off": {"distribution": "false"},
        "outputs": {},
        "outputs+inputs": {"reference_uri": str(profile)},
    }
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for round_no in range(rounds):
        for mode in MODES:
            print(f"distribution round {round_no + 1}: {mode}", flush=True)
            srv = _start(model, NAME, work, **settings[mode])
            url = f"{srv.base}/v2/models/{NAME}/infer"
            try:
                assert check(url, body)
                run_wrk(url, body, SAT_CONNS, min(2, seconds))  # warm up
                sat = with_cpu(srv.proc.pid, seconds, run_wrk, url, body, SAT_CONNS, seconds)
                runs[mode].append(sat)
            finally:
                srv.stop()
    return {"rounds": rounds, "runs": runs, "hot_path_us": hot_path_us(profile)}


def report(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Output and input counters (tabular MLP 64->256->10, [1,64] FP32, JSON)",
        "",
        "One modelserver process per mode, modes interleaved per round: counters off, the "
        "default output bins (2 outputs of 10 classes), and a reference profile adding 16 input "
        "features of 10 bins. req/s at 32 connections and the server's CPU time per request, as "
        "ratios to off in the same round.",
        "",
        "| counters | round | req/s (32 conns) | vs off | CPU us/req | vs off | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    off = r["runs"]["off"]
    hot = r.get("hot_path_us", {})
    if hot:
        cpu_off = min(x["cpu_us_per_req"] for x in off)
        lines[-2:-2] = [
            "In-process, `Distribution.record` per request (best of 3 x 32,000 calls, flushes "
            "included): "
            + ", ".join(
                f"{mode} {us:.1f} us ({us / cpu_off:.1%} of the lowest CPU us/req off)"
                for mode, us in hot.items()
            )
            + ".",
            "",
        ]
    for mode, rounds in r["runs"].items():
        for i, sat in enumerate(rounds):
            base = off[i]
            lines.append(
                f"| {mode} | {i + 1} | {sat['rps']:.0f} | {sat['rps'] / base['rps']:.1%} "
                f"| {sat['cpu_us_per_req']:.0f} "
                f"| {sat['cpu_us_per_req'] / base['cpu_us_per_req']:.3f}x "
                f"| {sat['p99_ms']:.2f} |"
            )
    return lines


def main() -> None:
    """Only this comparison: python -m bench.serving.distribution [SECONDS] [OUT.md]."""
    import sys

    run_part("Output and input counters", compare, report, sys.argv[1:])


if __name__ == "__main__":
    main()
