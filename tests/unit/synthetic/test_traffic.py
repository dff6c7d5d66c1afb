"""The synthetic traffic generator against a local receiver: the samples from the ConfigMap,
labelled, at the rate asked, capped by the policy; a missing ConfigMap is said, not sent."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from hack.receiver import Receiver
from modelrollout.api.synthetic import SyntheticStatus, SyntheticTrafficSpec
from modelrollout.synthetic.traffic import SyntheticTraffic
from modelrollout.tenancy import TenantPolicy

SAMPLES = [
    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [i]}]} for i in (1, 2)
]


class ConfigMaps:
    """Stands in for the API server's ConfigMaps (the generator only gets one by name)."""

    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data

    async def get(self, _kind: Any, name: str, namespace: str) -> Any:
        from lightkube import ApiError

        if name not in self.data:
            raise ApiError(response=_NotFound(name))  # type: ignore[arg-type]
        return SimpleNamespace(data=self.data[name])


class _NotFound:
    def __init__(self, name: str) -> None:
        self.status_code = 404
        self._name = name

    def json(self) -> dict[str, Any]:
        return {"code": 404, "message": f'configmaps "{self._name}" not found', "status": "Failure"}


@pytest.fixture(scope="module")
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def drive(rx: Receiver, spec: dict[str, Any], policy: TenantPolicy, path: str, wait: float,
          already: SyntheticStatus | None = None) -> SyntheticStatus | None:  # fmt: skip
    client = ConfigMaps({"samples": {"requests.json": json.dumps(SAMPLES)}})

    async def main() -> SyntheticStatus | None:
        traffic = SyntheticTraffic(client, policy)  # type: ignore[arg-type]
        traffic.drive(("ml", "m"), "rev1", SyntheticTrafficSpec.model_validate(spec),
                      rx.url(path), already)  # fmt: skip
        await asyncio.sleep(wait)
        await traffic.close()
        return traffic.progress("ml", "m")

    return asyncio.run(main())


def test_samples_are_sent_labelled_at_the_rate_up_to_the_total(rx: Receiver) -> None:
    spec = {"ratePerSecond": 20, "maxRequests": 6, "samples": {"configMap": "samples"}}
    started = time.monotonic()
    fast = TenantPolicy.model_validate({"syntheticMaxRate": 50})
    progress = drive(rx, spec, fast, "/status/200/a", 4.0)
    got = rx.requests_to("/status/200/a")
    assert [r.body for r in got] == SAMPLES * 3
    assert all(r.headers["x-modelrollout-synthetic"] == "1" for r in got)
    assert progress == SyntheticStatus(
        revision="rev1", sent=6, errors=0, message="stopped after 6 requests (the maximum)"
    )
    assert time.monotonic() - started >= 0.25, "6 requests at 20/s take a quarter second"


def test_policy_caps_rate_and_total_and_a_restart_keeps_the_count(rx: Receiver) -> None:
    policy = TenantPolicy.model_validate({"syntheticMaxRate": 5, "syntheticMaxRequests": 5})
    spec = {"ratePerSecond": 100, "maxRequests": 1000, "samples": {"configMap": "samples"}}
    already = SyntheticStatus(revision="rev1", sent=3, errors=1)
    progress = drive(rx, spec, policy, "/status/500/b", 3.0, already)
    assert len(rx.requests_to("/status/500/b")) == 2
    assert progress is not None
    assert (progress.sent, progress.errors) == (5, 3)


def test_missing_samples_are_reported(rx: Receiver) -> None:
    spec = {"samples": {"configMap": "absent"}}
    progress = drive(rx, spec, TenantPolicy(), "/status/200/c", 0.2)
    assert progress is not None
    assert progress.sent == 0
    assert "cannot read ConfigMap absent key requests.json" in progress.message
    assert not rx.requests_to("/status/200/c")
