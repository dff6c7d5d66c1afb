"""Instructions per request of the whole server process, counted by callgrind.

Wall-clock throughput on a shared machine moves with the neighbours by more than the
differences measured here; instructions do not. Each server runs under valgrind's callgrind,
instrumentation off until it is warm; then exactly N requests at 32 kept-alive connections
(bench/serving/sender.py, on the other core) are counted from a zeroed counter to a dump:
transport, parsing, the app, onnxruntime and the event loop alike.

Under valgrind a process runs some fifty times slower, so modelserver's timing run at load
would no longer find the small model fast enough to run on the event loop, as it does natively
(its log says "run inline" in the wall-clock part); the threshold is raised so that it takes
the same decision here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .rig import LOAD_CPU, ROOT, Body, Server, floor_command, free_port, modelserver_env

REQUESTS = 1000
CONNECTIONS = 32
WARM_UP = 300


def _command(
    who: str, model: Path, name: str, work: Path, port: int
) -> tuple[list[str], dict[str, str]]:
    if who == "floor":
        return floor_command(model, port)
    counters = "true" if who.endswith("+counters") else "false"
    env = modelserver_env(
        model, name, work, port, free_port(), distribution=counters, inline_run_max_ms="1000"
    )
    return [sys.executable, "-m", "modelserver"], env


def _send(port: int, path: str, body: Body, requests: int) -> int:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, sys.executable, "-m", "bench.serving.sender", "127.0.0.1",
         str(port), path, str(body.path), str(requests), str(CONNECTIONS)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return int(out.stdout.strip())


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=True, timeout=120)


def count(who: str, model: Path, name: str, body: Body, work: Path) -> dict[str, Any]:
    """Instructions per request of one server: ``who`` is floor, modelserver[+counters]."""
    port = free_port()
    cmd, env = _command(who, model, name, work, port)
    out = work / f"callgrind-{who}.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    # Started slowly under valgrind; stopped after the dump, so only the dump is needed.
    server = Server([*valgrind, *cmd], env, port, work / f"callgrind-{who}.log", ready_s=900)
    pid = str(server.proc.pid)
    try:
        path = f"/v2/models/{name}/infer"
        _send(port, path, body, WARM_UP)  # imports, caches and the codec, uncounted
        _control("--instr=on", pid)
        _send(port, path, body, CONNECTIONS * 2)  # valgrind's instrumented code, warmed up
        _control("--zero", pid)
        answered = _send(port, path, body, REQUESTS)
        _control("--dump", pid)
    finally:
        server.stop()
    dumps = sorted(work.glob(f"callgrind-{who}.out.*"), key=lambda p: int(p.suffix[1:]))
    assert dumps, f"no callgrind dump for {who}"
    total = _summary(dumps[0])  # the first dump is the one asked for; the last is at exit
    return {"requests": REQUESTS, "answered": answered, "instructions": total}


def _summary(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise AssertionError(f"no totals in {dump}")


def compare(model: Path, name: str, body: Body, work: Path) -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed"}
    runs = {}
    for who in ("floor", "modelserver", "modelserver+counters"):
        print(f"instructions: {who}", flush=True)
        runs[who] = count(who, model, name, body, work)
    return {"runs": runs}


def per_request(run: dict[str, Any]) -> float:
    return float(run["instructions"]) / int(run["requests"])


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The saturation targets again, on instructions: the floor's per request over ours."""
    if "runs" not in r:
        return []
    floor = per_request(r["runs"]["floor"])
    out = []
    for who, goal in (("modelserver", 0.95), ("modelserver+counters", 0.90)):
        ratio = floor / per_request(r["runs"][who])
        label = "" if who == "modelserver" else ", output counters on"
        out.append(
            (
                f"tabular{label}: saturation >= {goal:.0%} of the floor (instructions, callgrind)",
                f"{ratio:.0%} ({per_request(r['runs'][who]):,.0f} vs {floor:,.0f} a request)",
                ratio >= goal,
            )
        )
    return out


def report(r: dict[str, Any]) -> list[str]:
    if "runs" not in r:
        return ["## Instructions per request", "", f"Not measured: {r['skipped']}."]
    floor = per_request(r["runs"]["floor"])
    lines = [
        "## Instructions per request (callgrind, whole process)",
        "",
        f"Each server under callgrind, counted over exactly {REQUESTS} requests at "
        f"{CONNECTIONS} kept-alive connections after a warm-up (bench/serving/instructions.py): "
        "the same tabular model and JSON body as above. Instructions do not move with the "
        "machine's load, so these ratios hold where the wall-clock rounds above swing.",
        "",
        "| server | instructions / request | vs floor | floor's over ours | answered 200 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for who, run in r["runs"].items():
        ours = per_request(run)
        lines.append(
            f"| {who} | {ours:,.0f} | {ours / floor:.3f}x | {floor / ours:.0%} "
            f"| {run['answered']} of {run['requests']} |"
        )
    return lines


def main() -> None:
    """Only this comparison: python -m bench.serving.instructions."""
    import tempfile

    from .peers import NAME, tabular

    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        model, body = tabular(Path(tmp))
        result = compare(model, NAME, body, Path(tmp))
    print("\n".join([*report(result), "", *(f"{g}: {m}" for g, m, _ in targets(result))]))


if __name__ == "__main__":
    main()
