"""The PromQL a Prometheus provider sends: the default queries and the overridable templates.

Three queries per sample, each one an overridable template:

- ``requests``: requests served in the window, REST and gRPC (default
  ``sum(increase(...requests_total[W]) or increase(...grpc_requests_total[W]))``)
- ``errors``: server errors in the window: HTTP 5xx and gRPC UNAVAILABLE, INTERNAL, UNKNOWN,
  DEADLINE_EXCEEDED
- ``latency_p99``: 99th percentile latency in seconds from both duration histograms

Placeholders are a name in single braces, ``{revision}``. PromQL's own braces never hold a bare
name (a label matcher always has an operator, ``{job="x"}``), so the two cannot be confused
and no escaping is needed. Placeholders:

- ``{revision}``, ``{namespace}``, ``{model}``, ``{track}``: the label values of the query,
  already escaped for use inside a double-quoted PromQL string: ``rev="{revision}"``;
- ``{window}``: the analysis window as a PromQL duration, e.g. ``60s``;
- ``{selector}``: the ready-made label matchers, e.g. ``revision="abc",namespace="prod"``,
  used as ``metric{{selector}}`` or ``metric{{selector},code="500"}``.

A template must select the revision (through ``{revision}`` or ``{selector}``), otherwise
canary and stable would read the same numbers and a regression could never show.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final

from .base import ProviderError

PLACEHOLDERS: Final = frozenset({"revision", "namespace", "model", "track", "window", "selector"})

# REST and gRPC requests together: a canary that fails its gRPC callers fails. `or` matches
# label sets without the metric name: the request counters never share one (REST codes are
# numbers, gRPC codes names), so `or` keeps both; the histograms do, so gRPC's buckets get a
# protocol label first. Without its gRPC port a server exports no gRPC family and the
# queries read REST alone.
GRPC_SERVER_ERRORS: Final = ("UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED")
"""gRPC status codes counted like HTTP 5xx: the server's fault, not the caller's."""

_REST = "modelserver_requests_total{{selector}}"
_GRPC = "modelserver_grpc_requests_total{{selector}}"
_REST_5XX = 'modelserver_requests_total{{selector},code=~"5.."}'
_GRPC_5XX = (
    'modelserver_grpc_requests_total{{selector},code=~"' + "|".join(GRPC_SERVER_ERRORS) + '"}'
)
_REST_BUCKETS = "modelserver_request_duration_seconds_bucket{{selector}}"
_GRPC_BUCKETS = "modelserver_grpc_request_duration_seconds_bucket{{selector}}"


def _ranged(fn: str, selector: str) -> str:
    return f"{fn}({selector}[{{window}}])" if fn else selector


def _both(rest: str, grpc: str, fn: str = "") -> str:
    return f"{_ranged(fn, rest)} or {_ranged(fn, grpc)}"


def _both_buckets(fn: str = "") -> str:
    grpc = f'label_replace({_ranged(fn, _GRPC_BUCKETS)}, "protocol", "grpc", "", "")'
    return f"{_ranged(fn, _REST_BUCKETS)} or {grpc}"


DEFAULT_REQUESTS_QUERY: Final = f"sum({_both(_REST, _GRPC, 'increase')})"
DEFAULT_ERRORS_QUERY: Final = f"sum({_both(_REST_5XX, _GRPC_5XX, 'increase')})"
DEFAULT_P99_QUERY: Final = f"histogram_quantile(0.99, sum by (le) ({_both_buckets('rate')}))"
DEFAULT_BUCKETS_QUERY: Final = f"sum by (le) ({_both_buckets('increase')})"
# The raw cumulative counters, for the sequential analysis: it takes differences itself, so
# nothing is extrapolated and a missed read loses nothing.
COUNTER_QUERIES: Final = {
    "requests": f"sum({_both(_REST, _GRPC)})",
    "errors": f"sum({_both(_REST_5XX, _GRPC_5XX)})",
    "buckets": f"sum by (le) ({_both_buckets()})",
    # The operator's own synthetic requests (REST only), left out of the route's share.
    "synthetic": "sum(modelserver_synthetic_requests_total{{selector}})",
}

# Predictions per output and bucket (prediction shift): raw counters for the sequential
# analysis, the window's increase for the windows method. Not overridable: the buckets are the
# model server's own.
OUTPUT_COUNTERS_QUERY: Final = (
    "sum by (output, bucket) (modelserver_output_bucket_total{{selector}})"
)
OUTPUT_WINDOW_QUERY: Final = (
    "sum by (output, bucket) (increase(modelserver_output_bucket_total{{selector}}[{window}]))"
)

# Input feature values per bin of the reference profile over a window (input drift).
INPUT_WINDOW_QUERY: Final = (
    "sum by (input, feature, bucket) "
    "(increase(modelserver_input_bucket_total{{selector}}[{window}]))"
)

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
# "{{ revision }}" inside a label value: Go-template habits would render to "{abc}", a valid
# but never-matching value, and the analysis would sit Inconclusive without saying why.
_DOUBLED = re.compile(r"\"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\"")


class QueryTemplateError(ValueError):
    """A query template is malformed or names an unknown placeholder."""


def _known() -> str:
    return ", ".join("{" + n + "}" for n in sorted(PLACEHOLDERS))


def _placeholders(template: str) -> list[str]:
    """Names used by the template, in order; raises QueryTemplateError when malformed."""
    if not template.strip():
        raise QueryTemplateError("query template is empty")
    doubled = _DOUBLED.search(template)
    if doubled:
        name = doubled.group(1)
        raise QueryTemplateError(
            f'write "{{{name}}}" with single braces, not {doubled.group(0)}, in query template'
        )
    names = _PLACEHOLDER.findall(template)
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        shown = ", ".join("{" + n + "}" for n in unknown)
        raise QueryTemplateError(
            f"unknown placeholder {shown} in query template; known: {_known()}"
        )
    return names


def validate_template(template: str) -> None:
    """Raise QueryTemplateError unless the template is usable (for spec validation too)."""
    names = _placeholders(template)
    if "revision" not in names and "selector" not in names:
        raise QueryTemplateError(
            "query template must select the revision with {revision} or {selector}"
        )


def escape_label_value(value: str) -> str:
    # PromQL double-quoted strings use Go escapes.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promql_duration(seconds: float) -> str:
    """A PromQL duration for a number of seconds (whole seconds, else milliseconds)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def render_template(template: str, values: Mapping[str, str | None]) -> str:
    """Fill the placeholders; a placeholder whose value is None is a ProviderError."""
    _placeholders(template)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name)
        if value is None:
            raise ProviderError(
                f"query template uses {{{name}}} but the analysis gives no {name}",
                query=template,
            )
        return value

    return _PLACEHOLDER.sub(fill, template)


@dataclass(frozen=True, slots=True)
class QueryTemplates:
    """The three PromQL templates; each default may be replaced on its own."""

    requests: str = DEFAULT_REQUESTS_QUERY
    errors: str = DEFAULT_ERRORS_QUERY
    latency_p99: str = DEFAULT_P99_QUERY
    latency_buckets: str = DEFAULT_BUCKETS_QUERY

    def __post_init__(self) -> None:
        for f in fields(self):
            try:
                validate_template(getattr(self, f.name))
            except QueryTemplateError as exc:
                raise QueryTemplateError(f"{f.name} query: {exc}") from None
