"""What the operator configures kopf with at startup: peering, API retries."""

from __future__ import annotations

import kopf
import pytest
from pydantic import ValidationError

from modelrollout.handlers import _configure_kopf
from modelrollout.settings import OperatorSettings


def configured(config: OperatorSettings) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    _configure_kopf(settings, config)
    return settings


def test_a_dead_active_replica_is_replaced_within_20_s_by_default() -> None:
    # kopf's own default (60 s) held every rollout for up to a minute after the active replica
    # was SIGKILLed (`make chaos`, leader-kill): past the 30 s recovery target.
    settings = configured(OperatorSettings(peering="modelrollout"))
    assert settings.peering.lifetime == 20


def test_peering_lifetime_is_configurable_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_PEERING_LIFETIME_SECONDS", "12")
    settings = configured(OperatorSettings(peering="modelrollout"))
    assert settings.peering.lifetime == 12
    # Keep-alives go out 5-10 s before the lifetime ends: shorter than 10 s would flap.
    with pytest.raises(ValidationError, match="peering_lifetime_seconds"):
        OperatorSettings(peering_lifetime_seconds=5)


def test_the_operator_outlasts_an_api_server_restart() -> None:
    # kopf escalates a request's error after its last back-off, and an escalated watch stops
    # the whole operator: [1, 2, 5, 10] (18 s) ended it when kube-apiserver came back slowly
    # (`make chaos`, apiserver-restart). Retries now span over 90 s, at most 5 s apart, so
    # the operator also resumes within seconds once the API server answers.
    backoffs = list(configured(OperatorSettings()).networking.error_backoffs)  # type: ignore[arg-type]
    assert sum(backoffs) >= 90
    assert max(backoffs) <= 5
