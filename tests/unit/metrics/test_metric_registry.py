"""Metric providers looked up by the name the spec uses."""

from __future__ import annotations

import pytest

from modelrollout.metrics import PrometheusProvider, TrackSample, WindowQuery, registry


class StaticProvider:
    async def sample(self, query: WindowQuery) -> TrackSample:
        return TrackSample(100, 0, 0.01, query.window_seconds)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


def test_prometheus_is_registered() -> None:
    assert registry.get("prometheus") is PrometheusProvider
    assert registry.kinds() == ("prometheus",)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown metric provider 'datadog'; known: prometheus"):
        registry.get("datadog")


async def test_register_and_build() -> None:
    registry.register("static", StaticProvider)
    provider = registry.get("static")()
    assert (await provider.sample(WindowQuery("r", 30))).requests == 100
    assert registry.kinds() == ("prometheus", "static")


def test_a_name_cannot_be_taken_twice() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("prometheus", StaticProvider)
