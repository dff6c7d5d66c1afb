"""Dynamic batching: requests that arrive close together share one onnxruntime run.

Requests are concatenated along axis 0, run once and split back by row offsets. The next batch
is only formed once a run slot is free, so under load requests pile up while the model runs and
batches grow by themselves; the window adds a short wait for company when the server is idle.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray[Any, Any]]
RunFn = Callable[[Arrays], Arrays]
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(slots=True)
class _Pending:
    feeds: Arrays
    rows: int
    signature: Signature
    future: asyncio.Future[Arrays] = field(repr=False)


def signature(feeds: Arrays) -> tuple[int, Signature] | None:
    """Rows and shape signature, or None when the request cannot join a batch."""
    rows = -1
    parts = []
    for name in sorted(feeds):
        arr = feeds[name]
        if arr.ndim == 0:
            return None
        if rows == -1:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            return None
        parts.append((name, arr.dtype.str, arr.shape[1:]))
    if rows <= 0:
        return None
    return rows, tuple(parts)


class Batcher:
    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int,
        window_s: float,
        concurrency: int = 1,
        on_run: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self._max = max_batch_size
        self._window = window_s
        self._on_run = on_run
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._workers = [asyncio.create_task(self._worker()) for _ in range(concurrency)]

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("server shutting down"))

    async def submit(self, feeds: Arrays) -> Arrays:
        sig = signature(feeds)
        loop = asyncio.get_running_loop()
        if sig is None or sig[0] >= self._max:
            return await self._run_timed(feeds)
        rows, shape_sig = sig
        future: asyncio.Future[Arrays] = loop.create_future()
        self._queue.append(_Pending(feeds, rows, shape_sig, future))
        self._queued_rows += rows
        self._wakeup.set()
        return await future

    def _timed(self, feeds: Arrays) -> tuple[Arrays, float]:
        start = time.perf_counter()
        return self._run(feeds), time.perf_counter() - start

    async def _run_timed(self, feeds: Arrays) -> Arrays:
        loop = asyncio.get_running_loop()
        out, seconds = await loop.run_in_executor(self._executor, self._timed, feeds)
        if self._on_run is not None:  # back on the loop: metrics are updated from it only
            rows = next(iter(feeds.values())).shape[0] if feeds else 0
            self._on_run(rows, seconds)
        return out

    async def _wait_for_company(self) -> None:
        loop = asyncio.get_running_loop()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wakeup.set()

        # A flag, not a clock comparison: uvloop's millisecond timers can fire a little before
        # loop.time() reaches the deadline, which would leave the worker waiting for ever.
        timer = loop.call_later(self._window, expire)
        try:
            while self._queued_rows < self._max and not expired:
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            timer.cancel()

    def _take(self) -> list[_Pending]:
        """Pop the oldest request and every queued one that fits beside it."""
        first = self._queue.popleft()
        batch = [first]
        rows = first.rows
        skipped: list[_Pending] = []
        while self._queue and rows < self._max:
            item = self._queue.popleft()
            if item.signature == first.signature and rows + item.rows <= self._max:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
        # Requests that did not fit keep their place at the front, in arrival order.
        self._queue.extendleft(reversed(skipped))
        self._queued_rows -= rows
        return batch

    async def _worker(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._window > 0 and self._queued_rows < self._max:
                await self._wait_for_company()
            batch = [p for p in self._take() if not p.future.done()]  # drop cancelled callers
            if not batch:
                continue
            try:
                if len(batch) == 1:
                    feeds = batch[0].feeds
                else:
                    feeds = {
                        name: np.concatenate([p.feeds[name] for p in batch])
                        for name in batch[0].feeds
                    }
                out = await self._run_timed(feeds)
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(RuntimeError("server shutting down"))
                raise
            except Exception as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            _split(batch, out)


def _split(batch: list[_Pending], out: Arrays) -> None:
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result(out)
        return
    total = sum(p.rows for p in batch)
    bad = [name for name, arr in out.items() if arr.ndim == 0 or arr.shape[0] != total]
    if bad:
        # The model's axis 0 is dynamic but not a batch axis (e.g. it reduces over it).
        error = RuntimeError(f"output {bad[0]!r} does not keep the batch axis; disable batching")
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)
        return
    start = 0
    for p in batch:
        end = start + p.rows
        if not p.future.done():
            p.future.set_result({name: arr[start:end] for name, arr in out.items()})
        start = end
