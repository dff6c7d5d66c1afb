"""Text views of ModelDeployments: pure functions from the object as the API server returns it
and the current time to lines of text. No I/O, so every view is unit-tested.

The status is read into the API's status model (cli/read.py, leniently: a plugin older or newer
than the operator shows what it can); the spec is shown with the API's defaults filled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modelrollout.api.status import (
    AnalysisStatus,
    BakeStatus,
    ModelDeploymentStatus,
    RolloutStatus,
)
from modelrollout.cli.read import (
    Obj,
    in_rollout,
    read_status,
    router_text,
    spec_with_defaults,
    step_text,
    waiting_for_resume,
)
from modelrollout.cli.text import (
    OUTCOME_COLOURS,
    PHASE_COLOURS,
    PLAIN,
    PLUGIN,
    VERDICT_COLOURS,
    Cell,
    Style,
    age,
    duration,
    go_duration_seconds,
    number,
    rate_text,
    seconds_text,
    table,
    time_or_none,
    until,
    weight_bar,
)

__all__ = [
    "PLAIN",
    "Cell",
    "Style",
    "duration",
    "list_view",
    "status_view",
    "table",
    "waiting_for_resume",
    "weight_bar",
]


def _field(label: str, value: str) -> str:
    return f"{label + ':':<15}{value}"


def _current_step_detail(
    step: Obj, rollout: RolloutStatus, weight: int, now: datetime, name: str
) -> str:
    if step.get("setWeight") is not None:
        target = step["setWeight"]
        return "weight in place" if weight == target else f"moving traffic ({weight}% now)"
    if step.get("pause") is not None:
        length = go_duration_seconds((step.get("pause") or {}).get("duration"))
        started = time_or_none(rollout.step_started)
        if length is None:
            return f"waiting: {PLUGIN} resume {name}"
        if started is None:
            return "pausing"
        left = length - (now - started).total_seconds()
        return f"{duration(left)} left" if left >= 1 else "pause over"
    if step.get("analysis") is not None:
        need = (step.get("analysis") or {}).get("intervals", 1)
        return f"{rollout.passes}/{need} windows passed"
    return ""


def _steps_lines(
    status: ModelDeploymentStatus, spec: Obj, name: str, now: datetime, style: Style
) -> list[str]:
    steps = spec.get("rollout", {}).get("steps") or []
    rollout = status.rollout
    if not (status.canary_revision and rollout):
        chain = f" {style.arrow} ".join([step_text(s) for s in steps] + ["promote"])
        return ["Steps:", f"  {chain}"]
    current, weight = rollout.step, status.canary_weight
    rows: list[list[str]] = []
    for i, step in enumerate(steps):
        if i < current:
            mark, state = " ", "done"
        elif i == current:
            mark, state = style.marker, _current_step_detail(step, rollout, weight, now, name)
        else:
            mark, state = " ", ""
        rows.append([mark, str(i), step_text(step), state])
    final = "shifting all traffic to the canary" if current >= len(steps) else ""
    rows.append([style.marker if current >= len(steps) else " ", "-", "promote (100%)", final])
    lines = [f"Steps:         step {min(current, len(steps))} of {len(steps)}"]
    for row in table(["", "#", "STEP", "STATE"], rows, indent=2)[1:]:
        marked = row.lstrip().startswith(style.marker)
        lines.append(style.paint(row, "bold") if marked else row)
    return lines


def _analysis_lines(
    label: str,
    analysis: AnalysisStatus,
    failures: int,
    limit: int,
    now: datetime,
    style: Style,
    tracks: tuple[str, str] = ("canary", "stable"),
) -> list[str]:
    """The verdict, its reason and the measured numbers. `tracks` names the two rows: during
    the bake window the judged revision is the new stable and there is no baseline."""
    painted = style.paint(analysis.verdict, VERDICT_COLOURS.get(analysis.verdict))
    lines = [
        _field(
            label,
            f"{painted}  ({_judged_when(analysis)} {age(analysis.time, now)} ago; "
            f"failed in a row {failures}/{limit})",
        ),
        f"  {analysis.reason}",
    ]
    a = analysis
    measured = [
        (tracks[0], a.canary_requests, a.canary_errors, a.canary_error_rate, a.canary_p99_seconds),
        (tracks[1], a.stable_requests, a.stable_errors, a.stable_error_rate, a.stable_p99_seconds),
    ]
    rows = [
        [shown, number(requests), number(errors), rate_text(rate), seconds_text(p99)]
        for shown, requests, errors, rate, p99 in measured
        if requests is not None or p99 is not None
    ]
    if rows:
        lines += table(["", "REQUESTS", "ERRORS", "ERROR RATE", "P99"], rows, indent=2)
    extras = []
    if a.p99_ratio is not None:
        extras.append(f"p99 ratio {a.p99_ratio:.2f}")
    if a.z is not None:
        extras.append(f"z {a.z:.2f}")
    if a.p_value is not None:
        extras.append(f"p-value {a.p_value:.2g}")
    if a.prediction_divergence is not None:
        extras.append(f"prediction divergence {a.prediction_divergence:.3g}")
    evidence = (
        ("error", a.error_evalue, a.error_threshold),
        ("latency", a.latency_evalue, a.latency_threshold),
        ("prediction", a.prediction_evalue, a.prediction_threshold),
    )
    for kind, value, threshold in evidence:
        if value is not None and threshold is not None:
            extras.append(f"{kind} e-value {value:.3g} (fails at {threshold:.3g})")
    if extras:
        lines.append("  " + "   ".join(extras))
    return lines


def _judged_when(analysis: AnalysisStatus) -> str:
    """A sequential verdict judges the evidence since the start, not one window."""
    return "read" if analysis.error_threshold is not None else "window ended"


def _history_lines(status: ModelDeploymentStatus, now: datetime, style: Style) -> list[str]:
    if not status.history:
        return []
    rows: list[list[Cell]] = []
    serving_marked = False
    for i, entry in enumerate(status.history, start=1):
        # The newest Promoted entry of the stable revision is what serves now.
        serving = (
            not serving_marked
            and entry.revision == status.stable_revision
            and entry.outcome == "Promoted"
        )
        serving_marked = serving_marked or serving
        rows.append(
            [
                f"{i}{'*' if serving else ''}",
                entry.revision,
                entry.model_version,
                (entry.outcome, OUTCOME_COLOURS.get(entry.outcome)),
                age(entry.finished, now),
                entry.image,
                entry.reason,
            ]
        )
    headers = ["#", "REVISION", "MODEL", "OUTCOME", "FINISHED", "IMAGE", "REASON"]
    return ["History:       newest first; * serving now", *table(headers, rows, 2, style)]


def _hints(obj: Obj, status: ModelDeploymentStatus, spec: Obj, name: str) -> list[str]:
    hints = []
    rolling = in_rollout(obj)
    if spec.get("paused"):
        hints.append(f"paused by spec.paused; continue with: {PLUGIN} resume {name}")
    elif waiting_for_resume(obj):
        hints.append(f"waiting at a pause step; continue with: {PLUGIN} resume {name}")
    if status.phase == "RolledBack":
        hints.append(
            f"revision {status.failed_revision} is not retried on its own; change the spec "
            f"or run: {PLUGIN} retry {name}"
        )
    if status.bake and not rolling:
        hints.append(f"roll back to the previous revision now: {PLUGIN} abort {name}")
    if rolling:
        hints.append(
            f"skip the remaining steps: {PLUGIN} promote {name}; give up: {PLUGIN} abort {name}"
        )
    return hints


def _header_lines(
    meta: Obj, status: ModelDeploymentStatus, spec: Obj, now: datetime, style: Style
) -> list[str]:
    """Name, phase, message, generation, replicas, hardware and router."""
    phase = str(status.phase)
    lines = [
        _field("Name", str(meta.get("name", ""))),
        _field("Namespace", str(meta.get("namespace", ""))),
        _field("Phase", style.paint(phase, PHASE_COLOURS.get(phase))),
    ]
    if status.message:
        lines.append(_field("Message", status.message))
    if meta.get("deletionTimestamp"):
        lines.append(_field("Deleting", f"since {age(meta['deletionTimestamp'], now)} ago"))
    generation, observed = meta.get("generation"), status.observed_generation
    if observed is None:
        lines.append(_field("Generation", f"{generation} (not yet seen by the operator)"))
    elif observed != generation:
        behind = f"status describes {observed}; the operator has not caught up yet"
        lines.append(_field("Generation", f"{generation} ({behind})"))
    else:
        lines.append(_field("Generation", f"{generation}"))
    replicas = f"{status.ready_replicas} ready of {status.replicas}"
    lines.append(_field("Replicas", replicas))
    if status.hardware:
        hw = status.hardware
        fallback = " (CPU fallback)" if hw.fallback else ""
        lines.append(_field("Hardware", f"{hw.tier}{fallback}: {hw.reason}"))
    lines.append(_field("Router", router_text(spec.get("rollout", {}).get("trafficRouter") or {})))
    return lines


def _revision_lines(status: ModelDeploymentStatus, spec: Obj, style: Style) -> list[str]:
    """The stable, canary, failed and previous revisions, and the traffic split."""
    model_version = (spec.get("model") or {}).get("version", "?")
    rows = []
    if status.stable_revision:
        rows.append(["stable", status.stable_revision, f"model {status.model_version}"])
    if status.canary_revision:
        rows.append(["canary", status.canary_revision, f"model {model_version}"])
    if status.failed_revision:
        rows.append(["failed", status.failed_revision, "rolled back or aborted"])
    if status.bake:
        rows.append(["previous", status.bake.previous_revision, "kept until the bake ends"])
    lines = ["Revisions:", *(table(["", "", ""], rows, indent=2)[1:] if rows else ["  none yet"])]
    if status.canary_revision:
        lines.append(_field("Traffic", weight_bar(status.canary_weight, style)))
    return lines


def _judging_lines(
    status: ModelDeploymentStatus, spec: Obj, now: datetime, style: Style
) -> list[str]:
    """Analysis of the canary, or of the new stable during the bake window."""
    settings = spec.get("rollout", {}).get("analysis") or {}
    method = settings.get("method", "sequential")
    sequential = method == "sequential" and not settings.get("queries")
    limit = int(settings.get("failureLimit") or (1 if sequential else 2))
    interval = settings.get("interval") or ("5s" if sequential else "30s")
    lines: list[str] = []
    rollout = status.rollout
    if status.canary_revision and rollout:
        lines.append("")
        if rollout.last_analysis:
            failures = rollout.failures
            lines += _analysis_lines("Analysis", rollout.last_analysis, failures, limit, now, style)
        elif status.canary_weight > 0:
            first = "first read" if sequential else "first window"
            lines.append(_field("Analysis", f"{first} of {interval} not over yet"))
        else:
            lines.append(_field("Analysis", "starts once the canary has traffic"))
    if status.bake:
        lines += _bake_lines(status, status.bake, limit, now, style)
    return lines


def _bake_lines(
    status: ModelDeploymentStatus, bake: BakeStatus, limit: int, now: datetime, style: Style
) -> list[str]:
    watched = f"revision {status.stable_revision} watched until {bake.until}"
    lines = [
        "",
        _field("Bake", f"{watched} ({until(bake.until, now)})"),
        f"  revision {bake.previous_revision} is kept to roll back to",
    ]
    if bake.last_analysis:
        lines += _analysis_lines(
            "Bake analysis", bake.last_analysis, bake.failures, limit, now, style,
            tracks=("new stable", "baseline"),
        )  # fmt: skip
    return lines


def _condition_lines(status: ModelDeploymentStatus, now: datetime) -> list[str]:
    if not status.conditions:
        return []
    rows = [
        [c.type, c.status, c.reason, age(c.last_transition_time, now), c.message]
        for c in status.conditions
    ]
    headers = ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]
    return ["", "Conditions:", *table(headers, rows, indent=2)]


def status_view(obj: Obj, now: datetime, style: Style = PLAIN) -> str:
    """The full `status` view of one ModelDeployment."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    spec = spec_with_defaults(obj.get("spec"))
    status = read_status(obj)
    lines = _header_lines(meta, status, spec, now, style)
    lines += ["", *_revision_lines(status, spec, style)]
    lines += ["", *_steps_lines(status, spec, name or "NAME", now, style)]
    lines += _judging_lines(status, spec, now, style)
    lines += _condition_lines(status, now)
    if status.drift:
        rows = [[d.input, d.feature, f"{d.score:.3g}", number(d.values)] for d in status.drift]
        headers = ["INPUT", "FEATURE", "PSI", "VALUES"]
        lines += ["", "Input drift (worst first):", *table(headers, rows, indent=2)]
    history = _history_lines(status, now, style)
    if history:
        lines += ["", *history]
    hints = _hints(obj, status, spec, name)
    if hints:
        lines += ["", *[style.paint(f"Hint: {h}", "dim") for h in hints]]
    return "\n".join(lines) + "\n"


def list_view(
    objs: Sequence[Obj], now: datetime, all_namespaces: bool, style: Style = PLAIN
) -> str:
    """`list`: one line per ModelDeployment."""
    if not objs:
        return ""
    rows = []
    for obj in objs:
        meta: Obj = obj.get("metadata") or {}
        status = read_status(obj)
        spec: dict[str, Any] = dict(obj.get("spec") or {})
        steps = spec_with_defaults(spec).get("rollout", {}).get("steps") or []
        phase = str(status.phase)
        canary, step = "-", "-"
        if status.canary_revision and status.rollout:
            version = (spec.get("model") or {}).get("version", "?")
            canary = f"{version} ({status.canary_weight}%)"
            step = f"{status.rollout.step}/{len(steps)}"
        row: list[Cell] = [
            str(meta.get("name", "")),
            (phase, PHASE_COLOURS.get(phase)),
            status.model_version or "-",
            canary,
            step,
            f"{status.ready_replicas}/{status.replicas}",
            age(meta.get("creationTimestamp"), now),
        ]
        if all_namespaces:
            row.insert(0, str(meta.get("namespace", "")))
        rows.append(row)
    headers = ["NAME", "PHASE", "STABLE", "CANARY", "STEP", "READY", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    return "\n".join(table(headers, rows, style=style)) + "\n"
