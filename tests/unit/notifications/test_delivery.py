"""Delivery to a real local receiver: the webhook payload and the Slack message, retries with
backoff on errors, and failures counted; enqueue never waits and a full queue defers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hack.receiver import Receiver
from modelrollout.api.notifications import NotificationEvent, PendingNotification
from modelrollout.notifications.delivery import Notifier
from modelrollout.settings import NotifierConfig
from modelrollout.telemetry import OperatorMetrics

STEP = PendingNotification(
    id="abc123",
    event=NotificationEvent.STEP_ADVANCED,
    time="2026-11-30T09:00:00Z",
    revision="5c0f2a9e1b",
    stable_revision="1111111111",
    canary_weight=50,
    step=1,
    phase="Progressing",
    message="canary weight to 50%",
)


@pytest.fixture(scope="module")
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def count(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def until_delivered(notifier: Notifier, key: tuple[str, str], id_: str) -> None:
    for _ in range(200):
        if id_ in notifier.delivered(*key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{id_} not delivered")


def test_webhook_and_slack_payloads(rx: Receiver, tmp_path: Path) -> None:
    url_file = tmp_path / "slack-url"
    url_file.write_text(rx.url("/status/200/slack") + "\n")
    configs = [
        NotifierConfig(name="hook", url=rx.url("/status/200/hook")),
        NotifierConfig(name="chat", type="slack", url_file=url_file),
    ]
    metrics = OperatorMetrics(CollectorRegistry())

    async def main() -> None:
        notifier = Notifier(configs, metrics)
        notifier.enqueue("ml", "fraud", ["hook", "chat"], [STEP])
        notifier.enqueue("ml", "fraud", ["hook", "chat"], [STEP])  # in flight: not again
        await until_delivered(notifier, ("ml", "fraud"), "abc123")
        notifier.enqueue("ml", "fraud", ["hook", "chat"], [STEP])  # delivered: not again
        await asyncio.sleep(0.2)
        await notifier.close()

    asyncio.run(main())
    (hook,) = rx.requests_to("/status/200/hook")
    assert hook.body == {
        "id": "abc123",
        "event": "StepAdvanced",
        "time": "2026-11-30T09:00:00Z",
        "namespace": "ml",
        "name": "fraud",
        "revision": "5c0f2a9e1b",
        "stableRevision": "1111111111",
        "canaryWeight": 50,
        "step": 1,
        "phase": "Progressing",
        "message": "canary weight to 50%",
    }
    (chat,) = rx.requests_to("/status/200/slack")
    assert chat.body == {
        "text": ":arrow_forward: step advanced: *ml/fraud* (revision `5c0f2a9e1b`, 50% on the "
        "canary)\ncanary weight to 50%"
    }
    assert count(metrics, "modelrollout_notifications_total", notifier="hook", result="delivered")
    assert count(metrics, "modelrollout_notifications_total", notifier="chat", result="delivered")


def test_failures_are_retried_then_given_up_and_counted(rx: Receiver) -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    configs = [NotifierConfig(name="down", url=rx.url("/status/503/down"))]

    async def main() -> None:
        notifier = Notifier(configs, metrics, attempts=3, backoff=0.01)
        notifier.enqueue("ml", "fraud", ["down", "typo"], [STEP])
        await until_delivered(notifier, ("ml", "fraud"), "abc123")
        await notifier.close()

    asyncio.run(main())
    assert len(rx.requests_to("/status/503/down")) == 3
    failures = "modelrollout_notification_attempt_failures_total"
    assert count(metrics, failures, notifier="down") == 3
    total = "modelrollout_notifications_total"
    assert count(metrics, total, notifier="down", result="failed") == 1
    assert count(metrics, total, notifier="unknown", result="failed") == 1


def test_a_full_queue_defers_instead_of_waiting() -> None:
    metrics = OperatorMetrics(CollectorRegistry())

    async def main() -> None:
        notifier = Notifier([], metrics, queue_size=1)
        many = [STEP.model_copy(update={"id": f"n{i}"}) for i in range(3)]
        notifier.enqueue("ml", "fraud", ["x"], many)
        await notifier.close()

    asyncio.run(main())
    assert count(metrics, "modelrollout_notifications_deferred_total") == 1
