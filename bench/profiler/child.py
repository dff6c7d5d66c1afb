"""One measured step in a fresh process, so its peak RSS is that step's own.

Usage: python -m bench.profiler.child MODE PATH [EXPECTED_SHA256]
The step runs twice and the second run is timed: the first pass in a new process is slower
for every step alike (measured: a bare read loop, 0.18 s first vs 0.04 s after, 434 MB), so
timing the second compares the steps and not process warm-up.
Prints one JSON object: seconds (both runs), peak and baseline RSS, what the step produced.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from typing import Any

CHUNK = 1 << 20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _read(path: str, sha: bool) -> dict[str, Any]:
    # cat-like: one reusable buffer, no per-chunk allocation, no parsing.
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    h = hashlib.sha256() if sha else None
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
            if h is not None:
                h.update(view[:n])
    return {"bytes": total, "sha256": h.hexdigest() if h else ""}


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    expected = sys.argv[3] if len(sys.argv) > 3 else None
    if mode in ("parse", "profile", "profile-unbounded"):
        import modelrollout.hardware.fetch  # noqa: F401 - imported before the baseline
    baseline = _status_kib("VmRSS")
    times = []
    cpu = 0.0
    for _ in range(2):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = _step(mode, path, expected)
        times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu_start
    result = {
        "mode": mode,
        "seconds": times[-1],
        # CPU time (user + system) of the timed run: on a shared machine it moves less than
        # wall time when other work takes the cores.
        "cpu_seconds": cpu,
        "first_seconds": times[0],
        # VmHWM is this process's own peak; ru_maxrss can also carry the parent's size
        # (Linux keeps the larger of the two across exec), so both are reported.
        "peak_kib": _status_kib("VmHWM"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "baseline_kib": baseline,
        **out,
    }
    print(json.dumps(result))


def _step(mode: str, path: str, expected: str | None) -> dict[str, Any]:
    if mode == "read":
        return _read(path, sha=False)
    if mode == "read-sha256":
        return _read(path, sha=True)
    from modelrollout.hardware.fetch import profile_uri
    from modelrollout.hardware.profiler import profile_stream
    from modelrollout.tenancy import TenantPolicy

    if mode == "parse":
        with open(path, "rb", buffering=0) as f:
            p = profile_stream(f, compute_sha256=False)
        return {"parameters": p.parameter_count, "bytes": p.size_bytes}
    if mode in ("profile", "profile-unbounded"):
        # The operator's own path, with local files allowed (the chart's policy forbids them);
        # `profile-unbounded` lifts the graph metadata budget, as the profiler was before it.
        budget = {"profileMemoryBytes": 1 << 40} if mode == "profile-unbounded" else {}
        policy = TenantPolicy.model_validate({"modelUriSchemes": ["file"], **budget})
        p = profile_uri(path, expected, cache=None, policy=policy)
        return {
            "parameters": p.parameter_count,
            "weight_bytes": p.weight_bytes,
            "gflops": p.gflops_per_sample,
            "nodes": p.node_count,
            "approximate": p.flops_approximate,
            "bytes": p.size_bytes,
            "sha256": p.sha256,
        }
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
