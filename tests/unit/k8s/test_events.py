"""Repeated events are aggregated as Kubernetes does: one Event, its count and lastTimestamp
raised, not a new Event per occurrence; a different message is a new Event."""

from __future__ import annotations

from typing import Any

from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from modelrollout.k8s.events import EventRecorder

OWNER = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
}


class FakeClient:
    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}

    async def create(self, event: Any) -> None:
        body = event.to_dict()
        self.events[body["metadata"]["name"]] = body

    async def patch(self, _res: Any, name: str, patch: dict[str, Any], **_: Any) -> None:
        if name not in self.events:
            raise ApiError(status=Status(code=404, message="not found"))
        self.events[name].update(patch)


async def test_the_same_event_again_raises_the_count_of_one_event() -> None:
    client = FakeClient()
    recorder = EventRecorder(client)  # type: ignore[arg-type]
    failed = ("Warning", "AnalysisFailed", "canary error rate 30%")
    for _ in range(3):
        await recorder.record(OWNER, [failed])
    (event,) = client.events.values()
    assert event["count"] == 3
    assert event["reason"] == "AnalysisFailed"
    assert event["lastTimestamp"] >= event["firstTimestamp"]

    await recorder.record(OWNER, [("Warning", "AnalysisFailed", "canary error rate 40%")])
    assert sorted(e["count"] for e in client.events.values()) == [1, 3]


async def test_an_expired_event_is_recorded_anew() -> None:
    client = FakeClient()
    recorder = EventRecorder(client)  # type: ignore[arg-type]
    await recorder.record(OWNER, [("Normal", "Promoted", "v2")])
    client.events.clear()  # the API server let it expire
    await recorder.record(OWNER, [("Normal", "Promoted", "v2")])
    (event,) = client.events.values()
    assert event["count"] == 1


async def test_only_so_many_events_are_remembered() -> None:
    client = FakeClient()
    recorder = EventRecorder(client, remembered=2)  # type: ignore[arg-type]
    for i in range(3):
        await recorder.record(OWNER, [("Normal", "R", str(i))])
    await recorder.record(OWNER, [("Normal", "R", "0")])  # forgotten: a new Event
    assert len(client.events) == 4
