"""The model-read mark (status.profiling) with one status write per reconcile: a reconcile that
must read the model stores the mark and reads nothing; the next one reads and clears it in its
own write. A read that stops the operator leaves the mark behind, and after two such reads the
model is refused without a third."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from modelrollout import placement
from modelrollout.hardware.errors import ProfileError
from modelrollout.reconciler import Reconciler
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

from .test_reconciler import NAME, NS, FakeCluster, FakeRouter, body


class Crash(BaseException):
    """The operator process stops in the middle of a read."""


def cluster(mode: str) -> FakeCluster:
    spec = body() | {"hardware": {"mode": mode}}
    meta = {"name": NAME, "namespace": NS, "uid": "uid-1", "generation": 1}
    return FakeCluster({"kind": "ModelDeployment", "metadata": meta, "spec": spec})


def operator(fake: FakeCluster) -> Reconciler:
    """A freshly started operator process."""
    return Reconciler(
        fake,
        OperatorSettings(serving_image="modelserver:test"),
        OperatorMetrics(CollectorRegistry()),
        router_for=lambda *_: FakeRouter(),
    )


def reads_into(reads: list[str], error: BaseException) -> Any:
    def profile(uri: str, sha: str | None, **_: Any) -> Any:
        reads.append(uri)
        raise error

    return profile


async def test_the_mark_is_stored_in_its_own_reconcile_and_cleared_by_the_one_that_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    # A read that finishes without a profile: an explicit mode is placed all the same.
    monkeypatch.setattr(placement, "profile_uri", reads_into(reads, ProfileError("no ONNX")))
    fake = cluster("cpu")
    reconciler = operator(fake)
    outcome = await reconciler.reconcile(NS, NAME)
    assert (fake.status_writes, reads) == (1, [])
    assert fake.status["profiling"]["attempts"] == 1
    assert outcome.requeue_after == 0  # the read follows at once
    assert fake.objects == {}

    await reconciler.reconcile(NS, NAME)
    assert (fake.status_writes, len(reads)) == (2, 1)
    assert fake.status["profiling"] is None
    assert fake.status["hardware"]["tier"] == "cpu-small"
    assert ("Deployment", f"{NAME}-{fake.status['hardware']['revision']}") in fake.objects


async def test_reads_that_stop_the_operator_twice_refuse_the_model_without_a_third(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    monkeypatch.setattr(placement, "profile_uri", reads_into(reads, Crash()))
    fake = cluster("auto")
    for attempt in (1, 2):
        restarted = operator(fake)
        await restarted.reconcile(NS, NAME)
        assert fake.status["profiling"]["attempts"] == attempt
        with pytest.raises(Crash):
            await restarted.reconcile(NS, NAME)
        assert len(reads) == attempt
    await operator(fake).reconcile(NS, NAME)
    assert len(reads) == 2
    assert fake.condition("Ready") == ("False", "ProfileInterrupted")
    assert fake.status["profiling"]["attempts"] == 2  # the refusal stays with its evidence
    # One write per reconcile that changed something: two marks and the refusal.
    assert fake.status_writes == 3
