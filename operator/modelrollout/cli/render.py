"""Text views of ModelDeployments: pure functions from the object as the API server returns it
(a JSON dict) and the current time to lines of text. No I/O, so every view is unit-tested.

Views read the raw dict rather than the pydantic status model on purpose: a plugin older or
newer than the operator must still show whatever it can instead of refusing the object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.types import parse_duration

Obj = Mapping[str, Any]

_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ")
_PHASE_COLOURS = {
    "Ready": "green",
    "Progressing": "cyan",
    "Pending": "cyan",
    "Paused": "yellow",
    "RolledBack": "red",
    "Degraded": "red",
    "Failed": "red",
}
_VERDICT_COLOURS = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow"}
_OUTCOME_COLOURS = {"Promoted": "green", "RolledBack": "red", "Aborted": "yellow"}
_ANSI = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1", "dim": "2"}
PLUGIN = "kubectl modelrollout"


@dataclass(frozen=True)
class Style:
    """How to draw: ANSI colours (terminals only) and Unicode bars and markers."""

    color: bool = False
    unicode: bool = True

    def paint(self, text: str, colour: str | None) -> str:
        if not self.color or colour is None or not text:
            return text
        return f"\x1b[{_ANSI[colour]}m{text}\x1b[0m"

    @property
    def marker(self) -> str:
        return "▶" if self.unicode else ">"

    @property
    def arrow(self) -> str:
        return "→" if self.unicode else "->"


PLAIN = Style(color=False, unicode=False)


# --- small formatting helpers ------------------------------------------------------------------


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def duration(seconds: float) -> str:
    """A compact duration as kubectl prints ages: 45s, 3m20s, 12m, 5h10m, 3d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes, sec = divmod(s, 60)
    if minutes < 10:
        return f"{minutes}m{sec}s" if sec else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    if days < 2:
        return f"{days * 24 + hours}h"
    return f"{days}d"


def age(text: str | None, now: datetime) -> str:
    """How long ago `text` (RFC 3339) was: `3m`; `-` when unknown."""
    then = parse_time(text)
    if then is None:
        return "-"
    return duration((now - then).total_seconds())


def until(text: str | None, now: datetime) -> str:
    """Time left until `text`: `in 3m`, or `now` once passed."""
    then = parse_time(text)
    if then is None:
        return "-"
    left = (then - now).total_seconds()
    return f"in {duration(left)}" if left >= 1 else "now"


def go_duration_seconds(text: str | None) -> float | None:
    """Seconds in a Go-style duration (`1m30s`); None when absent or unreadable."""
    if not text:
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError:
        return None


def percent(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate == 0:
        return "0%"
    return f"{rate * 100:.1f}%" if rate >= 0.01 else f"{rate * 100:.2f}%"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    return f"{value * 1000:.3g} ms"


def number(value: Any) -> str:
    return "-" if value is None else str(value)


# A table cell: plain text, or text and the colour to paint it in.
Cell = str | tuple[str, str | None]


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    indent: int = 0,
    style: Style | None = None,
) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded. Cells are
    padded before they are painted, so colours never disturb the alignment."""
    style = style or PLAIN
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(_text(cell)))
    lines = []
    for row in [list(headers), *rows]:
        last = len(row) - 1
        cells = []
        for i, cell in enumerate(row):
            text = _text(cell)
            padded = text if i == last else text.ljust(widths[i])
            colour = None if isinstance(cell, str) else cell[1]
            cells.append(style.paint(text, colour) + padded[len(text) :] if colour else padded)
        lines.append((" " * indent + "  ".join(cells)).rstrip())
    return lines


def weight_bar(weight: int, style: Style, width: int = 20) -> str:
    """`stable [███████████████░░░░░] canary 25%`: the filled part is the canary's share."""
    weight = min(100, max(0, weight))
    filled = round(width * weight / 100)
    on, off = ("█", "░") if style.unicode else ("#", ".")
    bar = style.paint(off * (width - filled), None) + style.paint(on * filled, "cyan")
    return f"stable {100 - weight}% [{bar}] canary {weight}%"


# --- reading the object ------------------------------------------------------------------------


def spec_with_defaults(spec: Obj | None) -> dict[str, Any]:
    """The spec with the API defaults filled in (default steps, analysis limits), as the
    operator sees it. A spec this version cannot read is shown as stored."""
    raw = dict(spec or {})
    try:
        return ModelDeploymentSpec.model_validate(raw).model_dump(by_alias=True, mode="json")
    except ValidationError:
        return raw


def status_of(obj: Obj) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def conditions_of(obj: Obj) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): dict(c) for c in status_of(obj).get("conditions") or []}


def step_text(step: Obj) -> str:
    """One rollout step in words."""
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}%"
    if step.get("pause") is not None:
        length = (step.get("pause") or {}).get("duration")
        return f"pause {length}" if length else "pause until resumed"
    if step.get("analysis") is not None:
        n = (step.get("analysis") or {}).get("intervals", 1)
        return f"analysis ({n} passing window{'s' if n != 1 else ''})"
    return "?"


def in_rollout(obj: Obj) -> bool:
    status = status_of(obj)
    return bool(status.get("canaryRevision")) and status.get("rollout") is not None


def waiting_for_resume(obj: Obj) -> bool:
    """Is the rollout at a pause step without a duration (it waits for `resume`)?"""
    if not in_rollout(obj):
        return False
    steps = spec_with_defaults(obj.get("spec")).get("rollout", {}).get("steps") or []
    index = (status_of(obj).get("rollout") or {}).get("step", 0)
    if not isinstance(index, int) or not 0 <= index < len(steps):
        return False
    pause = steps[index].get("pause")
    return pause is not None and not pause.get("duration")


def _router_text(router: Obj) -> str:
    kind = router.get("type", "replicas")
    if kind == "gatewayAPI":
        return f"Gateway API HTTPRoute {router.get('httpRoute', '?')}"
    if kind == "istio":
        return f"Istio VirtualService {router.get('virtualService', '?')}"
    return "replica ratio (approximate: traffic follows the pod counts)"


# --- the status view ---------------------------------------------------------------------------


def _field(label: str, value: str) -> str:
    return f"{label + ':':<15}{value}"


def _current_step_detail(step: Obj, rollout: Obj, weight: int, now: datetime, name: str) -> str:
    if step.get("setWeight") is not None:
        target = step["setWeight"]
        return "weight in place" if weight == target else f"moving traffic ({weight}% now)"
    if step.get("pause") is not None:
        length = go_duration_seconds((step.get("pause") or {}).get("duration"))
        started = parse_time(rollout.get("stepStarted"))
        if length is None:
            return f"waiting: {PLUGIN} resume {name}"
        if started is None:
            return "pausing"
        left = length - (now - started).total_seconds()
        return f"{duration(left)} left" if left >= 1 else "pause over"
    if step.get("analysis") is not None:
        need = (step.get("analysis") or {}).get("intervals", 1)
        return f"{rollout.get('passes', 0)}/{need} windows passed"
    return ""


def _steps_lines(obj: Obj, spec: Obj, now: datetime, style: Style) -> list[str]:
    steps = spec.get("rollout", {}).get("steps") or []
    status = status_of(obj)
    name = obj.get("metadata", {}).get("name", "NAME")
    if not in_rollout(obj):
        chain = f" {style.arrow} ".join([step_text(s) for s in steps] + ["promote"])
        return ["Steps:", f"  {chain}"]
    rollout = status.get("rollout") or {}
    current = rollout.get("step", 0)
    weight = int(status.get("canaryWeight") or 0)
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
    analysis: Obj,
    failures: int,
    limit: int,
    now: datetime,
    style: Style,
    tracks: tuple[str, str] = ("canary", "stable"),
) -> list[str]:
    """The verdict, its reason and the measured numbers. `tracks` names the two rows: during
    the bake window the judged revision is the new stable and there is no baseline."""
    verdict = str(analysis.get("verdict", "?"))
    painted = style.paint(verdict, _VERDICT_COLOURS.get(verdict))
    lines = [
        _field(
            label,
            f"{painted}  ({_judged_when(analysis)} {age(analysis.get('time'), now)} ago; "
            f"failed in a row {failures}/{limit})",
        ),
        f"  {analysis.get('reason', '')}",
    ]
    rows = [
        [
            shown,
            number(analysis.get(f"{track}Requests")),
            number(analysis.get(f"{track}Errors")),
            percent(analysis.get(f"{track}ErrorRate")),
            seconds_text(analysis.get(f"{track}P99Seconds")),
        ]
        for track, shown in zip(("canary", "stable"), tracks, strict=True)
        if any(analysis.get(f"{track}{k}") is not None for k in ("Requests", "P99Seconds"))
    ]
    if rows:
        lines += table(["", "REQUESTS", "ERRORS", "ERROR RATE", "P99"], rows, indent=2)
    extras = []
    if analysis.get("p99Ratio") is not None:
        extras.append(f"p99 ratio {analysis['p99Ratio']:.2f}")
    if analysis.get("z") is not None:
        extras.append(f"z {analysis['z']:.2f}")
    if analysis.get("pValue") is not None:
        extras.append(f"p-value {analysis['pValue']:.2g}")
    for kind in ("error", "latency"):
        value, threshold = analysis.get(f"{kind}Evalue"), analysis.get(f"{kind}Threshold")
        if value is not None and threshold is not None:
            extras.append(f"{kind} e-value {value:.3g} (fails at {threshold:.3g})")
    if extras:
        lines.append("  " + "   ".join(extras))
    return lines


def _judged_when(analysis: Obj) -> str:
    """A sequential verdict judges the evidence since the start, not one window."""
    return "read" if analysis.get("errorThreshold") is not None else "window ended"


def _history_lines(obj: Obj, now: datetime, style: Style) -> list[str]:
    status = status_of(obj)
    history = status.get("history") or []
    if not history:
        return []
    stable = status.get("stableRevision")
    rows: list[list[Cell]] = []
    serving_marked = False
    for i, entry in enumerate(history, start=1):
        outcome = str(entry.get("outcome", ""))
        # The newest Promoted entry of the stable revision is what serves now.
        serving = not serving_marked and entry.get("revision") == stable and outcome == "Promoted"
        serving_marked = serving_marked or serving
        rows.append(
            [
                f"{i}{'*' if serving else ''}",
                str(entry.get("revision", "")),
                str(entry.get("modelVersion", "")),
                (outcome, _OUTCOME_COLOURS.get(outcome)),
                age(entry.get("finished"), now),
                str(entry.get("image", "")),
                str(entry.get("reason", "")),
            ]
        )
    headers = ["#", "REVISION", "MODEL", "OUTCOME", "FINISHED", "IMAGE", "REASON"]
    return ["History:       newest first; * serving now", *table(headers, rows, 2, style)]


def _hints(obj: Obj, spec: Obj, name: str) -> list[str]:
    status = status_of(obj)
    phase = status.get("phase")
    hints = []
    if spec.get("paused"):
        hints.append(f"paused by spec.paused; continue with: {PLUGIN} resume {name}")
    elif waiting_for_resume(obj):
        hints.append(f"waiting at a pause step; continue with: {PLUGIN} resume {name}")
    if phase == "RolledBack":
        hints.append(
            f"revision {status.get('failedRevision')} is not retried on its own; change the spec "
            f"or run: {PLUGIN} retry {name}"
        )
    if status.get("bake") and not in_rollout(obj):
        hints.append(f"roll back to the previous revision now: {PLUGIN} abort {name}")
    if in_rollout(obj):
        hints.append(
            f"skip the remaining steps: {PLUGIN} promote {name}; give up: {PLUGIN} abort {name}"
        )
    return hints


def status_view(obj: Obj, now: datetime, style: Style = PLAIN) -> str:
    """The full `status` view of one ModelDeployment."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    spec = spec_with_defaults(obj.get("spec"))
    status = status_of(obj)
    phase = str(status.get("phase") or "Pending")
    lines = [
        _field("Name", name),
        _field("Namespace", str(meta.get("namespace", ""))),
        _field("Phase", style.paint(phase, _PHASE_COLOURS.get(phase))),
    ]
    if status.get("message"):
        lines.append(_field("Message", str(status["message"])))
    if meta.get("deletionTimestamp"):
        lines.append(_field("Deleting", f"since {age(meta['deletionTimestamp'], now)} ago"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if observed is None:
        lines.append(_field("Generation", f"{generation} (not yet seen by the operator)"))
    elif observed != generation:
        lines.append(
            _field(
                "Generation",
                f"{generation} (status describes {observed}; the operator has not caught up yet)",
            )
        )
    else:
        lines.append(_field("Generation", f"{generation}"))
    lines.append(
        _field("Replicas", f"{status.get('readyReplicas', 0)} ready of {status.get('replicas', 0)}")
    )
    hardware = status.get("hardware")
    if hardware:
        fallback = " (CPU fallback)" if hardware.get("fallback") else ""
        lines.append(
            _field("Hardware", f"{hardware.get('tier')}{fallback}: {hardware.get('reason')}")
        )
    lines.append(_field("Router", _router_text(spec.get("rollout", {}).get("trafficRouter") or {})))

    # Revisions and traffic.
    lines += ["", "Revisions:"]
    model_version = (spec.get("model") or {}).get("version", "?")
    rows = []
    if status.get("stableRevision"):
        rows.append(["stable", status["stableRevision"], f"model {status.get('modelVersion')}"])
    if status.get("canaryRevision"):
        rows.append(["canary", status["canaryRevision"], f"model {model_version}"])
    if status.get("failedRevision"):
        rows.append(["failed", status["failedRevision"], "rolled back or aborted"])
    bake = status.get("bake")
    if bake:
        rows.append(["previous", bake.get("previousRevision", "?"), "kept until the bake ends"])
    if rows:
        lines += table(["", "", ""], rows, indent=2)[1:]
    else:
        lines.append("  none yet")
    if status.get("canaryRevision"):
        lines.append(_field("Traffic", weight_bar(int(status.get("canaryWeight") or 0), style)))

    # Steps.
    lines += ["", *_steps_lines(obj, spec, now, style)]

    # Analysis of the canary, or of the new stable during the bake window.
    settings = spec.get("rollout", {}).get("analysis") or {}
    sequential = settings.get("method", "sequential") == "sequential" and not settings.get(
        "queries"
    )
    limit = int(settings.get("failureLimit") or (1 if sequential else 2))
    interval = settings.get("interval") or ("5s" if sequential else "30s")
    rollout = status.get("rollout") or {}
    if in_rollout(obj):
        lines.append("")
        if rollout.get("lastAnalysis"):
            lines += _analysis_lines(
                "Analysis",
                rollout["lastAnalysis"],
                int(rollout.get("failures", 0)),
                limit,
                now,
                style,
            )
        elif int(status.get("canaryWeight") or 0) > 0:
            first = "first read" if sequential else "first window"
            lines.append(_field("Analysis", f"{first} of {interval} not over yet"))
        else:
            lines.append(_field("Analysis", "starts once the canary has traffic"))
    if bake:
        lines += [
            "",
            _field(
                "Bake",
                f"revision {status.get('stableRevision')} watched until {bake.get('until')} "
                f"({until(bake.get('until'), now)})",
            ),
            f"  revision {bake.get('previousRevision')} is kept to roll back to",
        ]
        if bake.get("lastAnalysis"):
            lines += _analysis_lines(
                "Bake analysis",
                bake["lastAnalysis"],
                int(bake.get("failures", 0)),
                limit,
                now,
                style,
                tracks=("new stable", "baseline"),
            )

    # Conditions.
    conditions = status.get("conditions") or []
    if conditions:
        rows = [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                age(c.get("lastTransitionTime"), now),
                str(c.get("message", "")),
            ]
            for c in conditions
        ]
        lines += ["", "Conditions:"]
        lines += table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows, indent=2)

    history = _history_lines(obj, now, style)
    if history:
        lines += ["", *history]

    hints = _hints(obj, spec, name)
    if hints:
        lines += ["", *[style.paint(f"Hint: {h}", "dim") for h in hints]]
    return "\n".join(lines) + "\n"


# --- the list view -----------------------------------------------------------------------------


def list_view(
    objs: Sequence[Obj], now: datetime, all_namespaces: bool, style: Style = PLAIN
) -> str:
    """`list`: one line per ModelDeployment."""
    if not objs:
        return ""
    rows = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        status = status_of(obj)
        spec = obj.get("spec") or {}
        steps = spec_with_defaults(spec).get("rollout", {}).get("steps") or []
        phase = str(status.get("phase") or "Pending")
        canary = "-"
        step = "-"
        if in_rollout(obj):
            version = (spec.get("model") or {}).get("version", "?")
            canary = f"{version} ({status.get('canaryWeight', 0)}%)"
            step = f"{(status.get('rollout') or {}).get('step', 0)}/{len(steps)}"
        row: list[Cell] = [
            str(meta.get("name", "")),
            (phase, _PHASE_COLOURS.get(phase)),
            str(status.get("modelVersion") or "-"),
            canary,
            step,
            f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}",
            age(meta.get("creationTimestamp"), now),
        ]
        if all_namespaces:
            row.insert(0, str(meta.get("namespace", "")))
        rows.append(row)
    headers = ["NAME", "PHASE", "STABLE", "CANARY", "STEP", "READY", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    return "\n".join(table(headers, rows, style=style)) + "\n"
