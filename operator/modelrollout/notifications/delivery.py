"""The notifier: one per operator. A reconcile hands it the outbox it just wrote (`enqueue`,
which never waits: a full queue leaves the rest in status for a later reconcile) and reads
back what was delivered (`delivered`), which the next status drops. A few workers deliver in
the background, each notification to each of its notifiers, retrying with backoff; one that
still fails is given up and counted, so a dead endpoint cannot fill the outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from modelrollout.api.notifications import PendingNotification
from modelrollout.notifications.formats import payload, slack
from modelrollout.settings import NotifierConfig, OperatorSettings
from modelrollout.telemetry import OperatorMetrics

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

Key = tuple[str, str]
WORKERS = 4
ATTEMPTS = 5
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class _Item:
    key: Key
    notifiers: tuple[str, ...]
    notification: PendingNotification


class Notifier:
    def __init__(
        self,
        configs: Iterable[NotifierConfig],
        metrics: OperatorMetrics,
        *,
        queue_size: int = 256,
        attempts: int = ATTEMPTS,
        backoff: float = 1.0,
    ) -> None:
        self.configs = {c.name: c for c in configs}
        self.metrics = metrics
        self.attempts = attempts
        self.backoff = backoff
        self.wake: Callable[[str, str], None] | None = None
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._inflight: set[tuple[str, str, str]] = set()
        self._done: dict[Key, set[str]] = {}
        self._workers: list[asyncio.Task[None]] = []

    @classmethod
    def configured(cls, settings: OperatorSettings, metrics: OperatorMetrics) -> Notifier:
        return cls(settings.notifiers, metrics, queue_size=settings.notify_queue_size)

    def delivered(self, namespace: str, name: str) -> frozenset[str]:
        return frozenset(self._done.get((namespace, name), ()))

    def consumed(self, namespace: str, name: str, ids: Iterable[str]) -> None:
        """These ids are out of the status now written: forget them."""
        done = self._done.get((namespace, name))
        if done is not None:
            done.difference_update(ids)

    def forget(self, namespace: str, name: str) -> None:
        self._done.pop((namespace, name), None)

    def enqueue(
        self,
        namespace: str,
        name: str,
        notifiers: Iterable[str],
        pending: Iterable[PendingNotification],
    ) -> None:
        """Queue each pending notification not already queued or delivered. Never waits."""
        key = (namespace, name)
        targets = tuple(notifiers)
        done = self._done.get(key, set())
        for n in pending:
            if (*key, n.id) in self._inflight or n.id in done or not targets:
                continue
            try:
                self._queue.put_nowait(_Item(key, targets, n))
            except asyncio.QueueFull:
                self.metrics.notifications_deferred.inc()
                return
            self._inflight.add((*key, n.id))
            self._start()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def _start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"notifier {i}") for i in range(WORKERS)
            ]

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                for notifier in item.notifiers:
                    await self._deliver(notifier, item)
            except Exception:  # one bad delivery must not stop the worker
                log.exception("notification %s", item.notification.id)
            finally:
                self._inflight.discard((*item.key, item.notification.id))
                self._queue.task_done()
            self._done.setdefault(item.key, set()).add(item.notification.id)
            if self.wake is not None:
                self.wake(*item.key)

    async def _deliver(self, notifier: str, item: _Item) -> None:
        config = self.configs.get(notifier)
        namespace, name = item.key
        if config is None:
            # A tenant's typo must not become a metric label: one label for all unknown names.
            log.warning("%s/%s selects notifier %r, which is not configured", *item.key, notifier)
            self.metrics.notifications.labels("unknown", "failed").inc()
            return
        render = slack if config.type == "slack" else payload
        body = render(namespace, name, item.notification)
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)))
            problem = await _post(config, body)
            if problem is None:
                self.metrics.notifications.labels(notifier, "delivered").inc()
                return
            self.metrics.notification_attempt_failures.labels(notifier).inc()
            log.info("notifier %s, attempt %d: %s", notifier, attempt + 1, problem)
        self.metrics.notifications.labels(notifier, "failed").inc()
        log.warning("notifier %s: gave up on %s after %d attempts", notifier,
                    item.notification.id, self.attempts)  # fmt: skip


async def _post(config: NotifierConfig, body: dict[str, Any]) -> str | None:
    """None when delivered; else what went wrong (never the URL: it is a secret)."""
    try:
        url = config.url or (config.url_file.read_text().strip() if config.url_file else "")
    except OSError as e:
        return f"cannot read the URL file: {e.strerror}"
    try:
        async with httpx.AsyncClient(timeout=config.timeout_seconds) as client:
            response = await client.post(url, json=body)
    except httpx.HTTPError as e:
        return f"cannot deliver: {type(e).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"
