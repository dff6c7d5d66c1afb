"""Prometheus metric provider: instant PromQL queries over the HTTP API.

The queries themselves, their placeholders and the override rules are in `queries.py`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from modelrollout.plan.evidence import Reading

from .base import ProviderError, TrackSample, WindowQuery
from .queries import (
    COUNTER_QUERIES,
    DEFAULT_BUCKETS_QUERY,
    DEFAULT_ERRORS_QUERY,
    DEFAULT_P99_QUERY,
    DEFAULT_REQUESTS_QUERY,
    INPUT_WINDOW_QUERY,
    OUTPUT_COUNTERS_QUERY,
    OUTPUT_WINDOW_QUERY,
    PLACEHOLDERS,
    QueryTemplateError,
    QueryTemplates,
    escape_label_value,
    promql_duration,
    render_template,
    validate_template,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BUCKETS_QUERY",
    "DEFAULT_ERRORS_QUERY",
    "DEFAULT_P99_QUERY",
    "DEFAULT_REQUESTS_QUERY",
    "PLACEHOLDERS",
    "PrometheusProvider",
    "QueryTemplateError",
    "QueryTemplates",
    "promql_duration",
    "render_template",
    "validate_template",
]

_ERROR_TYPE = re.compile(r"^[a-z_]{1,32}$")


class PrometheusProvider:
    """Measures a revision with instant queries against ``{base_url}/api/v1/query``.

    ``client`` may be given (tests, connection reuse); it is then not closed here. Without one,
    each ``sample`` uses a short-lived client, so a provider built per reconcile leaks nothing.
    ``namespace_label`` is the label the scrape configuration puts the pod namespace in; None
    means the series carry no namespace and a query's namespace is not used in the selector.
    ``guard`` sees every rendered query before it is sent and may refuse it with ProviderError
    (isolation.py keeps a tenant's templates to its namespace with it).
    """

    kind: Final = "prometheus"

    def __init__(
        self,
        base_url: str,
        *,
        templates: QueryTemplates | None = None,
        timeout_seconds: float = 5.0,
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        namespace_label: str | None = "namespace",
        guard: Callable[[str, WindowQuery], None] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus address must be an http(s) URL, got {base_url!r}")
        if not math.isfinite(timeout_seconds) or timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self.base_url = base_url.rstrip("/")
        self.templates = templates or QueryTemplates()
        self.timeout_seconds = timeout_seconds
        self.namespace_label = namespace_label
        self._client = client
        self._headers = dict(headers or {})
        self._guard = guard

    @property
    def query_url(self) -> str:
        return f"{self.base_url}/api/v1/query"

    @property
    def shown_url(self) -> str:
        """The query URL without credentials, for messages that end up in status."""
        parts = urlsplit(self.query_url)
        if "@" not in parts.netloc:
            return self.query_url
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))

    def selector(self, query: WindowQuery) -> str:
        matchers = [f'revision="{escape_label_value(query.revision)}"']
        if query.namespace is not None and self.namespace_label:
            matchers.append(f'{self.namespace_label}="{escape_label_value(query.namespace)}"')
        if query.model is not None:
            matchers.append(f'model="{escape_label_value(query.model)}"')
        if query.track is not None:
            matchers.append(f'track="{escape_label_value(query.track)}"')
        return ",".join(matchers)

    def render(self, query: WindowQuery) -> dict[str, str]:
        """The PromQL the sample would send, by name (requests, errors, latency_p99)."""
        values: dict[str, str | None] = {
            "revision": escape_label_value(query.revision),
            "namespace": None if query.namespace is None else escape_label_value(query.namespace),
            "model": None if query.model is None else escape_label_value(query.model),
            "track": None if query.track is None else escape_label_value(query.track),
            "window": promql_duration(query.window_seconds),
            "selector": self.selector(query),
        }
        rendered = {
            f.name: render_template(getattr(self.templates, f.name), values)
            for f in fields(self.templates)
        }
        if self._guard is not None:
            for promql in rendered.values():
                self._guard(promql, query)
        return rendered

    async def sample(self, query: WindowQuery) -> TrackSample:
        promql = self.render(query)
        if query.outputs:
            window = promql_duration(query.window_seconds)
            values = {"selector": self.selector(query), "window": window}
            promql["outputs"] = render_template(OUTPUT_WINDOW_QUERY, values)
        if self._client is not None:
            series = await self._run_all(self._client, promql, query.at)
        else:
            async with httpx.AsyncClient() as client:
                series = await self._run_all(client, promql, query.at)
        return TrackSample(
            requests=_count(_values(series["requests"])),
            errors=_count(_values(series["errors"])),
            p99_seconds=_single_seconds(_values(series["latency_p99"]), promql["latency_p99"]),
            window_seconds=query.window_seconds,
            latency_buckets=_buckets(series["latency_buckets"]),
            outputs=_outputs(series["outputs"]) if "outputs" in series else None,
        )

    async def counters(self, query: WindowQuery) -> Reading:
        """The revision's cumulative request, 5xx and latency-histogram counters now (or at
        ``query.at``); the window is not used. Unusable numbers are a ProviderError: a
        counter cannot be NaN or negative, and guessing would corrupt the evidence."""
        values: dict[str, str | None] = {
            "revision": escape_label_value(query.revision),
            "selector": self.selector(query),
        }
        promql = {k: render_template(v, values) for k, v in COUNTER_QUERIES.items()}
        if query.outputs:
            promql["outputs"] = render_template(OUTPUT_COUNTERS_QUERY, values)
        if self._client is not None:
            series = await self._run_all(self._client, promql, query.at)
        else:
            async with httpx.AsyncClient() as client:
                series = await self._run_all(client, promql, query.at)
        requests = _count(_values(series["requests"]))
        errors = _count(_values(series["errors"]))
        if requests is None or errors is None:
            raise ProviderError(
                f"Prometheus at {self.shown_url} returned an unusable request counter for "
                f"revision {query.revision}",
                query=promql["requests"],
            )
        buckets = _buckets(series["buckets"]) or ()
        synthetic = _count(_values(series["synthetic"])) or 0  # a server without the counter
        return Reading(
            requests,
            min(errors, requests),
            tuple((le, round(n)) for le, n in buckets),
            outputs=_outputs(series["outputs"]) if "outputs" in series else None,
            synthetic=min(synthetic, requests),
        )

    async def inputs(self, query: WindowQuery) -> dict[tuple[str, str], dict[str, float]]:
        """Input feature values per (input, feature) and bucket over the query's window."""
        values = {"selector": self.selector(query), "window": promql_duration(query.window_seconds)}
        promql = {"inputs": render_template(INPUT_WINDOW_QUERY, values)}
        if self._client is not None:
            series = await self._run_all(self._client, promql, query.at)
        else:
            async with httpx.AsyncClient() as client:
                series = await self._run_all(client, promql, query.at)
        out: dict[tuple[str, str], dict[str, float]] = {}
        for labels, value in series["inputs"]:
            key = (labels.get("input", ""), labels.get("feature", ""))
            bucket = labels.get("bucket")
            if all(key) and bucket and math.isfinite(value) and value >= 0:
                out.setdefault(key, {})[bucket] = value
        return out

    async def _run_all(
        self, client: httpx.AsyncClient, promql: Mapping[str, str], at: float | None
    ) -> dict[str, list[Series]]:
        names = list(promql)
        outcomes = await asyncio.gather(
            *(self._query(client, name, promql[name], at) for name in names),
            return_exceptions=True,
        )
        values: dict[str, list[Series]] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            values[name] = outcome
        return values

    async def _query(
        self, client: httpx.AsyncClient, name: str, promql: str, at: float | None
    ) -> list[Series]:
        params = {"query": promql, "timeout": promql_duration(self.timeout_seconds)}
        if at is not None:
            params["time"] = repr(float(at))
        what = f"Prometheus {name} query at {self.shown_url}"
        try:
            response = await client.get(
                self.query_url,
                params=params,
                headers=self._headers,
                timeout=self.timeout_seconds,
            )
        except httpx.TimeoutException:
            raise ProviderError(
                f"{what} timed out after {self.timeout_seconds:g}s", query=promql
            ) from None
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            raise ProviderError(f"{what} failed: {detail}", query=promql) from None
        return _parse(response, what, promql)


def _size(response: httpx.Response) -> str:
    # Upstream bodies never reach status (a tenant reads it): only their size is told.
    return f"{len(response.content)} bytes, not shown"


Series = tuple[Mapping[str, str], float]


def _values(series: list[Series]) -> list[float]:
    return [value for _, value in series]


def _buckets(series: list[Series]) -> tuple[tuple[float, float], ...] | None:
    """Cumulative histogram buckets from a `sum by (le)` vector; None unless well formed."""
    pairs: list[tuple[float, float]] = []
    for labels, value in series:
        le = labels.get("le")
        if le is None or not (math.isfinite(value) and value >= 0):
            return None
        try:
            pairs.append((float(le), value))
        except ValueError:
            return None
    pairs.sort()
    if not pairs or pairs[-1][0] != math.inf:
        return None
    return tuple(pairs)


def _outputs(series: list[Series]) -> dict[str, dict[str, float]]:
    """Predictions per output and bucket from a `sum by (output, bucket)` vector; unusable
    values (NaN, negative) leave their bucket out, which keeps its output from being judged."""
    out: dict[str, dict[str, float]] = {}
    for labels, value in series:
        output, bucket = labels.get("output"), labels.get("bucket")
        if output and bucket and math.isfinite(value) and value >= 0:
            out.setdefault(output, {})[bucket] = value
    return out


def _parse(response: httpx.Response, what: str, promql: str) -> list[Series]:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "error":
        # Prometheus explains bad queries and overload in the body, with a 4xx/5xx status.
        # Its errorType is a fixed vocabulary (bad_data, timeout...); the message is its text,
        # logged for the platform team rather than written where the tenant reads.
        kind = str(body.get("errorType") or "")
        kind = kind if _ERROR_TYPE.match(kind) else f"HTTP {response.status_code}"
        log.info("%s was rejected (%s): %.500s", what, kind, body.get("error"))
        raise ProviderError(
            f"{what} was rejected ({kind}); the operator log has Prometheus' message",
            query=promql,
        )
    if response.is_error:
        raise ProviderError(
            f"{what} returned HTTP {response.status_code} ({_size(response)})", query=promql
        )
    if not isinstance(body, dict):
        shape = "a non-JSON answer" if body is None else "JSON that is not an API response"
        raise ProviderError(f"{what} returned {shape} ({_size(response)})", query=promql)
    if body.get("status") != "success":
        raise ProviderError(f"{what} returned a status other than success", query=promql)
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError(f"{what} returned no data", query=promql)
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        return [({}, _value(result, what, promql))]
    if result_type != "vector":
        shown = result_type if result_type in ("matrix", "string") else "non-vector"
        raise ProviderError(
            f"{what} returned a {shown} result; the query must return an instant "
            "vector or a scalar",
            query=promql,
        )
    if not isinstance(result, list):
        raise ProviderError(f"{what} returned a malformed vector", query=promql)
    out: list[Series] = []
    for series in result:
        if not isinstance(series, dict):
            raise ProviderError(f"{what} returned a malformed vector", query=promql)
        labels = series.get("metric")
        labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
        out.append((labels, _value(series.get("value"), what, promql)))
    return out


def _value(pair: object, what: str, promql: str) -> float:
    # A sample is [unix_time, "value"]; the value is a string so it can carry NaN and ±Inf.
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        raise ProviderError(f"{what} returned a malformed sample", query=promql)
    raw = pair[1]
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ProviderError(f"{what} returned a non-numeric value", query=promql) from None


def _count(values: list[float]) -> int | None:
    # No series at all means nothing happened (e.g. no 5xx yet), which is a real 0.
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return None
    # increase() extrapolates to the window edges, so counts come back fractional.
    return round(sum(values))


def _single_seconds(values: list[float], promql: str) -> float | None:
    if not values:
        return None
    if len(values) > 1:
        raise ProviderError(
            f"the latency_p99 query returned {len(values)} series; it must return at most one "
            "(aggregate, e.g. with sum by (le))",
            query=promql,
        )
    value = values[0]
    return value if math.isfinite(value) and value >= 0 else None
