"""The watch-fed cache: LIST then WATCH from the LIST's resourceVersion, every change seen
once, a second LIST when the watch expires (deletions meanwhile included), the newer copy of
an object kept, and `synced` only after the first complete LIST."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from modelrollout.k8s.informer import Informer, Obj, Store, WatchExpiredError, slim


def obj(name: str, version: int, owner: str | None = None, ns: str = "ns") -> Obj:
    labels = {"modelrollout.io/deployment": owner} if owner else {}
    return {
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(version),
            "labels": labels,
            "managedFields": [{"manager": "x"}],
        },
    }


class FakeApi:
    """LISTs answer from `objects`; each WATCH replays the queued events, then waits."""

    def __init__(self, objects: list[Obj], version: str = "10") -> None:
        self.objects = objects
        self.version = version
        self.lists = 0
        self.watched_from: list[str] = []
        self.events: asyncio.Queue[tuple[str, Obj] | Exception] = asyncio.Queue()
        self.gate = asyncio.Event()
        self.gate.set()

    async def lister(self) -> tuple[list[Obj], str]:
        await self.gate.wait()
        self.lists += 1
        return [dict(o, metadata=dict(o["metadata"])) for o in self.objects], self.version

    async def watcher(self, version: str) -> AsyncIterator[tuple[str, Obj]]:
        self.watched_from.append(version)
        while True:
            item = await self.events.get()
            if isinstance(item, Exception):
                raise item
            yield item


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def start(api: FakeApi, store: Store, changes: list[Any]) -> asyncio.Task[None]:
    informer = Informer(
        "test", api.lister, api.watcher, store, lambda old, new: changes.append((old, new))
    )
    task = asyncio.create_task(informer.run())
    await settle()
    return task


async def test_list_then_watch_from_the_lists_version_and_index_by_owner() -> None:
    api = FakeApi([obj("a-1", 3, owner="a"), obj("b-1", 4, owner="b")])
    store, changes = Store("modelrollout.io/deployment"), list[Any]()
    task = await start(api, store, changes)
    assert api.watched_from == ["10"]
    assert [o["metadata"]["name"] for o in store.owned_by("ns", "a")] == ["a-1"]
    assert len(changes) == 2
    # managedFields are not kept.
    assert "managedFields" not in store.get("ns", "a-1")["metadata"]  # type: ignore[index]

    await api.events.put(("ADDED", obj("a-2", 11, owner="a")))
    await api.events.put(("MODIFIED", obj("b-1", 12, owner="a")))  # relabelled to owner a
    await api.events.put(("DELETED", obj("a-1", 13, owner="a")))
    await settle()
    assert sorted(o["metadata"]["name"] for o in store.owned_by("ns", "a")) == ["a-2", "b-1"]
    assert list(store.owned_by("ns", "b")) == []
    assert len(changes) == 5
    task.cancel()


async def test_an_expired_watch_lists_again_and_sees_deletions_made_meanwhile() -> None:
    api = FakeApi([obj("a-1", 3, owner="a"), obj("a-2", 4, owner="a")])
    store, changes = Store("modelrollout.io/deployment"), list[Any]()
    task = await start(api, store, changes)
    api.objects = [obj("a-1", 3, owner="a")]  # a-2 went away while nobody watched
    api.version = "20"
    await api.events.put(WatchExpiredError("410"))
    await settle()
    assert api.lists == 2
    assert api.watched_from == ["10", "20"]
    assert [o["metadata"]["name"] for o in store.owned_by("ns", "a")] == ["a-1"]
    # The unchanged object is not reported again; the deletion is.
    assert changes[-1][1] is None
    assert changes[-1][0]["metadata"]["name"] == "a-2"
    assert len(changes) == 3
    task.cancel()


async def test_the_newer_copy_wins_and_an_event_for_a_stored_version_wakes_nobody() -> None:
    api = FakeApi([])
    store, changes = Store(), list[Any]()
    task = await start(api, store, changes)
    store.upsert(slim(obj("a", 30)))  # what a write returned
    await api.events.put(("MODIFIED", obj("a", 25)))  # an older event still in flight
    await api.events.put(("MODIFIED", obj("a", 30)))  # the write's own event
    await settle()
    assert store.get("ns", "a")["metadata"]["resourceVersion"] == "30"  # type: ignore[index]
    assert changes == []
    task.cancel()


async def test_not_synced_until_the_first_list_is_in_the_store() -> None:
    api = FakeApi([obj("a", 3)])
    api.gate.clear()
    store = Store()
    informer = Informer("test", api.lister, api.watcher, store)
    task = asyncio.create_task(informer.run())
    await settle()
    assert not informer.synced.is_set()
    assert len(store) == 0
    api.gate.set()
    await settle()
    assert informer.synced.is_set()
    assert len(store) == 1
    task.cancel()


async def test_a_broken_watch_lists_again_after_a_pause() -> None:
    api = FakeApi([obj("a", 3)])
    store: Store = Store()
    task = await start(api, store, [])
    await api.events.put(ConnectionError("reset"))
    await asyncio.sleep(0.7)
    assert api.lists == 2
    task.cancel()


async def test_a_shared_store_is_replaced_only_in_the_informers_namespace() -> None:
    store: Store = Store()
    other = obj("x", 1, ns="other")
    store.upsert(other)
    api = FakeApi([obj("a", 3)])
    informer = Informer("test", api.lister, api.watcher, store, namespace="ns")
    task = asyncio.create_task(informer.run())
    await settle()
    assert store.get("other", "x") is not None
    assert store.get("ns", "a") is not None
    task.cancel()


async def test_every_list_after_the_first_reports_a_relist() -> None:
    """The operator retries what failed during an API server outage when a cache lists again;
    the first LIST (start-up) is not a relist."""
    api = FakeApi([obj("a", 3)])
    relists: list[int] = []
    informer = Informer(
        "test", api.lister, api.watcher, Store(), on_relist=lambda: relists.append(api.lists)
    )
    task = asyncio.create_task(informer.run())
    await settle()
    assert api.lists == 1
    assert relists == []
    await api.events.put(WatchExpiredError("410"))
    await settle()
    assert relists == [2]
    await api.events.put(ConnectionError("reset"))
    await asyncio.sleep(0.8)  # the first pause after a broken watch: 0.5 s +- 20%
    assert relists == [2, 3]
    task.cancel()
