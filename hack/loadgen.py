"""A bounded, open-loop load generator for the local gateway (127.0.0.1 only).

Requests leave on a fixed schedule (`rate_per_s`) whether or not earlier ones have finished, as
real users do; when `max_inflight` requests are already waiting, the slot is counted as dropped
instead of piling up. The gateway says which pod and revision answered each request
(`x-modelrollout-pod`, `x-modelrollout-revision`). One sender (`send_paced`) serves two uses:

    stats = run_load(gateway.url, "ns", "iris", rate_per_s=20, duration_s=5, payload=infer_body)
    stats.by_revision, stats.by_status, stats.error_ratio("abc123")   # totals of a slice

    load = BackgroundLoad(gateway.url, "ns", "iris", 20, infer_body).start()
    ...                                      # a rollout under load
    answers = load.stop()                    # every request: sent, done, pod, revision, code

    python -m hack.loadgen --gateway http://127.0.0.1:PORT --namespace ns --name iris \
        --rate 20 --duration 10 --features 16
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from hack import realnode
from hack.gateway import HEADER_POD, HEADER_REVISION, NO_REVISION, split_by_weights

MAX_REQUESTS = 100_000
MAX_DURATION_S = 900.0
MAX_RATE = 10_000.0


@dataclass
class LoadStats:
    """What one run saw. Status 0 counts requests that got no HTTP response at all."""

    planned: int = 0
    sent: int = 0
    dropped: int = 0
    by_revision: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_revision_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def completed(self) -> int:
        return sum(self.by_status.values())

    def errors(self, revision: str | None = None) -> int:
        """Responses with status >= 500 or none at all, for one revision or in total."""
        return sum(
            n
            for (rev, code), n in self.by_revision_status.items()
            if (revision is None or rev == revision) and (code >= 500 or code == 0)
        )

    def error_ratio(self, revision: str | None = None) -> float:
        total = self.completed if revision is None else self.by_revision[revision]
        return self.errors(revision) / total if total else 0.0

    def quantile(self, q: float) -> float:
        """Latency quantile in seconds (nearest rank); NaN without any response."""
        if not self.latencies_s:
            return math.nan
        ordered = sorted(self.latencies_s)
        rank = max(0, math.ceil(q * len(ordered)) - 1)
        return ordered[min(rank, len(ordered) - 1)]

    def expected(self, weights: Mapping[str, float]) -> dict[str, int]:
        """How many of the completed requests each revision should have served at `weights`."""
        return split_by_weights(weights, self.completed)

    def summary(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "sent": self.sent,
            "dropped": self.dropped,
            "completed": self.completed,
            "elapsed_s": round(self.elapsed_s, 3),
            "by_revision": dict(self.by_revision),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "errors": self.errors(),
            "p50_ms": round(self.quantile(0.5) * 1000, 2) if self.latencies_s else None,
            "p99_ms": round(self.quantile(0.99) * 1000, 2) if self.latencies_s else None,
        }


def check_loopback(url: str) -> None:
    """Load goes to this machine only: loopback, or the local real node's Service and pod
    addresses while its bridge exists (those pods live in network namespaces on this host)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return
    if address is not None and realnode.is_local_cluster_address(address):
        return
    raise ValueError(f"load is only sent to loopback addresses, not {host!r}")


def infer_payload(features: int, rows: int = 1, input_name: str = "features") -> dict[str, Any]:
    """An OIP v2 request for a [rows, features] FP32 input."""
    return {
        "inputs": [
            {
                "name": input_name,
                "shape": [rows, features],
                "datatype": "FP32",
                "data": [round(0.01 * (i % 100), 2) for i in range(rows * features)],
            }
        ]
    }


@dataclass(frozen=True, slots=True)
class Answer:
    """One request of a paced run: when it left and came back (monotonic clock), the pod and
    revision that answered (the gateway's x-modelrollout-pod and -revision headers) and the
    status code."""

    sent: float
    done: float
    pod: str  # "" when no pod answered (the gateway itself, or no answer at all)
    revision: str
    code: int  # 0: no HTTP answer
    detail: str = ""  # the answer's start (or the transport error) unless a pod answered 2xx


def load_url(gateway_url: str, namespace: str, name: str, model: str | None = None) -> str:
    """`/<namespace>/<name>/v2/models/<model>/infer` on the gateway; an empty namespace: the
    URL is the model's Service itself, not the gateway."""
    prefix = f"/{namespace}/{name}" if namespace else ""
    return f"{gateway_url.rstrip('/')}{prefix}/v2/models/{model or name}/infer"


def _check_bounds(url: str, rate_per_s: float, max_duration_s: float) -> None:
    check_loopback(url)
    if not 0 < rate_per_s <= MAX_RATE or not 0 < max_duration_s <= MAX_DURATION_S:
        raise ValueError(
            f"rate_per_s must be in (0, {MAX_RATE}] and the duration in (0, {MAX_DURATION_S:g}]"
        )


async def send_paced(
    url: str,
    payload: Mapping[str, Any],
    rate_per_s: float,
    on_answer: Callable[[Answer], None],
    *,
    count: int | None = None,
    stop: threading.Event | None = None,
    max_duration_s: float = MAX_DURATION_S,
    max_inflight: int = 32,
    timeout_s: float = 10.0,
) -> tuple[int, int]:
    """POST `payload` to `url` at `rate_per_s`, each request leaving on its slot whether or not
    earlier ones have answered; a slot that finds `max_inflight` requests waiting is dropped.
    Runs `count` slots (None: until `stop` is set), never past `max_duration_s`; then waits
    `timeout_s` at most for the requests still out. Calls `on_answer` for every request that
    left; returns (sent, dropped)."""
    _check_bounds(url, rate_per_s, max_duration_s)
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight)
    inflight: set[asyncio.Task[None]] = set()
    sent = dropped = 0

    async def one(client: httpx.AsyncClient) -> None:
        left = time.monotonic()
        try:
            resp = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            answer = Answer(left, time.monotonic(), "", NO_REVISION, 0, type(exc).__name__)
        else:
            pod = resp.headers.get(HEADER_POD, "")
            code = resp.status_code
            detail = "" if pod and code < 300 else resp.text[:160]
            revision = resp.headers.get(HEADER_REVISION) or NO_REVISION
            answer = Answer(left, time.monotonic(), pod, revision, code, detail)
        on_answer(answer)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False) as client:
        # From here, not before the client: making it (its TLS context) takes a while on a
        # loaded machine, and the slots it took would all leave at once.
        started = time.monotonic()
        i = 0
        while (count is None or i < count) and not (stop is not None and stop.is_set()):
            due = started + i / rate_per_s
            if due - started > max_duration_s:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i += 1
            if len(inflight) >= max_inflight:
                dropped += 1
                continue
            task = asyncio.create_task(one(client))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            sent += 1
        if inflight:
            _done, pending = await asyncio.wait(set(inflight), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    return sent, dropped


class BackgroundLoad:
    """`send_paced` in a thread of its own from `start()` until `stop()`, keeping every
    answer: for benchmarks that follow a rollout while load runs through it."""

    def __init__(
        self,
        gateway_url: str,
        namespace: str,
        name: str,
        rate_per_s: float,
        payload: Mapping[str, Any],
        *,
        max_inflight: int = 32,
        timeout_s: float = 5.0,
        max_duration_s: float = MAX_DURATION_S,
    ) -> None:
        self.url = load_url(gateway_url, namespace, name)
        _check_bounds(self.url, rate_per_s, max_duration_s)  # here, not in the thread
        self.rate_per_s, self.payload = rate_per_s, payload
        self.max_inflight, self.timeout_s = max_inflight, timeout_s
        self.max_duration_s = max_duration_s
        self.sent = self.dropped = 0
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name=f"load-{namespace}", daemon=True
        )

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        """Stop sending, wait for the requests still out (`timeout_s` at most), and return
        every answer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s + 5)
        return self.answers()

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def _keep(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append(answer)

    async def _run(self) -> None:
        self.sent, self.dropped = await send_paced(
            self.url,
            self.payload,
            self.rate_per_s,
            self._keep,
            stop=self._stop,
            max_duration_s=self.max_duration_s,
            max_inflight=self.max_inflight,
            timeout_s=self.timeout_s,
        )


def run_load(
    gateway_url: str,
    namespace: str,
    name: str,
    rate_per_s: float,
    duration_s: float,
    payload: Mapping[str, Any],
    *,
    model: str | None = None,
    max_inflight: int = 32,
    timeout_s: float = 10.0,
    max_requests: int = MAX_REQUESTS,
) -> LoadStats:
    """Send `rate_per_s * duration_s` inference requests (capped at `max_requests`) to
    `/<namespace>/<name>/v2/models/<model>/infer` on the gateway; return when every one has an
    answer or `timeout_s` after the last one left, whichever is first. Not from inside a
    running event loop."""
    url = load_url(gateway_url, namespace, name, model)
    _check_bounds(url, rate_per_s, duration_s)
    planned = min(max_requests, MAX_REQUESTS, max(1, round(rate_per_s * duration_s)))
    stats = LoadStats(planned=planned)

    def tally(answer: Answer) -> None:
        stats.by_status[answer.code] += 1
        stats.by_revision[answer.revision] += 1
        stats.by_revision_status[(answer.revision, answer.code)] += 1
        if answer.code:
            stats.latencies_s.append(answer.done - answer.sent)

    started = time.monotonic()
    stats.sent, stats.dropped = asyncio.run(
        send_paced(
            url,
            payload,
            rate_per_s,
            tally,
            count=planned,
            max_duration_s=duration_s,
            max_inflight=max_inflight,
            timeout_s=timeout_s,
        )
    )
    stats.elapsed_s = time.monotonic() - started
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.loadgen", description=__doc__)
    parser.add_argument("--gateway", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True, help="ModelDeployment (or route) name")
    parser.add_argument("--model", help="model name in the URL (default: --name)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    payload = parser.add_mutually_exclusive_group(required=True)
    payload.add_argument("--features", type=int, help="send a [1, N] FP32 input named features")
    payload.add_argument("--payload", help="JSON file with the OIP v2 request body")
    args = parser.parse_args(argv)
    if args.payload:
        with open(args.payload, encoding="utf-8") as f:
            body = json.load(f)
    else:
        body = infer_payload(args.features)
    stats = run_load(
        args.gateway, args.namespace, args.name, args.rate, args.duration, body, model=args.model
    )
    print(json.dumps(stats.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
