"""Fixed-rate load through the local gateway with a per-request log: when each request left and
came back, which pod and revision answered (the gateway's x-modelrollout-pod and -revision
headers) and the status code. Bounded: loopback only, at most `max_inflight` requests waiting
(further slots are counted as dropped), no run longer than `max_duration_s`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from bench.chaos.checks import Request
from hack.gateway import HEADER_POD, HEADER_REVISION, NO_REVISION
from hack.loadgen import check_loopback

MAX_DURATION_S = 900.0


class RequestLog:
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
        check_loopback(gateway_url)
        if not 0 < rate_per_s <= 200:
            raise ValueError("rate_per_s must be in (0, 200]")
        if not 0 < max_duration_s <= MAX_DURATION_S:
            raise ValueError(f"max_duration_s must be in (0, {MAX_DURATION_S:g}]")
        base = gateway_url.rstrip("/")
        self.url = f"{base}/{namespace}/{name}/v2/models/{name}/infer"
        self.rate_per_s, self.payload = rate_per_s, payload
        self.max_inflight, self.timeout_s, self.max_duration_s = (
            max_inflight,
            timeout_s,
            max_duration_s,
        )
        self.requests: list[Request] = []
        self.sent = self.dropped = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="chaos-load", daemon=True
        )

    def start(self) -> RequestLog:
        self._thread.start()
        return self

    def stop(self) -> list[Request]:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)
        with self._lock:
            return list(self.requests)

    async def _run(self) -> None:
        body = json.dumps(self.payload).encode()
        headers = {"content-type": "application/json"}
        limits = httpx.Limits(
            max_connections=self.max_inflight, max_keepalive_connections=self.max_inflight
        )
        inflight: set[asyncio.Task[None]] = set()

        async def one(client: httpx.AsyncClient) -> None:
            sent = time.monotonic()
            try:
                resp = await client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                pod, revision, code, detail = "", NO_REVISION, 0, type(exc).__name__
            else:
                pod = resp.headers.get(HEADER_POD, "")
                revision = resp.headers.get(HEADER_REVISION) or NO_REVISION
                code = resp.status_code
                detail = "" if pod and code < 300 else resp.text[:160]
            done = time.monotonic()
            with self._lock:
                self.requests.append(Request(sent, done, pod, revision, code, detail))

        started = time.monotonic()
        async with httpx.AsyncClient(
            timeout=self.timeout_s, limits=limits, trust_env=False
        ) as client:
            i = 0
            while not self._stop.is_set():
                due = started + i / self.rate_per_s
                if due - started > self.max_duration_s:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                i += 1
                if len(inflight) >= self.max_inflight:
                    self.dropped += 1
                    continue
                task = asyncio.create_task(one(client))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                self.sent += 1
            if inflight:
                _done, pending = await asyncio.wait(set(inflight), timeout=self.timeout_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
