"""Sampling both tracks of a window, with provider failures carried as data."""

from __future__ import annotations

import pytest

from modelrollout.metrics import (
    ProviderError,
    TrackSample,
    TrackSamples,
    WindowQuery,
    sample_tracks,
)
from modelrollout.plan.analysis import Verdict, analyse


class ScriptedProvider:
    """Answers by revision; a string answer is raised as that ProviderError."""

    def __init__(self, answers: dict[str, TrackSample | str]) -> None:
        self.answers = answers
        self.asked: list[WindowQuery] = []

    async def sample(self, query: WindowQuery) -> TrackSample:
        self.asked.append(query)
        answer = self.answers[query.revision]
        if isinstance(answer, str):
            raise ProviderError(answer)
        return answer


CANARY = WindowQuery("new", 60, at=1000.0)
STABLE = WindowQuery("old", 60, at=1000.0)
GOOD = TrackSample(400, 1, 0.05, 60)
BAD = TrackSample(400, 90, 0.05, 60)


@pytest.mark.parametrize(
    ("answers", "stable", "expected"),
    [
        ({"new": GOOD, "old": GOOD}, STABLE, TrackSamples(GOOD, GOOD)),
        ({"new": GOOD}, None, TrackSamples(GOOD, None)),
        (
            {"new": GOOD, "old": "Prometheus timed out"},
            STABLE,
            TrackSamples(GOOD, None, "stable: Prometheus timed out"),
        ),
        (
            {"new": "down", "old": "down"},
            STABLE,
            TrackSamples(None, None, "canary: down; stable: down"),
        ),
    ],
    ids=["both", "canary only", "stable fails", "both fail"],
)
async def test_sample_tracks(
    answers: dict[str, TrackSample | str], stable: WindowQuery | None, expected: TrackSamples
) -> None:
    provider = ScriptedProvider(answers)
    assert await sample_tracks(provider, CANARY, stable) == expected
    assert {q.at for q in provider.asked} == {1000.0}


@pytest.mark.parametrize(
    ("answers", "verdict"),
    [
        ({"new": GOOD, "old": GOOD}, Verdict.PASS),
        ({"new": BAD, "old": GOOD}, Verdict.FAIL),
        # A bad-looking canary is still not judged while the stable cannot be measured.
        ({"new": BAD, "old": "HTTP 503"}, Verdict.INCONCLUSIVE),
    ],
    ids=["pass", "fail", "provider error"],
)
async def test_feeds_analysis(answers: dict[str, TrackSample | str], verdict: Verdict) -> None:
    samples = await sample_tracks(ScriptedProvider(answers), CANARY, STABLE)
    result = analyse(samples.canary, samples.stable, provider_error=samples.error)
    assert result.verdict is verdict, result.reason
