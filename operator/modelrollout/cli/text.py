"""Text building blocks of the plugin's views: styles, tables, bars, durations and numbers.
Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelrollout.api.names import parse_time
from modelrollout.api.types import parse_duration

Obj = Mapping[str, Any]

PHASE_COLOURS = {
    "Ready": "green",
    "Progressing": "cyan",
    "Pending": "cyan",
    "Paused": "yellow",
    "RolledBack": "red",
    "Degraded": "red",
    "Failed": "red",
}
VERDICT_COLOURS = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow"}
OUTCOME_COLOURS = {"Promoted": "green", "RolledBack": "red", "Aborted": "yellow"}
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


def time_or_none(text: str | None) -> datetime | None:
    """A status timestamp, or None when absent or unreadable (a view shows `-` for it)."""
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
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
    then = time_or_none(text)
    if then is None:
        return "-"
    return duration((now - then).total_seconds())


def until(text: str | None, now: datetime) -> str:
    """Time left until `text`: `in 3m`, or `now` once passed."""
    then = time_or_none(text)
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


def rate_text(rate: float | None) -> str:
    """A fraction as a percentage: 0.034 -> `3.4%`."""
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
