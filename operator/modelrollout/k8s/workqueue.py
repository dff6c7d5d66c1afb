"""A rate-limited work queue of ModelDeployment keys, the shape of client-go's workqueue.

- One entry per key: adding a key that is already waiting keeps the earlier of the two times.
- A key is never worked on by two workers at once; added while in work, it runs again after.
- `workers` keys at most are in work at a time.
- After a failed run a key waits 1, 2, 4 ... seconds (capped), per key; a run that succeeds
  resets its count. A successful run's requeue-after (from the planner) or the resync period
  decides when the key is looked at again.
- Keys whose last run failed only because the API server could not serve (`unavailable`) are
  run again at once, their count reset, when a cache lists again after its watch broke
  (`retry_unavailable`): the API server is back, and a backoff grown through the outage would
  otherwise hold a rollout up to its cap after it (client-go re-delivers every object on a
  relist for the same reason).
- Only keys this replica owns are worked on (`own`/`disown`): an object that is gone, or a
  replica that stands by for its peer, leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class Result:
    """What one run asks for: when to run again (None: at the resync), and whether it failed
    (then the key's backoff decides instead), `unavailable` when only because the API server
    could not be reached or could not serve."""

    requeue_after: float | None = None
    failed: bool = False
    unavailable: bool = False


Handler = Callable[[Key], Awaitable[Result]]


def in_shard(namespace: str, name: str, index: int, count: int) -> bool:
    """Whether `namespace/name` falls in shard `index` of `count`: CRC-32 of the key, stable
    across processes and versions (Python's hash() is salted per process)."""
    if count <= 1:
        return True
    return zlib.crc32(f"{namespace}/{name}".encode()) % count == index


@dataclass(frozen=True)
class QueueSettings:
    workers: int = 16
    resync_seconds: float = 300.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        settings: QueueSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_run: Callable[[Key, float, Result], None] | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.clock = clock
        self.on_run = on_run
        self._due: dict[Key, float] = {}  # waiting keys and when they are due
        self._heap: list[tuple[float, Key]] = []  # (due, key); stale entries skipped
        self._active: set[Key] = set()
        self._again: dict[Key, float] = {}  # added while in work: due time for after
        self._failures: dict[Key, int] = {}
        self._unavailable: set[Key] = set()  # last run failed only for the API server
        self._owned: set[Key] = set()
        self._changed = asyncio.Event()
        self.retries = 0

    # --- keys ------------------------------------------------------------------------------

    def own(self, key: Key) -> None:
        self._owned.add(key)
        self.add(key)

    def disown(self, key: Key) -> None:
        self._owned.discard(key)
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._failures.pop(key, None)
        self._unavailable.discard(key)

    def owns(self, key: Key) -> bool:
        return key in self._owned

    def add(self, key: Key, after: float = 0.0) -> None:
        """Work on `key` in `after` seconds, or sooner if it is already due sooner."""
        if key not in self._owned:
            return
        due = self.clock() + max(after, 0.0)
        if key in self._active:
            self._again[key] = min(due, self._again.get(key, due))
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        self._changed.set()

    def retry_unavailable(self) -> int:
        """Run every key whose last run failed only for the API server now, its backoff reset:
        called when a cache has listed again, so the API server serves again. Returns how many."""
        keys = [k for k in self._unavailable if k in self._owned]
        self._unavailable.clear()
        for key in keys:
            self._failures.pop(key, None)
            self.add(key)
        return len(keys)

    def __len__(self) -> int:
        return len(self._due)

    def depth(self) -> int:
        """Keys due now and waiting for a worker."""
        now = self.clock()
        return sum(1 for due in self._due.values() if due <= now)

    def oldest_age(self) -> float:
        """How long the longest-waiting due key has waited (0 when none waits)."""
        now = self.clock()
        return max((now - due for due in self._due.values() if due <= now), default=0.0)

    def _pop_due(self) -> Key | float | None:
        """A due key, or the seconds until the next one is due (None: nothing waits)."""
        while self._heap:
            due, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # superseded or disowned
                continue
            wait = due - self.clock()
            if wait > 0:
                return wait
            heapq.heappop(self._heap)
            del self._due[key]
            return key
        return None

    # --- workers ---------------------------------------------------------------------------

    async def _next(self) -> Key:
        while True:
            got = self._pop_due()
            if isinstance(got, tuple):
                return got
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=got)

    def _delay(self, key: Key, result: Result) -> float:
        if result.failed and result.unavailable:
            self._unavailable.add(key)
        else:
            self._unavailable.discard(key)
        if result.failed:
            count = self._failures.get(key, 0)
            self._failures[key] = count + 1
            self.retries += 1
            return min(self.settings.backoff_base * 2.0**count, self.settings.backoff_max)
        self._failures.pop(key, None)
        if result.requeue_after is not None:
            return result.requeue_after
        # Spread the resyncs of many keys rather than run them in one burst.
        return self.settings.resync_seconds * random.uniform(0.9, 1.1)

    async def _work(self, key: Key) -> None:
        self._active.add(key)
        started = self.clock()
        try:
            result = await self.handler(key)
        except Exception:  # one key's bug must not stop the queue
            log.exception("work on %s/%s failed", *key)
            result = Result(failed=True)
        finally:
            self._active.discard(key)
        if self.on_run is not None:
            self.on_run(key, self.clock() - started, result)
        self.add(key, self._delay(key, result))
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - self.clock())

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            await self._work(key)

    async def run(self, ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Work until cancelled; `ready` first (the caches' first LIST: no key is worked on
        from a partial view of the cluster)."""
        if ready is not None:
            await ready()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.settings.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
