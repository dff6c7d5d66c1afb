"""The hook runner: one per operator. A reconcile hands it the runs its plan wants
(`ensure`, which returns at once) and reads the ones that finished (`results`); the calls
themselves run as asyncio tasks, at most `concurrency` at a time across every ModelDeployment,
so no hook ever holds a reconcile and no tenant's hooks can starve the operator.

Nothing here is the record of truth: status is (plan/hooks.py). A result is kept until the
status that holds it was written (`consumed`); a run lost with the process is started again
by the next operator from its Running record.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret

from modelrollout.api.names import format_time
from modelrollout.api.types import parse_duration
from modelrollout.hardware.fetch import Resolver
from modelrollout.hooks.http import call
from modelrollout.hooks.job import job_manifest, run_job
from modelrollout.plan.children import Owner
from modelrollout.plan.hooks import HookResult, HookRun, job_name
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics
from modelrollout.tenancy import TenantPolicy

__all__ = ["HookRunner", "Target"]

log = logging.getLogger(__name__)

Key = tuple[str, str]
# Results of one object kept at most (runs whose record left status are never consumed).
MAX_RESULTS = 64
# Pause between HTTP attempts: 1s, 2s, 4s... at most this.
MAX_BACKOFF = 10.0
_MAX_HEADERS_BYTES = 16 * 1024


@dataclass(frozen=True)
class Target:
    """The ModelDeployment the runs are for."""

    owner: Owner
    canary_url: str


class HookRunner:
    def __init__(
        self,
        client: AsyncClient | None,
        policy: TenantPolicy,
        metrics: OperatorMetrics | None = None,
        *,
        concurrency: int = 8,
        resolve: Resolver | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.metrics = metrics
        self.resolve = resolve
        self.wake: Callable[[str, str], None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._results: dict[Key, dict[str, HookResult]] = {}

    @classmethod
    def configured(
        cls, client: AsyncClient, settings: OperatorSettings, metrics: OperatorMetrics
    ) -> HookRunner:
        return cls(client, settings.policy, metrics, concurrency=settings.hook_concurrency)

    def results(self, namespace: str, name: str) -> dict[str, HookResult]:
        return dict(self._results.get((namespace, name), {}))

    def ensure(self, target: Target, runs: Iterable[HookRun]) -> None:
        """Start each run not already running or finished. Never waits."""
        key = (target.owner.namespace, target.owner.name)
        done = self._results.get(key, {})
        for run in runs:
            task_key = (*key, run.key)
            if task_key in self._tasks or run.key in done:
                continue
            task = asyncio.create_task(self._run(target, run), name=f"hook {run.key}")
            self._tasks[task_key] = task

    def consumed(self, namespace: str, name: str, keys: Iterable[str]) -> None:
        """These results are in the status now written: drop them."""
        done = self._results.get((namespace, name))
        for k in keys:
            if done is not None:
                done.pop(k, None)

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone (or no longer handled here): stop its runs."""
        self._results.pop((namespace, name), None)
        for task_key, task in list(self._tasks.items()):
            if task_key[:2] == (namespace, name):
                task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, target: Target, run: HookRun) -> None:
        owner = target.owner
        try:
            async with self._slots:
                passed, message = await self._attempts(target, run)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one hook's surprise must not end the runner
            log.exception("hook %s of %s/%s", run.key, owner.namespace, owner.name)
            passed, message = False, f"the hook could not run: {type(e).__name__}"
        finally:
            self._tasks.pop((owner.namespace, owner.name, run.key), None)
        done = self._results.setdefault((owner.namespace, owner.name), {})
        done[run.key] = HookResult(run.key, passed, message, format_time(datetime.now(UTC)))
        while len(done) > MAX_RESULTS:
            done.pop(next(iter(done)))
        if self.metrics is not None:
            result = "passed" if passed else "failed"
            self.metrics.hook_runs.labels(owner.namespace, run.at.value, result).inc()
        log.info("hook %s of %s/%s: %s", run.key, owner.namespace, owner.name, message)
        if self.wake is not None:
            self.wake(owner.namespace, owner.name)

    async def _attempts(self, target: Target, run: HookRun) -> tuple[bool, str]:
        hook = run.hook
        timeout = parse_duration(hook.timeout).total_seconds()
        if hook.job is not None:
            if self.client is None:
                return False, "no Kubernetes client for Job hooks"
            name = job_name(target.owner.name, run.key)
            env = _environment(target, run)
            manifest = job_manifest(
                target.owner, name, hook.name, hook.job, timeout, hook.retries, env
            )
            return await run_job(self.client, manifest, timeout)
        assert hook.http is not None
        headers, problem = await self._headers(target.owner.namespace, hook.http.headers_secret)
        if problem:
            return False, problem
        payload = _payload(target, run)
        passed, message = False, ""
        for attempt in range(hook.retries + 1):
            if attempt:
                await asyncio.sleep(min(MAX_BACKOFF, 2.0 ** (attempt - 1)))
            passed, message = await call(
                hook.http.url,
                hook.http.method,
                payload,
                headers,
                timeout,
                self.policy,
                self.resolve,
            )
            if passed:
                break
        tries = hook.retries + 1
        return passed, message if passed or tries == 1 else f"{message} (after {tries} attempts)"

    async def _headers(self, namespace: str, secret: str | None) -> tuple[dict[str, str], str]:
        """The headers Secret's keys and values; (headers, problem)."""
        if secret is None:
            return {}, ""
        if self.client is None:
            return {}, "no Kubernetes client to read the headers Secret"
        try:
            obj = await self.client.get(Secret, secret, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return {}, f"headers Secret {secret} not found"
            return {}, f"cannot read headers Secret {secret}: {e.status.message}"
        headers: dict[str, str] = {}
        for key, value in (obj.data or {}).items():
            headers[key] = base64.b64decode(value).decode("utf-8", errors="replace").strip()
        if sum(len(k) + len(v) for k, v in headers.items()) > _MAX_HEADERS_BYTES:
            return {}, f"headers Secret {secret} holds more than {_MAX_HEADERS_BYTES} bytes"
        return headers, ""


def _payload(target: Target, run: HookRun) -> dict[str, Any]:
    """The JSON an HTTP hook receives (docs/rollouts.md, "Hooks")."""
    return {
        "hook": run.hook.name,
        "at": run.at.value,
        "namespace": target.owner.namespace,
        "name": target.owner.name,
        "revision": run.revision,
        "step": run.step,
        "canaryUrl": target.canary_url,
    }


def _environment(target: Target, run: HookRun) -> dict[str, str]:
    return {
        "MODELROLLOUT_HOOK": run.hook.name,
        "MODELROLLOUT_HOOK_AT": run.at.value,
        "MODELROLLOUT_NAMESPACE": target.owner.namespace,
        "MODELROLLOUT_NAME": target.owner.name,
        "MODELROLLOUT_REVISION": run.revision,
        "MODELROLLOUT_CANARY_URL": target.canary_url,
    }
