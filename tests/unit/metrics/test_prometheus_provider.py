"""Prometheus provider: the queries it sends and how it reads answers (HTTP mocked)."""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from modelrollout.metrics import (
    MetricProvider,
    PrometheusProvider,
    ProviderError,
    QueryTemplateError,
    QueryTemplates,
    TrackSample,
    WindowQuery,
)
from modelrollout.metrics.prometheus import promql_duration, validate_template

BASE = "http://prometheus.test:9090"
QUERY = WindowQuery(revision="rev-abc", window_seconds=60, namespace="prod")


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {}, "value": [1700000000.0, v]} for v in values],
        },
    }


def kind_of(promql: str) -> str:
    if promql.startswith("sum by (le) (increase("):
        return "buckets"
    if "histogram_quantile" in promql:
        return "p99"
    if 'code=~"5.."' in promql:
        return "errors"
    return "requests"


Answer = dict[str, Any] | httpx.Response | Exception


class FakePrometheus:
    """Answers each of the three queries from a table and records what was asked."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        kind = kind_of(request.url.params["query"])
        # Tables written before the bucket query existed answer it with no series.
        answer = self.answers.get(kind, vector()) if kind == "buckets" else self.answers[kind]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def sent(self) -> dict[str, str]:
        return {kind_of(r.url.params["query"]): r.url.params["query"] for r in self.requests}


def provider_for(
    answers: Mapping[str, Answer], **kwargs: Any
) -> tuple[PrometheusProvider, FakePrometheus]:
    fake = FakePrometheus(answers)
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return PrometheusProvider(BASE, client=client, **kwargs), fake


HEALTHY: dict[str, Answer] = {
    "requests": vector("199.7"),
    "errors": vector("2.2"),
    "p99": vector("0.087"),
}


async def test_vector_results() -> None:
    provider, _ = provider_for(HEALTHY)
    sample = await provider.sample(QUERY)
    assert sample == TrackSample(requests=200, errors=2, p99_seconds=0.087, window_seconds=60)


async def test_counts_sum_over_series() -> None:
    # A user template that forgot sum() still counts every pod.
    answers = {**HEALTHY, "requests": vector("100", "50.4", "49.8")}
    provider, _ = provider_for(answers)
    assert (await provider.sample(QUERY)).requests == 200


async def test_empty_results_mean_no_traffic_not_an_error() -> None:
    empty = vector()
    provider, _ = provider_for({"requests": empty, "errors": empty, "p99": empty})
    sample = await provider.sample(QUERY)
    assert sample == TrackSample(requests=0, errors=0, p99_seconds=None, window_seconds=60)


async def test_no_errors_series_yet_is_zero() -> None:
    provider, _ = provider_for({**HEALTHY, "errors": vector()})
    assert (await provider.sample(QUERY)).errors == 0


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({**HEALTHY, "p99": vector("NaN")}, TrackSample(200, 2, None, 60)),
        ({**HEALTHY, "p99": vector("+Inf")}, TrackSample(200, 2, None, 60)),
        ({**HEALTHY, "requests": vector("NaN")}, TrackSample(None, 2, 0.087, 60)),
        ({**HEALTHY, "errors": vector("1", "NaN")}, TrackSample(200, None, 0.087, 60)),
        ({**HEALTHY, "requests": vector("-Inf")}, TrackSample(None, 2, 0.087, 60)),
        ({**HEALTHY, "requests": vector("-3")}, TrackSample(None, 2, 0.087, 60)),
    ],
    ids=["p99 NaN", "p99 +Inf", "requests NaN", "errors partly NaN", "-Inf", "negative"],
)
async def test_unusable_values_become_none(
    answers: dict[str, Answer], expected: TrackSample
) -> None:
    provider, _ = provider_for(answers)
    assert await provider.sample(QUERY) == expected


async def test_scalar_result() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "42"]}}
    provider, _ = provider_for({**HEALTHY, "requests": scalar})
    assert (await provider.sample(QUERY)).requests == 42


def error_body(status: int, error_type: str, message: str) -> httpx.Response:
    body = {"status": "error", "errorType": error_type, "error": message}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            error_body(400, "bad_data", 'parse error: unexpected "}"'),
            r"requests query .* rejected \(bad_data\); the operator log has Prometheus' message$",
        ),
        (
            error_body(503, "unavailable", "too many queries"),
            r"rejected \(unavailable\);",
        ),
        (
            {"status": "error", "errorType": "execution", "error": "query timed out"},
            r"rejected \(execution\);",
        ),
        (httpx.Response(500, text="internal meltdown\n"), r"HTTP 500 \(18 bytes, not shown\)$"),
        (
            httpx.Response(502, text="<html>bad gateway</html>"),
            r"HTTP 502 \(24 bytes, not shown\)$",
        ),
        (
            httpx.Response(200, text="<html>login</html>"),
            r"non-JSON answer \(18 bytes, not shown\)$",
        ),
        (httpx.Response(200, json=["not", "an", "object"]), r"JSON that is not an API response"),
        ({"status": "success"}, r"returned no data"),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            r"a matrix result; the query must return an instant vector or a scalar",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"v": 1}]}},
            r"malformed sample",
        ),
        (vector("lots"), r"non-numeric value$"),
        (httpx.ReadTimeout("slow"), r"requests query at .* timed out after 5s"),
        (httpx.ConnectError("connection refused"), r"failed: connection refused"),
    ],
    ids=[
        "bad query",
        "overloaded",
        "error status with 200",
        "HTTP 500",
        "HTTP 502 html",
        "non-JSON",
        "JSON not an object",
        "no data",
        "matrix",
        "malformed sample",
        "non-numeric",
        "timeout",
        "connection refused",
    ],
)
async def test_provider_errors(answer: Answer, message: str) -> None:
    provider, _ = provider_for({**HEALTHY, "requests": answer})
    with pytest.raises(ProviderError, match=message) as caught:
        await provider.sample(QUERY)
    assert caught.value.query is not None
    assert "rev-abc" in caught.value.query
    # What the server said stays out of the message (it ends up in status, read by tenants).
    for upstream in ("meltdown", "html", "login", "lots", "too many", "parse"):
        assert upstream not in str(caught.value)


async def test_p99_with_several_series_is_an_error() -> None:
    provider, _ = provider_for({**HEALTHY, "p99": vector("0.1", "0.2")})
    with pytest.raises(ProviderError, match="latency_p99 query returned 2 series"):
        await provider.sample(QUERY)


async def test_default_queries_select_revision_namespace_and_window() -> None:
    provider, fake = provider_for(HEALTHY)
    await provider.sample(QUERY)
    sent = fake.sent()
    assert set(sent) == {"requests", "errors", "p99", "buckets"}
    for promql in sent.values():
        assert 'revision="rev-abc"' in promql
        assert 'namespace="prod"' in promql
        assert "[60s]" in promql
    assert sent["requests"].startswith("sum(increase(modelserver_requests_total{")
    assert 'code=~"5.."' in sent["errors"]
    assert sent["p99"].startswith("histogram_quantile(0.99, sum by (le) (rate(")
    assert "modelserver_request_duration_seconds_bucket{" in sent["p99"]
    assert "modelserver_request_duration_seconds_bucket{" in sent["buckets"]


def buckets(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"le": le}, "value": [1700000000.0, v]} for le, v in pairs],
        },
    }


async def test_latency_buckets_are_parsed_cumulative_and_sorted() -> None:
    answer = buckets(("+Inf", "200"), ("0.05", "150.4"), ("0.1", "190"), ("0.025", "80"))
    provider, _ = provider_for({**HEALTHY, "buckets": answer})
    sample = await provider.sample(QUERY)
    assert sample.latency_buckets == ((0.025, 80), (0.05, 150.4), (0.1, 190), (math.inf, 200))


@pytest.mark.parametrize(
    "answer",
    [
        buckets(("0.05", "1"), ("0.1", "2")),  # no +Inf bucket
        buckets(("0.05", "NaN"), ("+Inf", "2")),
        buckets(("fast", "1"), ("+Inf", "2")),
        vector("3"),  # no le label
    ],
)
async def test_unusable_buckets_are_unknown_not_an_error(answer: dict[str, Any]) -> None:
    provider, _ = provider_for({**HEALTHY, "buckets": answer})
    sample = await provider.sample(QUERY)
    assert sample.latency_buckets is None
    assert sample.requests == 200


async def test_request_shape() -> None:
    provider, fake = provider_for(HEALTHY, timeout_seconds=2.5)
    await provider.sample(
        WindowQuery(revision="r1", window_seconds=30, model="m", track="canary", at=1700000000.5)
    )
    request = fake.requests[0]
    assert request.method == "GET"
    assert str(request.url).startswith(f"{BASE}/api/v1/query?")
    assert request.url.params["time"] == "1700000000.5"
    assert request.url.params["timeout"] == "2500ms"
    promql = request.url.params["query"]
    assert 'model="m"' in promql
    assert 'track="canary"' in promql
    assert "namespace" not in promql
    assert "[30s]" in promql


async def test_no_time_parameter_means_now() -> None:
    provider, fake = provider_for(HEALTHY)
    await provider.sample(QUERY)
    assert "time" not in fake.requests[0].url.params


async def test_headers_are_sent() -> None:
    provider, fake = provider_for(HEALTHY, headers={"Authorization": "Bearer t0ken"})
    await provider.sample(QUERY)
    assert all(r.headers["Authorization"] == "Bearer t0ken" for r in fake.requests)


async def test_base_url_with_path_prefix() -> None:
    fake = FakePrometheus(HEALTHY)
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    provider = PrometheusProvider("https://gw.test/prometheus/", client=client)
    await provider.sample(QUERY)
    assert fake.requests[0].url.path == "/prometheus/api/v1/query"


async def test_messages_hide_credentials_in_the_address() -> None:
    fake = FakePrometheus({**HEALTHY, "requests": httpx.Response(500, text="boom")})
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    provider = PrometheusProvider("https://reader:s3cret@prom.test", client=client)
    with pytest.raises(ProviderError) as caught:
        await provider.sample(QUERY)
    assert "s3cret" not in str(caught.value)
    assert "https://prom.test/api/v1/query" in str(caught.value)
    assert fake.requests[0].url.password == "s3cret"


async def test_label_values_are_escaped() -> None:
    provider, fake = provider_for(HEALTHY)
    await provider.sample(WindowQuery(revision='a"b\\c', window_seconds=60))
    assert 'revision="a\\"b\\\\c"' in fake.sent()["requests"]


async def test_namespace_label_is_configurable() -> None:
    provider, fake = provider_for(HEALTHY, namespace_label="kubernetes_namespace")
    await provider.sample(QUERY)
    assert 'kubernetes_namespace="prod"' in fake.sent()["requests"]

    provider, fake = provider_for(HEALTHY, namespace_label=None)
    await provider.sample(QUERY)
    assert "prod" not in fake.sent()["requests"]


# --- templates -------------------------------------------------------------------------------


async def test_template_overrides() -> None:
    templates = QueryTemplates(
        requests='sum(increase(http_total{app="x",rev="{revision}",ns="{ namespace }"}[{window}]))',
        latency_p99="histogram_quantile(0.99, sum by (le) (rate(lat_bucket{{selector}}[5m])))",
    )
    provider, fake = provider_for(HEALTHY, templates=templates)
    await provider.sample(QUERY)
    sent = fake.sent()
    assert sent["requests"] == 'sum(increase(http_total{app="x",rev="rev-abc",ns="prod"}[60s]))'
    assert 'lat_bucket{revision="rev-abc",namespace="prod"}[5m]' in sent["p99"]
    # The errors query was not overridden and keeps its default.
    assert "modelserver_requests_total" in sent["errors"]


async def test_template_needing_a_value_the_query_lacks() -> None:
    templates = QueryTemplates(requests='sum(x{rev="{revision}", ns="{namespace}"})')
    provider, _ = provider_for(HEALTHY, templates=templates)
    with pytest.raises(ProviderError, match=r"uses \{namespace\} but the analysis gives"):
        await provider.sample(WindowQuery(revision="r", window_seconds=60))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            'sum(x{rev="{revison}"})',
            r"placeholder \{revison\} in query template; known: \{model\}",
        ),
        ('sum(x{rev="{revision}", a="{ pod }"})', r"unknown placeholder \{pod\}"),
        ('sum(x{rev="{{ revision }}"})', r'write "\{revision\}" with single braces'),
        ("   ", r"empty"),
        ("sum(rate(x[{window}]))", r"must select the revision"),
        ('sum(rate(x{rev="abc"}[1m]))', r"must select the revision"),
    ],
    ids=["typo", "unknown", "doubled braces", "empty", "no revision", "literal revision"],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(QueryTemplateError, match=message):
        validate_template(template)
    with pytest.raises(QueryTemplateError, match="errors query: "):
        QueryTemplates(errors=template)


def test_default_templates_are_valid() -> None:
    templates = QueryTemplates()
    for template in (templates.requests, templates.errors, templates.latency_p99):
        validate_template(template)


def test_query_template_error_is_a_value_error() -> None:
    # So pydantic validators in the spec can raise it directly.
    assert issubclass(QueryTemplateError, ValueError)


# --- construction and contract ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "duration"), [(60, "60s"), (60.0, "60s"), (1.5, "1500ms"), (0.0001, "1ms")]
)
def test_promql_duration(seconds: float, duration: str) -> None:
    assert promql_duration(seconds) == duration


@pytest.mark.parametrize(
    "build",
    [
        lambda: PrometheusProvider("prometheus:9090"),
        lambda: PrometheusProvider(BASE, timeout_seconds=0),
        lambda: WindowQuery(revision="", window_seconds=60),
        lambda: WindowQuery(revision="r", window_seconds=0.5),
        lambda: WindowQuery(revision="r", window_seconds=float("nan")),
        lambda: promql_duration(0),
    ],
    ids=["no scheme", "zero timeout", "no revision", "short window", "NaN window", "0s"],
)
def test_construction_rejects_nonsense(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        build()


def test_is_a_metric_provider() -> None:
    assert isinstance(PrometheusProvider(BASE), MetricProvider)


def test_provider_error_message_is_its_string() -> None:
    error = ProviderError("Prometheus said no", query="up")
    assert str(error) == "Prometheus said no"
    assert error.query == "up"


async def test_own_client_reports_unreachable_prometheus() -> None:
    # A port that was just free: nothing listens, so the connect fails at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = PrometheusProvider(f"http://127.0.0.1:{port}", timeout_seconds=2)
    with pytest.raises(ProviderError, match=f"127.0.0.1:{port}.* failed"):
        await provider.sample(QUERY)


def counter_kind(promql: str) -> str:
    if promql.startswith("sum by (le)"):
        return "buckets"
    if "modelserver_synthetic_requests_total" in promql:
        return "synthetic"
    return "errors" if 'code=~"5.."' in promql else "requests"


async def test_counters_read_the_raw_cumulative_series() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        promql = request.url.params["query"]
        sent.append(promql)
        kind = counter_kind(promql)
        if kind == "buckets":
            body = {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"le": le}, "value": [1.0, v]}
                        for le, v in (("+Inf", "1200"), ("0.05", "1100"), ("0.025", "700"))
                    ],
                },
            }
            return httpx.Response(200, json=body)
        counts = {"requests": vector("1200"), "synthetic": vector("300")}
        return httpx.Response(200, json=counts.get(kind, vector()))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    reading = await PrometheusProvider(BASE, client=client).counters(QUERY)
    assert (reading.requests, reading.errors, reading.synthetic) == (1200, 0, 300)
    assert reading.buckets == ((0.025, 700), (0.05, 1100), (math.inf, 1200))
    assert all("increase" not in q and "[" not in q for q in sent)
    assert all('revision="rev-abc"' in q and 'namespace="prod"' in q for q in sent)


async def test_counters_without_synthetic_series_read_none() -> None:
    """A server that never answered synthetic traffic exports no synthetic counter."""

    def answer(request: httpx.Request) -> httpx.Response:
        kind = counter_kind(request.url.params["query"])
        return httpx.Response(200, json=vector("50") if kind == "requests" else vector())

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    reading = await PrometheusProvider(BASE, client=client).counters(QUERY)
    assert (reading.requests, reading.synthetic) == (50, 0)


async def test_counters_refuse_unusable_values() -> None:
    provider, _ = provider_for({"requests": vector("NaN"), "errors": vector("1")})
    with pytest.raises(ProviderError, match="unusable request counter for revision rev-abc"):
        await provider.counters(QUERY)


async def test_predictions_are_read_per_output_and_bucket_when_asked() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        promql = request.url.params["query"]
        sent.append(promql)
        if "modelserver_output_bucket_total" in promql:
            rows = [("p", "0", "12"), ("p", "1", "30"), ("p", "other", "NaN"), ("s", "+Inf", "4")]
            body = {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"output": o, "bucket": b}, "value": [1.0, v]}
                        for o, b, v in rows
                    ],
                },
            }
            return httpx.Response(200, json=body)
        return httpx.Response(200, json=vector("42"))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    provider = PrometheusProvider(BASE, client=client)
    plain = await provider.counters(QUERY)
    assert plain.outputs is None
    assert not any("output_bucket" in q for q in sent)
    asked = WindowQuery(revision="rev-abc", window_seconds=60, namespace="prod", outputs=True)
    reading = await provider.counters(asked)
    # A NaN bucket is left out, so that output cannot be compared with the other track's.
    assert reading.outputs == {"p": {"0": 12, "1": 30}, "s": {"+Inf": 4}}
    (counter_query,) = [q for q in sent if "output_bucket" in q]
    assert counter_query == (
        'sum by (output, bucket) (modelserver_output_bucket_total{revision="rev-abc",'
        'namespace="prod"})'
    )
    sample = await provider.sample(asked)
    assert sample.outputs == {"p": {"0": 12, "1": 30}, "s": {"+Inf": 4}}
    assert any("increase(modelserver_output_bucket_total" in q and "[60s]" in q for q in sent)
