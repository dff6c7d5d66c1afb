"""Events recorded the way Kubernetes aggregates them: the same event again (same object, type,
reason and message) raises the count and moves lastTimestamp of the Event already recorded,
instead of adding an Event per occurrence (a failing analysis every window, a blocked
revision at every resync)."""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from modelrollout.api.names import FIELD_MANAGER, format_time

log = logging.getLogger(__name__)

# (object uid, type, reason, message) -> (namespace, Event name, count)
Seen = tuple[str, str, str, str]
# Events remembered for aggregation; the oldest are forgotten first (then recorded anew).
REMEMBERED = 4096


class EventRecorder:
    def __init__(self, client: AsyncClient, remembered: int = REMEMBERED) -> None:
        self.client = client
        self.remembered = remembered
        self._seen: OrderedDict[Seen, tuple[str, str, int]] = OrderedDict()

    async def record(self, owner: dict[str, Any], events: Iterable[tuple[str, str, str]]) -> None:
        for event_type, reason, message in events:
            try:
                await self._record(owner, event_type, reason, message[:1024])
            except ApiError as exc:
                # An event that can't be recorded must not fail the reconcile it describes.
                log.warning("could not record event %s: %s", reason, exc.status.message)

    async def _record(self, owner: dict[str, Any], event_type: str, reason: str, msg: str) -> None:
        meta = owner["metadata"]
        key = (meta["uid"], event_type, reason, msg)
        now = format_time(datetime.now(UTC))
        known = self._seen.pop(key, None)
        if known is not None:
            namespace, name, count = known
            try:
                await self.client.patch(
                    Event,
                    name,
                    {"count": count + 1, "lastTimestamp": now},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
                self._remember(key, (namespace, name, count + 1))
                return
            except ApiError as exc:
                if exc.status.code != 404:  # expired (events live an hour): record anew
                    raise
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        body = {
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": msg,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.client.create(cast(Event, Event.from_dict(body)))
        self._remember(key, (meta["namespace"], name, 1))

    def _remember(self, key: Seen, value: tuple[str, str, int]) -> None:
        self._seen[key] = value
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)
