"""A bounded, open-loop load generator for the local gateway (127.0.0.1 only).

Requests leave on a fixed schedule (`rate_per_s` for `duration_s`) whether or not earlier ones
have finished, as real users do; when `max_inflight` requests are already waiting, the slot is
counted as dropped instead of piling up. The gateway says which revision answered each request
(`x-modelrollout-revision`), so the stats split per revision and status code.

    stats = run_load(gateway.url, "ns", "iris", rate_per_s=20, duration_s=5, payload=infer_body)
    stats.by_revision, stats.by_status, stats.error_ratio("abc123")

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
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from hack import realnode
from hack.gateway import HEADER_REVISION, NO_REVISION, split_by_weights

MAX_REQUESTS = 100_000
MAX_DURATION_S = 600.0


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


async def run_load_async(
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
    answer or `duration_s + timeout_s` has passed, whichever is first."""
    check_loopback(gateway_url)
    if not 0 < rate_per_s <= 10_000 or not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError("rate_per_s must be in (0, 10000] and duration_s in (0, 600]")
    planned = min(max_requests, MAX_REQUESTS, max(1, round(rate_per_s * duration_s)))
    # An empty namespace: the URL is the model's Service itself, not the gateway.
    prefix = f"/{namespace}/{name}" if namespace else ""
    url = f"{gateway_url.rstrip('/')}{prefix}/v2/models/{model or name}/infer"
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    stats = LoadStats(planned=planned)
    limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight)
    inflight: set[asyncio.Task[None]] = set()

    async def one(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            resp = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            code, revision = 0, NO_REVISION
        else:
            code = resp.status_code
            revision = resp.headers.get(HEADER_REVISION) or NO_REVISION
            stats.latencies_s.append(time.monotonic() - started)
        stats.by_status[code] += 1
        stats.by_revision[revision] += 1
        stats.by_revision_status[(revision, code)] += 1

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False) as client:
        for i in range(planned):
            delay = started + i / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) >= max_inflight:
                stats.dropped += 1
                continue
            task = asyncio.create_task(one(client))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            stats.sent += 1
        if inflight:
            hard_stop = max(0.1, started + duration_s + timeout_s - time.monotonic())
            _done, pending = await asyncio.wait(set(inflight), timeout=hard_stop)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
    stats.elapsed_s = time.monotonic() - started
    return stats


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
    """`run_load_async` from synchronous code (not from inside a running event loop)."""
    return asyncio.run(
        run_load_async(
            gateway_url,
            namespace,
            name,
            rate_per_s,
            duration_s,
            payload,
            model=model,
            max_inflight=max_inflight,
            timeout_s=timeout_s,
            max_requests=max_requests,
        )
    )


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
