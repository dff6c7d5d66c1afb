"""REST beside gRPC on one modelserver process: the tabular model of peers.py, both ports on.

REST: wrk with the JSON body (as in peers.py). gRPC: k6's gRPC client with the input as
``raw_input_contents``, one connection per virtual user. One connection for the unloaded p50,
32 for saturation; rounds interleave the protocols. The two load generators differ, so the
judged figure is the server's CPU time per request, which does not depend on the client.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from tests.serving.serving_models import mlp

from .rig import (
    BIN,
    HERE,
    LOAD_CPU,
    ROOT,
    check,
    free_port,
    json_body,
    pinned,
    run_part,
    run_wrk,
    with_cpu,
)
from .rig import start_modelserver as _start

NAME = "tabular"
SAT_CONNS = 32
PROTO_DIR = ROOT / "serving-image" / "modelserver" / "proto"


def run_k6_grpc(
    target: str, raw: Path, shape: list[int], vus: int, seconds: int, work: Path
) -> dict[str, float]:
    out = work / "k6-grpc-summary.json"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PROTO_DIR": str(PROTO_DIR),
        "RAW_FILE": str(raw),
        "MODEL": NAME,
        "INPUT": "features",
        "SHAPE": json.dumps(shape),
        "VUS": str(vus),
        "DURATION": str(seconds),
        "TARGET": target,
        "OUT": str(out),
        "K6_NO_USAGE_REPORT": "true",
    }
    cmd = [str(BIN / "k6"), "run", "--quiet", "--no-color", str(HERE / "grpc_load.js")]
    subprocess.run(
        pinned(LOAD_CPU, cmd), env=env, check=False,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    duration = metrics["grpc_req_duration"]["values"]
    return {
        "connections": vus,
        "rps": metrics["iterations"]["values"]["rate"],
        "requests": metrics["iterations"]["values"]["count"],
        "p50_ms": duration["med"],
        "p99_ms": duration["p(99)"],
        "failed": metrics["checks"]["values"]["fails"],
    }


def compare(work: Path, seconds: int, rounds: int = 2) -> dict[str, Any]:
    model = mlp(work / "protocols.onnx", features=64, hidden=256, classes=10)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    body = json_body(work / "protocols.json", "features", x)
    raw = work / "protocols.raw"
    raw.write_bytes(x.astype("<f4").tobytes())
    grpc_port = free_port()
    srv = _start(model, NAME, work, grpc_port=str(grpc_port))
    target = f"127.0.0.1:{grpc_port}"
    url = f"{srv.base}/v2/models/{NAME}/infer"
    runs: dict[str, list[dict[str, Any]]] = {"rest": [], "grpc": []}
    try:
        assert check(url, body)
        for round_no in range(rounds):
            for proto in ("rest", "grpc"):
                print(f"protocols round {round_no + 1}: {proto}", flush=True)

                def load(conns: int, proto: str = proto) -> dict[str, Any]:
                    if proto == "rest":
                        return run_wrk(url, body, conns, seconds)
                    return run_k6_grpc(target, raw, list(x.shape), conns, seconds, work)

                one = load(1)
                sat = with_cpu(srv.proc.pid, seconds, load, SAT_CONNS)
                runs[proto].append({"one": one, "sat": sat})
    finally:
        srv.stop()
    return {"rounds": rounds, "runs": runs}


def report(r: dict[str, Any]) -> list[str]:
    lines = [
        "## REST and gRPC on one modelserver (tabular MLP 64->256->10, [1,64] FP32)",
        "",
        "REST: JSON body, wrk. gRPC: `raw_input_contents`, k6's gRPC client, one connection per "
        "virtual user. Per round: req/s at 32 connections, the server's CPU time per request "
        "over that run, p50 at one connection, p99 at 32 connections; gRPC as a ratio to REST "
        "in the same round (CPU per request: lower is cheaper).",
        "",
        "| protocol | round | req/s (32 conns) | vs REST | CPU us/req | vs REST "
        "| p50 ms (1 conn) | vs REST | p99 ms (32 conns) | vs REST | failed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rest = r["runs"]["rest"]
    for proto, rounds in r["runs"].items():
        for i, run in enumerate(rounds):
            one, sat = run["one"], run["sat"]
            b1, bs = rest[i]["one"], rest[i]["sat"]
            failed = sat.get("failed", sat.get("non_2xx", 0))
            lines.append(
                f"| {proto} | {i + 1} | {sat['rps']:.0f} | {sat['rps'] / bs['rps']:.0%} "
                f"| {sat['cpu_us_per_req']:.0f} "
                f"| {sat['cpu_us_per_req'] / bs['cpu_us_per_req']:.2f}x "
                f"| {one['p50_ms']:.3f} | {one['p50_ms'] / b1['p50_ms']:.2f}x "
                f"| {sat['p99_ms']:.2f} | {sat['p99_ms'] / bs['p99_ms']:.2f}x | {failed} |"
            )
    return lines


def main() -> None:
    """Only this comparison: python -m bench.serving.protocols [SECONDS] [OUT.md]."""
    import sys

    run_part("REST and gRPC", compare, report, sys.argv[1:])


if __name__ == "__main__":
    main()
