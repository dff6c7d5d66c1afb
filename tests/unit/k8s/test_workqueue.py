"""The work queue: one entry per key, one worker per key at a time, bounded concurrency,
per-key exponential backoff, requeue-after, and nothing worked on before the caches synced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from modelrollout.k8s.workqueue import Key, QueueSettings, Result, WorkQueue, in_shard

A: Key = ("ns", "a")
B: Key = ("ns", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(check: Callable[[], bool]) -> None:
    """Let the queue's tasks run until `check` holds (2 s at most)."""
    async with asyncio.timeout(2.0):
        while not check():  # noqa: ASYNC110 - polling state the queue keeps, not an event
            await asyncio.sleep(0.001)


def queue_with(
    handler: Callable[[Key], Awaitable[Result]], clock: Clock | None = None, workers: int = 4
) -> WorkQueue:
    settings = QueueSettings(workers=workers, resync_seconds=3600, backoff_base=1, backoff_max=8)
    return WorkQueue(handler, settings, clock=clock or Clock())


async def test_adding_a_waiting_key_again_runs_it_once() -> None:
    runs: list[Key] = []

    async def handler(key: Key) -> Result:
        runs.append(key)
        return Result()

    queue = queue_with(handler)
    queue.own(A)
    for _ in range(5):
        queue.add(A)
    assert len(queue) == 1
    task = asyncio.create_task(queue.run())
    await until(lambda: runs == [A])
    await asyncio.sleep(0.01)
    task.cancel()
    assert runs == [A]


async def test_a_key_is_never_worked_on_twice_at_once_and_runs_again_if_added_meanwhile() -> None:
    release = asyncio.Event()
    active, most, runs = 0, 0, 0

    async def handler(key: Key) -> Result:
        nonlocal active, most, runs
        active += 1
        most = max(most, active)
        runs += 1
        await release.wait()
        active -= 1
        return Result()

    queue = queue_with(handler)
    queue.own(A)
    task = asyncio.create_task(queue.run())
    await until(lambda: runs == 1)
    queue.add(A)  # while in work: after it, not beside it
    queue.add(A)
    await asyncio.sleep(0.01)
    assert runs == 1
    release.set()
    await until(lambda: runs == 2)
    await asyncio.sleep(0.01)
    task.cancel()
    assert most == 1
    assert runs == 2


async def test_concurrency_is_bounded_by_the_workers() -> None:
    release = asyncio.Event()
    active, most = 0, 0

    async def handler(key: Key) -> Result:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await release.wait()
        active -= 1
        return Result()

    queue = queue_with(handler, workers=3)
    for i in range(10):
        queue.own(("ns", f"m{i}"))
    task = asyncio.create_task(queue.run())
    await until(lambda: active == 3)
    await asyncio.sleep(0.01)
    assert most == 3
    assert queue.depth() == 7
    release.set()
    await until(lambda: len(queue) == 10 and active == 0)  # all back, at the resync
    task.cancel()
    assert most == 3


async def test_failures_back_off_exponentially_per_key_and_success_resets() -> None:
    clock = Clock()
    outcomes = iter([True, True, True, False, True])
    calls = 0

    async def handler(key: Key) -> Result:
        nonlocal calls
        if key == B:
            return Result()
        calls += 1
        return Result(requeue_after=5.0, failed=next(outcomes))

    queue = queue_with(handler, clock)
    queue.own(A)
    queue.own(B)  # another key is not slowed by A's failures
    task = asyncio.create_task(queue.run())
    delays = []
    for i in range(5):
        await until(lambda: calls == i + 1 and A in queue._due)  # noqa: B023
        delays.append(queue._due[A] - clock.now)
        if i == 4:
            break
        clock.now = queue._due[A]
        queue._changed.set()
        await asyncio.sleep(0.01)
    task.cancel()
    # 1, 2, 4 s after failures; the planner's 5 s after a success; then 1 s again.
    assert delays == [1, 2, 4, 5, 1]
    assert queue.retries == 4


async def test_an_exception_in_the_handler_is_a_failure_not_the_end_of_the_queue() -> None:
    calls = 0

    async def handler(key: Key) -> Result:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    clock = Clock()
    queue = queue_with(handler, clock)
    queue.own(A)
    task = asyncio.create_task(queue.run())
    await until(lambda: calls == 1 and A in queue._due)
    clock.now += 1
    queue._changed.set()
    await until(lambda: calls == 2)
    task.cancel()
    assert queue.retries >= 1


async def test_keys_not_owned_are_ignored_and_disowned_keys_dropped() -> None:
    async def handler(key: Key) -> Result:
        return Result()

    queue = queue_with(handler)
    queue.add(A)
    assert len(queue) == 0
    queue.own(A)
    queue.disown(A)
    assert len(queue) == 0


async def test_no_key_is_worked_on_before_the_caches_have_synced() -> None:
    synced = asyncio.Event()
    runs: list[Key] = []

    async def handler(key: Key) -> Result:
        assert synced.is_set(), "worked on a key from an unsynced cache"
        runs.append(key)
        return Result()

    queue = queue_with(handler)
    queue.own(A)

    async def caches_synced() -> None:
        await synced.wait()

    task = asyncio.create_task(queue.run(caches_synced))
    await asyncio.sleep(0.05)
    assert runs == []
    assert queue.depth() == 1
    synced.set()
    await until(lambda: runs == [A])
    task.cancel()


async def test_oldest_age_is_the_longest_wait_of_a_due_key() -> None:
    async def handler(key: Key) -> Result:
        return Result()

    clock = Clock()
    queue = queue_with(handler, clock)
    queue.own(A)
    queue.own(B)
    queue.add(("ns", "later"), after=100)
    clock.now += 7
    assert queue.oldest_age() == 7
    assert queue.depth() == 2


@pytest.mark.parametrize("count", [2, 3, 7])
def test_every_key_is_in_exactly_one_shard(count: int) -> None:
    keys = [(f"ns{i % 5}", f"model-{i}") for i in range(500)]
    for ns, name in keys:
        assert sum(in_shard(ns, name, i, count) for i in range(count)) == 1
    sizes = [sum(in_shard(ns, name, i, count) for ns, name in keys) for i in range(count)]
    assert min(sizes) > 500 / count / 2  # roughly even


def test_one_shard_takes_everything() -> None:
    assert in_shard("a", "b", 0, 1)


async def test_keys_failed_for_the_api_server_run_at_once_when_it_serves_again() -> None:
    """An outage grows a key's backoff (here to 8 s); once a cache lists again the keys that
    failed only for the API server run now, their count reset. Other failures keep theirs."""
    clock = Clock()
    calls: dict[Key, int] = {A: 0, B: 0}

    async def handler(key: Key) -> Result:
        calls[key] += 1
        return Result(failed=True, unavailable=key == A)

    queue = queue_with(handler, clock)
    queue.own(A)
    queue.own(B)
    task = asyncio.create_task(queue.run())
    for i in range(4):  # failures at 1, 2, 4 then 8 s apart for both keys
        await until(lambda: calls[A] == calls[B] == i + 1 and A in queue._due and B in queue._due)  # noqa: B023
        if i < 3:
            clock.now = max(queue._due[A], queue._due[B])
            queue._changed.set()
    assert queue._due[A] - clock.now == 8
    assert queue.retry_unavailable() == 1
    await until(lambda: calls[A] == 5)
    assert calls[B] == 4  # still waiting out its own backoff
    # Failing again, A starts over at 1 s: the outage's count was dropped.
    await until(lambda: A in queue._due)
    assert queue._due[A] - clock.now == 1
    assert queue.retry_unavailable() == 1
    await until(lambda: calls[A] == 6)
    task.cancel()


async def test_a_success_or_another_failure_forgets_the_api_server_failure() -> None:
    results = iter([Result(failed=True, unavailable=True), Result(failed=True)])

    async def handler(key: Key) -> Result:
        return next(results, Result())

    clock = Clock()
    queue = queue_with(handler, clock)
    queue.own(A)
    task = asyncio.create_task(queue.run())
    await until(lambda: A in queue._due and queue.retries == 1)
    clock.now = queue._due[A]
    queue._changed.set()
    await until(lambda: A in queue._due and queue.retries == 2)
    assert queue.retry_unavailable() == 0
    queue.disown(A)
    task.cancel()
