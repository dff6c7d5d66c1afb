"""The synthetic traffic generator, run by the operator itself: one task per canary that asks
for it, sending the ModelDeployment's sample requests to the canary's own Service at the set
rate, each labelled with the `x-modelrollout-synthetic` header, until the canary has no
traffic any more or the total is reached. Rate and total are the spec's, capped by the
platform's policy; the count survives a restart through status (`already`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from modelrollout.api.synthetic import (
    SYNTHETIC_HEADER,
    SampleRequests,
    SyntheticStatus,
    SyntheticTrafficSpec,
)
from modelrollout.tenancy import TenantPolicy

__all__ = ["SyntheticTraffic"]

log = logging.getLogger(__name__)

Key = tuple[str, str]
MAX_SAMPLES = 256
REQUEST_TIMEOUT = 10.0


class SyntheticTraffic:
    def __init__(self, client: AsyncClient | None, policy: TenantPolicy) -> None:
        self.client = client
        self.policy = policy
        self._tasks: dict[Key, tuple[str, asyncio.Task[None]]] = {}
        self._progress: dict[Key, SyntheticStatus] = {}

    def progress(self, namespace: str, name: str) -> SyntheticStatus | None:
        return self._progress.get((namespace, name))

    def drive(
        self,
        key: Key,
        revision: str | None,
        spec: SyntheticTrafficSpec | None,
        url: str,
        already: SyntheticStatus | None,
    ) -> None:
        """Send to `revision` at `url` (an infer endpoint) as `spec` says, or stop (None)."""
        running = self._tasks.get(key)
        if running is not None and revision is not None and running[0] == revision:
            return
        self._stop(key)
        if revision is None or spec is None:
            return
        start = already if already is not None and already.revision == revision else None
        self._progress[key] = start or SyntheticStatus(revision=revision)
        task = asyncio.create_task(self._run(key, spec, url), name=f"synthetic {key}")
        self._tasks[key] = (revision, task)

    def forget(self, namespace: str, name: str) -> None:
        self._stop((namespace, name))
        self._progress.pop((namespace, name), None)

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self, key: Key) -> None:
        running = self._tasks.pop(key, None)
        if running is not None:
            running[1].cancel()

    def _note(self, key: Key, **changes: Any) -> SyntheticStatus:
        self._progress[key] = self._progress[key].model_copy(update=changes)
        return self._progress[key]

    async def _run(self, key: Key, spec: SyntheticTrafficSpec, url: str) -> None:
        rate = min(spec.rate_per_second, self.policy.synthetic_max_rate)
        total = min(spec.max_requests, self.policy.synthetic_max_requests)
        if rate <= 0 or total <= 0:
            self._note(key, message="synthetic traffic is off (policy.syntheticMaxRate)")
            return
        samples, problem = await self._samples(key[0], spec.samples)
        if problem:
            self._note(key, message=problem)
            return
        self._note(key, message="")
        interval, due = 1.0 / rate, time.monotonic()
        # No proxy from the environment: the canary's Service is in the cluster.
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False) as client:
            while (progress := self._progress[key]).sent < total:
                body = samples[progress.sent % len(samples)]
                try:
                    response = await client.post(url, json=body, headers={SYNTHETIC_HEADER: "1"})
                    failure = f"HTTP {response.status_code}" if response.status_code >= 400 else ""
                except httpx.HTTPError as e:
                    failure = type(e).__name__
                # 4xx: the samples do not fit the model, worth saying; only 5xx are errors.
                self._note(
                    key,
                    sent=progress.sent + 1,
                    errors=progress.errors + failure.startswith(("HTTP 5", "Connect", "Read")),
                    message=f"last failed request: {failure}" if failure else progress.message,
                )
                due += interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        last = self._progress[key].message
        done = f"stopped after {total} requests (the maximum)"
        self._note(key, message=f"{done}; {last}" if last else done)

    async def _samples(
        self, namespace: str, source: SampleRequests
    ) -> tuple[list[dict[str, Any]], str]:
        """The sample requests, or why there are none."""
        where = f"ConfigMap {source.config_map} key {source.key}"
        if self.client is None:
            return [], "no Kubernetes client to read the samples"
        try:
            obj = await self.client.get(ConfigMap, source.config_map, namespace=namespace)
        except ApiError as e:
            return [], f"cannot read {where}: {e.status.message}"
        text = (obj.data or {}).get(source.key)
        if text is None:
            return [], f"{where} does not exist"
        try:
            loaded = json.loads(text)
        except ValueError as e:
            return [], f"{where} is not JSON: {e}"
        samples = loaded if isinstance(loaded, list) else [loaded]
        if not samples or not all(isinstance(s, dict) and "inputs" in s for s in samples):
            return [], f'{where}: want an inference request ({{"inputs": [...]}}) or a list'
        return samples[:MAX_SAMPLES], ""
