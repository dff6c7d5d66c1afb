"""The limit: onnxruntime ``session.run`` called in a loop in-process, one intra-op thread."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def measure(model: Path, batch: int, seconds: float) -> dict[str, float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    arg = session.get_inputs()[0]
    shape = [batch, *(d if isinstance(d, int) else 1 for d in arg.shape[1:])]
    feeds = {arg.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(20):
        session.run(None, feeds)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    lat = np.array(times)
    return {
        "batch": batch,
        "calls": len(times),
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "rows_per_s": batch * len(times) / float(lat.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.batch, args.seconds)))


if __name__ == "__main__":
    main()
