"""The demo's count of answers that were not 2xx: on the real node only v3's injected 500s."""

from __future__ import annotations

from collections import Counter

import pytest

from hack.demoshow import not_2xx, report


def test_not_2xx_leaves_out_the_injected_500s_only_where_they_are_injected() -> None:
    counts = Counter({200: 90, 500: 7, 503: 2, 0: 1})
    assert not_2xx(counts, injected=False) == Counter({500: 7, 503: 2, 0: 1})
    assert not_2xx(counts, injected=True) == Counter({503: 2, 0: 1})


def test_real_node_show_with_only_injected_errors_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    counts = {
        "healthy": Counter({200: 300}),
        "errors": Counter({200: 80, 500: 20}),
        "shuffled": Counter({200: 90}),
    }
    report(counts, real=True)
    out = capsys.readouterr().out
    assert "300 while v2 rolled out, 0 other non-2xx" in out
    assert "100 while v3 ran, 20 of them v3's injected errors (500), 0 other non-2xx" in out
    assert "90 while v4 ran, 0 other non-2xx" in out


@pytest.mark.parametrize(
    "counts",
    [
        {"healthy": Counter({200: 299, 503: 1})},  # a pod that was not ready yet
        {"healthy": Counter({200: 299, 0: 1})},  # refused: not routed yet, or not drained
        {"errors": Counter({200: 80, 500: 19, 502: 1})},
        {"shuffled": Counter({200: 99, 500: 1})},  # v4 injects nothing
    ],
)
def test_real_node_show_fails_on_any_other_non_2xx(counts: dict[str, Counter[int]]) -> None:
    with pytest.raises(SystemExit, match="non-2xx answers on the real node"):
        report(counts, real=True)


def test_kwok_only_show_explains_a_503(capsys: pytest.CaptureFixture[str]) -> None:
    report({"healthy": Counter({200: 299, 503: 1})}, real=False)
    assert "1 x 503: a canary's stand-in process was still loading" in capsys.readouterr().out
