"""The plugin's views, rendered from statuses built with the API's own models."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelrollout.cli import render
from modelrollout.cli.render import PLAIN, Style

from . import objects as o

NOW = datetime(2026, 3, 1, 12, 10, 5, tzinfo=UTC)


def lines_after(text: str, heading: str) -> list[str]:
    """The lines of the section that starts with `heading`, up to the next blank line."""
    out: list[str] = []
    started = False
    for line in text.splitlines():
        if line.startswith(heading):
            started = True
        elif started and not line:
            break
        if started:
            out.append(line)
    assert out, f"no section {heading!r} in:\n{text}"
    return out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3599, "59m"),
        (3660, "1h1m"),
        (7200, "2h"),
        (9 * 3600, "9h"),
        (47 * 3600, "47h"),
        (3 * 86400, "3d"),
        (-5, "0s"),
    ],
)
def test_duration_like_kubectl(seconds: float, text: str) -> None:
    assert render.duration(seconds) == text


def test_weight_bar() -> None:
    assert render.weight_bar(25, PLAIN, width=20) == "stable 75% [...............#####] canary 25%"
    assert render.weight_bar(0, PLAIN, width=4) == "stable 100% [....] canary 0%"
    assert render.weight_bar(100, Style(unicode=True), width=4) == "stable 0% [████] canary 100%"
    assert render.weight_bar(140, PLAIN, width=4).endswith("canary 100%")


def test_table_pads_before_painting() -> None:
    rows: list[list[render.Cell]] = [["a", ("Ready", "green"), "x"], ["bbbb", "Failed", "y"]]
    plain = render.table(["N", "PHASE", "Z"], rows)
    coloured = render.table(["N", "PHASE", "Z"], rows, style=Style(color=True))
    assert plain == ["N     PHASE   Z", "a     Ready   x", "bbbb  Failed  y"]
    assert coloured[1] == "a     \x1b[32mReady\x1b[0m   x"


def test_steady_view() -> None:
    text = render.status_view(o.ready(), NOW)
    assert "Phase:         Ready\n" in text
    assert "Generation:    2\n" in text
    assert "stable  aaaaaaaaaa  model v1" in text
    # No rollout: the strategy on one line, no traffic bar, no markers.
    assert (
        "setWeight 10% -> analysis (2 passing windows) -> pause until resumed -> "
        "setWeight 50% -> pause 5m -> promote" in text
    )
    assert "Traffic:" not in text
    assert "Hint:" not in text
    history = lines_after(text, "History:")
    assert history[2].split()[:4] == ["1*", "aaaaaaaaaa", "v1", "Promoted"]


def test_canary_view_marks_the_current_step_and_shows_the_numbers() -> None:
    text = render.status_view(o.canary(step=1, weight=10), NOW)
    assert "Phase:         Progressing\n" in text
    assert "canary  bbbbbbbbbb  model v2" in text
    assert "Traffic:       stable 90% [..................##] canary 10%" in text
    steps = lines_after(text, "Steps:")
    assert steps[0] == "Steps:         step 1 of 5"
    assert steps[1].split() == ["0", "setWeight", "10%", "done"]
    assert steps[2].startswith("  >  1  analysis (2 passing windows)")
    assert steps[2].endswith("1/2 windows passed")
    assert steps[3].split() == ["2", "pause", "until", "resumed"]
    assert steps[-1].split() == ["-", "promote", "(100%)"]

    analysis = lines_after(text, "Analysis:")
    assert analysis[0] == ("Analysis:      Pass  (window ended 15s ago; failed in a row 0/1)")
    assert "within limits" in analysis[1]
    assert analysis[3].split() == ["canary", "1200", "3", "0.25%", "120", "ms"]
    assert analysis[4].split() == ["stable", "3400", "10", "0.29%", "100", "ms"]
    assert analysis[5].split() == ["p99", "ratio", "1.20", "z", "-0.31", "p-value", "0.62"]
    assert "promote iris" in text
    assert "abort iris" in text


def test_indefinite_pause_step_says_how_to_resume() -> None:
    obj = o.canary(step=2, weight=10)
    assert render.waiting_for_resume(obj)
    text = render.status_view(obj, NOW)
    current = next(line for line in text.splitlines() if line.startswith("  >"))
    assert "pause until resumed" in current
    assert current.endswith("waiting: kubectl modelrollout resume iris")
    assert "Hint: waiting at a pause step; continue with: kubectl modelrollout resume iris" in text


def test_timed_pause_shows_time_left() -> None:
    obj = o.canary(step=4, weight=50)
    assert not render.waiting_for_resume(obj)
    current = next(
        line for line in render.status_view(obj, NOW).splitlines() if line.startswith("  >")
    )
    # The step started at 12:08:00, pauses 5m; at 12:10:05 there are 2m55s left.
    assert current.endswith("2m55s left")


def test_all_steps_done_marks_promotion() -> None:
    text = render.status_view(o.canary(step=5, weight=50), NOW)
    assert "Steps:         step 5 of 5" in text
    last = lines_after(text, "Steps:")[-1]
    assert last.startswith("  >  -  promote (100%)")
    assert last.endswith("shifting all traffic to the canary")


def test_paused_by_spec() -> None:
    text = render.status_view(o.canary(step=1, weight=10, paused=True), NOW)
    assert "Phase:         Paused\n" in text
    assert "Hint: paused by spec.paused; continue with: kubectl modelrollout resume iris" in text


def test_bake_view() -> None:
    text = render.status_view(o.baking(), NOW)
    assert "previous  aaaaaaaaaa  kept until the bake ends" in text
    bake = lines_after(text, "Bake:")
    assert (
        bake[0]
        == "Bake:          revision bbbbbbbbbb watched until 2026-03-01T12:20:00Z (in 9m55s)"
    )
    assert bake[1] == "  revision aaaaaaaaaa is kept to roll back to"
    assert bake[2].startswith("Bake analysis: Pass")
    assert bake[5].split()[:3] == ["new", "stable", "1200"]
    assert "roll back to the previous revision now: kubectl modelrollout abort iris" in text


def test_rolled_back_view() -> None:
    text = render.status_view(o.rolled_back(), NOW)
    assert "Phase:         RolledBack\n" in text
    assert "failed  bbbbbbbbbb  rolled back or aborted" in text
    assert "kubectl modelrollout retry iris" in text
    history = lines_after(text, "History:")
    assert history[2].split()[:4] == ["1", "bbbbbbbbbb", "v2", "RolledBack"]
    assert history[2].endswith("canary error rate 25% (100/400) over 5%")
    assert history[3].split()[0] == "2*"
    conditions = lines_after(text, "Conditions:")
    assert conditions[4].split()[:3] == ["Degraded", "True", "RolledBack"]


def test_object_without_status() -> None:
    text = render.status_view(o.mdep(None), NOW)
    assert "Phase:         Pending\n" in text
    assert "Generation:    2 (not yet seen by the operator)" in text
    assert "  none yet" in text


def test_status_behind_the_spec_is_flagged() -> None:
    obj = o.ready()
    obj["metadata"]["generation"] = 3
    text = render.status_view(obj, NOW)
    assert "Generation:    3 (status describes 2; the operator has not caught up yet)" in text


def test_router_is_named() -> None:
    obj = o.canary()
    obj["spec"]["rollout"]["trafficRouter"] = {"type": "gatewayAPI", "httpRoute": "web"}
    assert "Router:        Gateway API HTTPRoute web" in render.status_view(obj, NOW)
    obj["spec"]["rollout"]["trafficRouter"] = {"type": "istio", "virtualService": "vs"}
    assert "Router:        Istio VirtualService vs" in render.status_view(obj, NOW)


def test_default_steps_are_shown_when_the_spec_has_none() -> None:
    obj = o.ready()
    del obj["spec"]["rollout"]
    text = render.status_view(obj, NOW)
    assert "setWeight 10% -> analysis (1 passing window) -> setWeight 25%" in text


def test_unknown_fields_from_a_newer_operator_still_render() -> None:
    obj = o.canary()
    obj["status"]["somethingNew"] = {"x": 1}
    obj["spec"]["futureField"] = True
    text = render.status_view(obj, NOW)
    assert "Phase:         Progressing" in text
    assert "analysis (2 passing windows)" in text


def test_unreadable_parts_of_a_status_are_left_out_not_fatal() -> None:
    obj = o.canary()
    status = obj["status"]
    status["rollout"]["lastAnalysis"]["newMeasure"] = 3  # unknown nested field
    status["conditions"][0].pop("lastTransitionTime")  # a condition this version cannot read
    status["replicas"] = "many"  # a value of the wrong type
    text = render.status_view(obj, NOW)
    assert "Phase:         Progressing" in text
    assert "Replicas:      3 ready of 0" in text
    # The rest of the analysis and the other conditions still show.
    assert "windows passed" in text
    # The heading, the column names, and every condition but the unreadable one.
    assert len(lines_after(text, "Conditions:")) == 2 + len(status["conditions"]) - 1
    assert "lastTransitionTime" not in status["conditions"][0]  # the object is not changed


def test_colour_and_unicode() -> None:
    text = render.status_view(o.rolled_back(), NOW, Style(color=True, unicode=True))
    assert "\x1b[31mRolledBack\x1b[0m" in text
    text = render.status_view(o.canary(), NOW, Style(color=False, unicode=True))
    assert "  ▶  1  analysis" in text
    assert "\x1b[" not in text


def test_list_view() -> None:
    objs = [o.ready(), o.canary(name="fraud"), o.rolled_back()]
    objs[2]["metadata"]["namespace"] = "prod"
    text = render.list_view(objs, NOW, all_namespaces=True)
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["NAMESPACE", "NAME", "PHASE", "STABLE", "CANARY", "STEP", "READY", "AGE"]
    assert rows[1] == ["ml", "iris", "Ready", "v1", "-", "-", "2/2", "1h10m"]
    assert rows[2] == ["ml", "fraud", "Progressing", "v1", "v2", "(10%)", "1/5", "3/3", "1h10m"]
    assert rows[3] == ["prod", "iris", "RolledBack", "v1", "-", "-", "2/2", "1h10m"]
    single = render.list_view(objs[:1], NOW, all_namespaces=False).splitlines()
    assert single[0].split()[0] == "NAME"
    assert render.list_view([], NOW, all_namespaces=False) == ""


def test_deletion_is_shown() -> None:
    obj = o.ready()
    obj["metadata"]["deletionTimestamp"] = "2026-03-01T12:09:05Z"
    assert "Deleting:      since 60s ago\n" in render.status_view(obj, NOW)


def test_status_shows_input_drift_worst_first_and_prediction_evidence() -> None:
    from modelrollout.api.status import FeatureDriftStatus

    obj = o.ready()
    obj["status"]["drift"] = [
        FeatureDriftStatus(input="x", feature="age", score=2.5, values=1200).model_dump(
            by_alias=True
        ),
        FeatureDriftStatus(input="x", feature="income", score=0.04, values=1200).model_dump(
            by_alias=True
        ),
    ]
    text = render.status_view(obj, NOW)
    drift = lines_after(text, "Input drift (worst first):")
    assert drift[1].split() == ["INPUT", "FEATURE", "PSI", "VALUES"]
    assert drift[2].split() == ["x", "age", "2.5", "1200"]
    assert drift[3].split()[:3] == ["x", "income", "0.04"]

    obj = o.canary(step=1, weight=10)
    analysis = obj["status"]["rollout"]["lastAnalysis"]
    analysis |= {"predictionDivergence": 0.8, "predictionEvalue": 1.2e4, "predictionThreshold": 100}
    text = render.status_view(obj, NOW)
    extras = lines_after(text, "Analysis:")[-1]
    assert "prediction divergence 0.8" in extras
    assert "prediction e-value 1.2e+04 (fails at 100)" in extras
