"""Watch-fed caches: one list, then one watch, per kind (and namespace), kept in memory.

The shape controller-runtime and client-go informers have: LIST once (its resourceVersion is
where the WATCH starts), apply every watch event to an in-memory store, and LIST again only
when the watch cannot continue (410 Gone, a broken connection). `synced` is set after the first
LIST is in the store: nothing may act on a store before that (it would take a partial view of
the cluster for the whole of it). Reads are from memory; writes go through the API server,
and what a write returned is put back into the store (`put`) so the next read sees it before
its watch event arrives. Every LIST after the first calls `on_relist`: the API server answered
again after the watch broke (the operator retries what failed during the outage then).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelrollout.k8s.errors import api_unavailable

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds
# (old, new): None for old on an addition, None for new on a deletion.
OnChange = Callable[[Obj | None, Obj | None], None]
Lister = Callable[[], Awaitable[tuple[list[Obj], str]]]
Watcher = Callable[[str], AsyncIterator[tuple[str, Obj]]]

# After a failed LIST or a broken WATCH, LIST again after this long (doubling, capped). The cap
# bounds how long after an API server outage the operator notices it is over; a LIST that
# fails to connect costs the API server nothing.
RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 5.0)
RETRY_JITTER = 0.2  # +-20%: informers (and replicas) that failed together do not retry in step
# An optional kind whose LIST failed (its CRD not installed, no RBAC to list it) is tried again
# after 30 s, then less often, up to the period a served watch is renewed at: a CRD installed
# after the operator started is cached from then on, and a cluster without it pays one LIST
# per kind every 5 minutes.
OPTIONAL_RETRY_SECONDS = (30.0, 60.0, 120.0, 300.0)


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): LIST again."""


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _version(obj: Obj | None) -> int:
    """An object's resourceVersion as a number, to keep the newer of two copies. Opaque to
    clients in principle; etcd's revision in every API server this runs against."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def slim(obj: Obj) -> Obj:
    """Drop what no reader uses and what costs the most memory: managedFields and the
    last-applied annotation kubectl writes."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if annotations:
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return obj


@dataclass
class Store:
    """Objects of one kind by (namespace, name), with an index by an owner label."""

    owner_label: str | None = None
    objects: dict[Key, Obj] = field(default_factory=dict)
    by_owner: dict[Key, set[Key]] = field(default_factory=dict)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.objects.get((namespace, name))

    def owned_by(self, namespace: str, owner: str) -> Iterator[Obj]:
        for key in self.by_owner.get((namespace, owner), ()):
            obj = self.objects.get(key)
            if obj is not None:
                yield obj

    def __iter__(self) -> Iterator[Obj]:
        return iter(self.objects.values())

    def __len__(self) -> int:
        return len(self.objects)

    def _owner(self, obj: Obj) -> Key | None:
        if self.owner_label is None:
            return None
        meta = obj["metadata"]
        owner = (meta.get("labels") or {}).get(self.owner_label)
        return (meta.get("namespace") or "", owner) if owner else None

    def upsert(self, obj: Obj) -> Obj | None:
        """Store `obj` unless the stored copy is newer; returns the copy it replaced."""
        key = key_of(obj)
        old = self.objects.get(key)
        if old is not None and _version(old) > _version(obj):
            return old
        if old is not None:
            self._unindex(key, old)
        self.objects[key] = obj
        owner = self._owner(obj)
        if owner is not None:
            self.by_owner.setdefault(owner, set()).add(key)
        return old

    def remove(self, key: Key) -> Obj | None:
        old = self.objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: Key, obj: Obj) -> None:
        owner = self._owner(obj)
        if owner is None:
            return
        keys = self.by_owner.get(owner)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_owner[owner]


class Informer:
    """Keeps `store` equal to the API server's objects of one kind, calling `on_change` for
    every change it sees (not for `put`: a reconcile's own writes wake nobody)."""

    def __init__(
        self,
        name: str,
        lister: Lister,
        watcher: Watcher,
        store: Store,
        on_change: OnChange | None = None,
        transform: Callable[[Obj], Obj] = slim,
        namespace: str | None = None,
        optional: bool = False,
        on_relist: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        # Stores may be shared by the informers of several namespaces: a LIST replaces only
        # this one's ("*" or None: every key).
        self.namespace = namespace
        self.lister = lister
        self.watcher = watcher
        self.store = store
        self.on_change = on_change
        self.on_relist = on_relist
        self.transform = transform
        self.synced = asyncio.Event()
        self.relists = 0
        # An optional kind counts as synced when its LIST fails, so it never holds reconciles
        # back; `served` then says the store is not the API server's view (read it directly).
        self.optional = optional
        self.served = False
        self._unserved_lists = 0  # failed LISTs of an optional kind since it was last served

    def _changed(self, old: Obj | None, new: Obj | None) -> None:
        if self.on_change is not None and old is not new:
            self.on_change(old, new)

    def _replace(self, objects: list[Obj]) -> None:
        seen = set()
        for raw in objects:
            obj = self.transform(raw)
            seen.add(key_of(obj))
            old = self.store.get(*key_of(obj))
            if old is not None and _version(old) == _version(obj):
                continue
            self.store.upsert(obj)
            self._changed(old, obj)
        mine = [k for k in self.store.objects if self.namespace in (None, "*", k[0])]
        for key in [k for k in mine if k not in seen]:
            self._changed(self.store.remove(key), None)

    def _apply(self, kind: str, raw: Obj) -> None:
        obj = self.transform(raw)
        key = key_of(obj)
        if kind == "DELETED":
            old = self.store.remove(key)
            self._changed(old, None)
            return
        old = self.store.get(*key)
        if old is not None and _version(old) >= _version(obj):
            return  # already stored, from a write of ours or an earlier event
        self.store.upsert(obj)
        self._changed(old, obj)

    async def run(self) -> None:
        """LIST, then WATCH from there, forever; LIST again whenever the WATCH breaks."""
        failures = 0
        while True:
            try:
                try:
                    objects, version = await self.lister()
                except Exception as exc:
                    # An outage is not a kind that is not served: retried as any LIST.
                    if not self.optional or api_unavailable(exc):
                        raise
                    await self._unserved(exc)
                    continue
                self._replace(objects)
                self.relists += 1
                self.served = True
                self._unserved_lists = 0
                if self.relists > 1 and self.on_relist is not None:
                    self.on_relist()
                self.synced.set()
                failures = 0
                async for kind, obj in self.watcher(version):
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(kind, obj)
            except asyncio.CancelledError:
                raise
            except WatchExpiredError:
                log.info("watch of %s expired; listing again", self.name)
            except Exception as exc:  # any failure: list again, after a pause
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                delay *= random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
                failures += 1
                log.warning(
                    "watch of %s failed (%s); listing again in %.1fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)

    async def _unserved(self, exc: Exception) -> None:
        """An optional kind that cannot be listed: not cached (readers go to the API server)
        until a later LIST succeeds."""
        if self.served or not self.synced.is_set():
            log.info(
                "%s not cached (%s); read from the API server, listed again in %.0f s to %.0f s",
                self.name,
                exc,
                OPTIONAL_RETRY_SECONDS[0],
                OPTIONAL_RETRY_SECONDS[-1],
            )
        self.served = False
        self._replace([])
        self.synced.set()
        delay = OPTIONAL_RETRY_SECONDS[min(self._unserved_lists, len(OPTIONAL_RETRY_SECONDS) - 1)]
        self._unserved_lists += 1
        await asyncio.sleep(delay)
