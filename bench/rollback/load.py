"""Steady open-loop load through the local gateway, recording when each response came back.

hack.loadgen sends bounded slices and keeps totals; the benchmark needs the moment the first
5xx of the canary revision reached a client, so this keeps every response's completion time,
revision and status. Bounded like hack.loadgen: loopback only, at most `max_inflight` requests
waiting (further slots are counted as dropped), and no run longer than `max_duration_s`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from hack.gateway import HEADER_REVISION, NO_REVISION
from hack.loadgen import check_loopback

MAX_DURATION_S = 600.0


@dataclass(frozen=True, slots=True)
class Response:
    at: float  # time.monotonic() when the response (or the transport error) arrived
    revision: str
    code: int  # 0: no HTTP response at all


@dataclass
class SteadyLoad:
    gateway_url: str
    namespace: str
    name: str
    rate_per_s: float
    payload: Mapping[str, Any]
    max_inflight: int = 32
    timeout_s: float = 5.0
    max_duration_s: float = MAX_DURATION_S
    responses: list[Response] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        check_loopback(self.gateway_url)
        if not 0 < self.rate_per_s <= 1000:
            raise ValueError("rate_per_s must be in (0, 1000]")
        if not 0 < self.max_duration_s <= MAX_DURATION_S:
            raise ValueError(f"max_duration_s must be in (0, {MAX_DURATION_S:g}]")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        base = self.gateway_url.rstrip("/")
        return f"{base}/{self.namespace}/{self.name}/v2/models/{self.name}/infer"

    def start(self) -> SteadyLoad:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name=f"load-{self.namespace}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
            self._thread = None

    def snapshot(self) -> list[Response]:
        with self._lock:
            return list(self.responses)

    async def _run(self) -> None:
        body = json.dumps(self.payload).encode()
        headers = {"content-type": "application/json"}
        limits = httpx.Limits(
            max_connections=self.max_inflight, max_keepalive_connections=self.max_inflight
        )
        inflight: set[asyncio.Task[None]] = set()

        async def one(client: httpx.AsyncClient) -> None:
            try:
                resp = await client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError:
                revision, code = NO_REVISION, 0
            else:
                revision = resp.headers.get(HEADER_REVISION) or NO_REVISION
                code = resp.status_code
            with self._lock:
                self.responses.append(Response(time.monotonic(), revision, code))

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
