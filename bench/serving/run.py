"""Serving benchmark: modelserver beside raw onnxruntime, the floor, MLServer and KServe, and
its REST beside its gRPC.

Each server gets core 0 and one intra-op thread (it stands for a 1-vCPU pod); the load
generator gets core 1. The machine is shared and noisy, so results are reported as ratios
between measurements taken minutes apart in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from tests.serving.serving_models import cnn, mlp, parameter_count

from . import distribution, instructions, peers, protocols
from .rig import (
    BIN,
    HERE,
    KSERVE_PY,
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    Body,
    binary_body,
    check,
    json_body,
    machine,
    pinned,
    run_wrk,
    start_kserve,
    start_modelserver,
)


def _mean_batch(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=5).text
    total = re.search(r"^modelserver_batch_size_sum\{.*\} (\S+)$", text, re.M)
    count = re.search(r"^modelserver_batch_size_count\{.*\} (\S+)$", text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return 0.0
    return float(total.group(1)) / float(count.group(1))


def run_k6(url: str, body: Body, rate: int, seconds: int, work: Path) -> dict[str, float]:
    out = work / "k6-summary.json"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        **body.env(),
        **{"URL": url, "RATE": str(rate), "DURATION": str(seconds), "OUT": str(out)},
        **{"VUS": "50", "MAX_VUS": "300", "K6_NO_USAGE_REPORT": "true"},
    }
    subprocess.run(
        pinned(LOAD_CPU, [str(BIN / "k6"), "run", "--quiet", "--no-color", str(HERE / "load.js")]),
        env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    duration = metrics["http_req_duration"]["values"]
    return {
        "rate": rate,
        "p50_ms": duration["med"],
        "p99_ms": duration["p(99)"],
        "requests": metrics["http_reqs"]["values"]["count"],
        "failed_ratio": metrics["http_req_failed"]["values"]["rate"],
        "dropped_iterations": metrics.get("dropped_iterations", {})
        .get("values", {})
        .get("count", 0),
    }


def run_raw(model: Path, batch: int, seconds: float) -> dict[str, float]:
    cmd = [
        sys.executable,
        str(HERE / "raw.py"),
        str(model),
        "--batch",
        str(batch),
        "--seconds",
        str(seconds),
    ]
    out = subprocess.run(pinned(SERVER_CPU, cmd), capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def kserve_version() -> str:
    out = subprocess.run(
        [str(KSERVE_PY), "-c", "from importlib.metadata import version; print(version('kserve'))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() or "not installed"


def bench(seconds: int, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "kserve": kserve_version(),
        "seconds": seconds,
    }
    small_model = mlp(work / "small.onnx")
    medium_model = cnn(work / "medium.onnx")
    results["params"] = {
        "small": parameter_count(small_model),
        "medium": parameter_count(medium_model),
    }
    rng = np.random.default_rng(0)
    small_body = json_body(
        work / "small.json", "features", rng.standard_normal((1, 16)).astype(np.float32)
    )
    image = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    medium_bin = binary_body(work / "medium.bin", "image", image)
    medium_json = json_body(work / "medium.json", "image", image)

    print("raw onnxruntime", flush=True)
    results["raw_small"] = run_raw(small_model, 1, 5)
    results["raw_medium_b32"] = run_raw(medium_model, 32, 8)
    results["raw_medium_b1"] = run_raw(medium_model, 1, 5)

    small_rate, small_conns = 500, 16
    medium_rate = max(10, int(results["raw_medium_b32"]["rows_per_s"] * 0.5))
    medium_conns = 64

    print("modelserver, small model", flush=True)
    srv = start_modelserver(small_model, "small", work)
    try:
        url = f"{srv.base}/v2/models/small/infer"
        assert check(url, small_body)
        results["ms_small_fixed"] = run_k6(url, small_body, small_rate, seconds, work)
        results["ms_small_sat"] = run_wrk(url, small_body, small_conns, seconds)
    finally:
        srv.stop()

    print("modelserver, medium model", flush=True)
    srv = start_modelserver(medium_model, "medium", work, batch_max_size="32", batch_window_ms="5")
    try:
        url = f"{srv.base}/v2/models/medium/infer"
        assert check(url, medium_bin)
        results["ms_medium_fixed"] = run_k6(url, medium_bin, medium_rate, seconds, work)
        results["ms_medium_sat"] = run_wrk(url, medium_bin, medium_conns, seconds)
        results["ms_medium_mean_batch"] = _mean_batch(srv.metrics_url)
    finally:
        srv.stop()

    if KSERVE_PY.exists():
        print("kserve, small model", flush=True)
        srv = start_kserve(small_model, "small", work)
        try:
            url = f"{srv.base}/v2/models/small/infer"
            assert check(url, small_body)
            results["ks_small_fixed"] = run_k6(url, small_body, small_rate, seconds, work)
            results["ks_small_sat"] = run_wrk(url, small_body, small_conns, seconds)
        finally:
            srv.stop()
        print("kserve, medium model", flush=True)
        srv = start_kserve(medium_model, "medium", work)
        try:
            url = f"{srv.base}/v2/models/medium/infer"
            body = medium_bin if check(url, medium_bin) else medium_json
            results["ks_medium_body"] = "binary" if body is medium_bin else "json"
            assert check(url, body)
            results["ks_medium_fixed"] = run_k6(url, body, medium_rate, seconds, work)
            results["ks_medium_sat"] = run_wrk(url, body, medium_conns, seconds)
        finally:
            srv.stop()
    results["peers"] = peers.compare(work, seconds)
    model, body = peers.tabular(work)
    results["instructions"] = instructions.compare(model, peers.NAME, body, work)
    results["protocols"] = protocols.compare(work, seconds)
    results["distribution"] = distribution.compare(work, seconds)
    results["json_decode_224_ms"] = _decode_cost()
    results["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return results


def _decode_cost() -> float:
    """Milliseconds to parse one 1x3x224x224 image from a JSON tensor (why images go binary)."""
    image = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    raw = orjson.dumps({"data": image.ravel().tolist()})
    start = time.perf_counter()
    for _ in range(5):
        np.asarray(orjson.loads(raw)["data"], dtype=np.float32)
    return (time.perf_counter() - start) / 5 * 1000


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fixed(model: str, who: str, x: dict[str, Any] | None, seconds: int) -> str:
    if x is None:
        return _row(model, who, "fixed rate", "not run", "", "", "")
    return _row(
        model,
        who,
        f"k6 {x['rate']}/s",
        f"{x['requests'] / seconds:.0f}",
        f"{x['p50_ms']:.3f}",
        f"{x['p99_ms']:.3f}",
        f"{x['dropped_iterations']:.0f} / {x['failed_ratio']:.1%}",
    )


def _sat(model: str, who: str, x: dict[str, Any] | None) -> str:
    if x is None:
        return _row(model, who, "saturation", "not run", "", "", "")
    return _row(
        model,
        who,
        f"wrk {x['connections']} conns",
        f"{x['rps']:.0f}",
        f"{x['p50_ms']:.3f}",
        f"{x['p99_ms']:.3f}",
        f"- / {x['non_2xx']} non-2xx",
    )


def _raw(model: str, x: dict[str, Any], unit: str) -> str:
    return _row(
        model,
        "raw session.run",
        f"loop, batch {x['batch']}",
        f"{x['rows_per_s']:.0f} {unit}",
        f"{x['p50_ms']:.3f}",
        f"{x['p99_ms']:.3f}",
        "",
    )


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    raw_s, raw_m32 = r["raw_small"], r["raw_medium_b32"]
    msf, mss, mms = r["ms_small_fixed"], r["ms_small_sat"], r["ms_medium_sat"]
    kss = r.get("ks_small_sat")
    ks_rps = kss["rps"] if kss else float("nan")
    overhead = msf["p50_ms"] - raw_s["p50_ms"]
    vs_kserve = mss["rps"] / ks_rps
    vs_raw_batched = mms["rps"] / raw_m32["rows_per_s"]
    ks_medium = f"KServe ({r.get('ks_medium_body', '-')} body)"
    secs = r["seconds"]
    lines = [
        f"# Serving benchmark, {r['date']}",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, kserve {r['kserve']}. Load average "
        f"{m['loadavg_start']} at the start, {m['loadavg_end']} at the end (the machine is "
        "shared, so compare the ratios rather than the absolute numbers).",
        "",
        "Method: every server pinned to core 0 (`taskset -c 0`) with one onnxruntime intra-op "
        "thread; the load generator pinned to core 1. Fixed rate: k6 `constant-arrival-rate`; "
        f"saturation: wrk, one thread. {secs} s per load. Small model: tabular MLP "
        f"({r['params']['small']} parameters), 1x16 FP32 JSON request. Medium model: CNN "
        f"({r['params']['medium']:,} parameters), one 1x3x64x64 FP32 image per request with "
        "the binary tensor extension; modelserver batches dynamically up to 32 (5 ms window), "
        "KServe's ModelServer has no batching of its own. Raw: `session.run` in a loop in one "
        "process on core 0. Latencies are as the load generator saw them.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        _row(
            "small: p50 overhead over raw `session.run` <= 1 ms",
            f"{overhead:.3f} ms ({msf['p50_ms']:.3f} vs {raw_s['p50_ms']:.3f} ms)",
            verdict(overhead <= 1.0),
        ),
        _row(
            "small: throughput >= 1.5x KServe ModelServer",
            f"{vs_kserve:.2f}x ({mss['rps']:.0f} vs {ks_rps:.0f} req/s)",
            verdict(vs_kserve >= 1.5),
        ),
        _row(
            "medium: dynamic batching to 32 >= 80% of raw batch-32 `session.run`",
            f"{vs_raw_batched:.0%} ({mms['rps']:.0f} vs {raw_m32['rows_per_s']:.0f} images/s)",
            verdict(vs_raw_batched >= 0.8),
        ),
        *(_row(goal, measured, verdict(ok)) for goal, measured, ok in peers.targets(r["peers"])),
        *(
            _row(goal, measured, verdict(ok))
            for goal, measured, ok in instructions.targets(r.get("instructions", {}))
        ),
        "",
        *peers.report(r["peers"]),
        "",
        *(instructions.report(r["instructions"]) if "instructions" in r else []),
        "",
        *(protocols.report(r["protocols"]) if "protocols" in r else []),
        "",
        *(distribution.report(r["distribution"]) if "distribution" in r else []),
        "",
        "## Measurements",
        "",
        "| model | server | load | req/s | p50 ms | p99 ms | dropped / failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        _raw("small", raw_s, "calls/s"),
        _fixed("small", "modelserver", msf, secs),
        _fixed("small", "KServe", r.get("ks_small_fixed"), secs),
        _sat("small", "modelserver", mss),
        _sat("small", "KServe", kss),
        _raw("medium", raw_m32, "images/s"),
        _raw("medium", r["raw_medium_b1"], "images/s"),
        _fixed("medium", "modelserver (batching)", r["ms_medium_fixed"], secs),
        _fixed("medium", ks_medium, r.get("ks_medium_fixed"), secs),
        _sat("medium", "modelserver (batching)", mms),
        _sat("medium", ks_medium, r.get("ks_medium_sat")),
        "",
        "modelserver's mean batch size over its fixed-rate and saturation runs: "
        f"{r.get('ms_medium_mean_batch', 0):.1f}.",
        f"Decoding one 1x3x224x224 FP32 tensor from JSON (orjson + numpy) took "
        f"{r['json_decode_224_ms']:.1f} ms here, hence the binary extension for images.",
        "",
        "## Raw data",
        "",
        "```json",
        json.dumps(r, indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def _free_name(folder: Path, stem: str) -> Path:
    """``stem.md``, or ``stem-b.md``, ``stem-c.md``...: a recorded run is never overwritten."""
    for suffix in ("", *(f"-{c}" for c in "bcdefghijklmnopqrstuvwxyz")):
        path = folder / f"{stem}{suffix}.md"
        if not path.exists():
            return path
    raise SystemExit(f"no free name for {stem} in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        raise SystemExit("needs two cores: one for the server, one for the load")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        results = bench(args.seconds, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    out = _free_name(args.out, f"serving-{results['date']}")
    out.write_text(report(results))
    print(out.read_text())
    print(f"written to {out}")


if __name__ == "__main__":
    main()
