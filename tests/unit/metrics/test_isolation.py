"""A tenant's analysis keeps to its namespace and to the Prometheus the platform allows.

The attacks are the ones found against the unguarded provider: a query override reading
another namespace (hidden behind a `#` comment that satisfies the placeholder check), and a
Prometheus URL whose `#` turns the operator into a fetcher of any URL with the answer
copied into status. A real HTTP server on 127.0.0.1 stands in for Prometheus and records
whether anything reached it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelrollout.metrics import ProviderError, WindowQuery
from modelrollout.metrics.isolation import require_namespace, tenant_prometheus
from modelrollout.metrics.prometheus import PrometheusProvider
from modelrollout.tenancy import PolicyError, TenantPolicy

QUERY = WindowQuery("rev-a", 60, namespace="team-a", model="iris", at=1700000000.0)
OTHER = 'sum(modelserver_requests_total{namespace="other-tenant"}) # {revision}'


class Server:
    def __init__(self) -> None:
        self.queries: list[str] = []
        self.authorization: list[str | None] = []
        self.body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
        ).encode()
        self.url = ""


@pytest.fixture
def prometheus() -> Iterator[Server]:
    from urllib.parse import parse_qs, urlsplit

    server = Server()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.queries.append(parse_qs(urlsplit(self.path).query).get("query", [""])[0])
            server.authorization.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def policy(**fields: Any) -> TenantPolicy:
    return TenantPolicy.model_validate(fields)


async def test_another_namespace_in_an_override_is_refused_before_it_is_sent(
    prometheus: Server,
) -> None:
    provider = tenant_prometheus(
        policy(), spec_url=None, default_url=prometheus.url, overrides={"requests": OTHER}
    )
    with pytest.raises(ProviderError) as info:
        await provider.sample(QUERY)
    message = str(info.value)
    assert "refused by policy.queryOverrides" in message
    assert 'lacks namespace="team-a"' in message
    assert prometheus.queries == []


async def test_an_override_kept_to_its_namespace_runs(prometheus: Server) -> None:
    own = (
        "sum(increase(modelserver_requests_total"
        '{namespace="{namespace}",revision="{revision}"}[{window}]))'
    )
    provider = tenant_prometheus(
        policy(), spec_url=None, default_url=prometheus.url, overrides={"requests": own}
    )
    sample = await provider.sample(QUERY)
    assert sample.requests == 0
    assert len(prometheus.queries) == 4
    # The four queries go out concurrently, in any order.
    assert any('namespace="team-a",revision="rev-a"}[60s]' in q for q in prometheus.queries)


@pytest.mark.parametrize(
    ("promql", "problem"),
    [
        ('sum(x{namespace="team-a"}) + sum(x{namespace="team-b"})', 'lacks namespace="team-a"'),
        ('rate(x{namespace=~"team-.*"}[5m])', 'lacks namespace="team-a"'),
        ('max_over_time(x{namespace="team-a"}[5m:1m]) / up', "up{} lacks"),
        ('x{namespace="team-a" or namespace="team-b"}', "`or` inside a selector"),
        ('info(x{namespace="team-a"})', "info() reads series"),
        ("sum(x{", "does not parse"),
    ],
)
def test_every_selector_is_checked(promql: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"policy\.queryOverrides") as info:
        require_namespace(promql, ["namespace"], "team-a")
    assert problem in str(info.value)


def test_selectors_with_the_namespace_pass() -> None:
    require_namespace(
        'histogram_quantile(0.99, sum by (le) (rate(b{namespace="team-a",le!=""}[1m] offset 1m)))'
        ' / on() group_left sum(c{namespace="team-a"} @ 100)',
        ["namespace"],
        "team-a",
    )
    istio = 'sum(istio_requests_total{destination_workload_namespace="team-a"})'
    require_namespace(istio, ["namespace", "destination_workload_namespace"], "team-a")


def test_overrides_off_and_any() -> None:
    with pytest.raises(PolicyError, match=r"policy\.queryOverrides"):
        tenant_prometheus(
            policy(queryOverrides="off"),
            spec_url=None,
            default_url="http://p:9090",
            overrides={"requests": OTHER},
        )
    trusted = tenant_prometheus(
        policy(queryOverrides="any"),
        spec_url=None,
        default_url="http://p:9090",
        overrides={"requests": OTHER},
    )
    assert isinstance(trusted, PrometheusProvider)
    assert 'namespace="other-tenant"' in trusted.render(QUERY)["requests"]


@pytest.mark.parametrize(
    ("allowed", "url", "problem"),
    [
        ([], "http://127.0.0.1:9090", "allows no Prometheus override"),
        (
            ["http://127.0.0.1:*"],
            "http://127.0.0.1:9/latest/meta-data/iam/security-credentials/#",
            "fragment",
        ),
        (["http://127.0.0.1:*"], "http://127.0.0.1:9/x?query=up", "query or fragment"),
        (["http://127.0.0.1:*"], "http://u:p@127.0.0.1:9", "credentials"),
        (["http://prometheus.monitoring.svc:9090"], "http://evil.example:9090", "not an allowed"),
    ],
)
def test_prometheus_url_overrides(allowed: list[str], url: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=r"policy\.prometheusUrls") as info:
        tenant_prometheus(
            policy(prometheusUrls=allowed), spec_url=url, default_url="http://p:9090", overrides={}
        )
    assert problem in str(info.value)


def test_an_allowed_prometheus_url_is_used() -> None:
    provider = tenant_prometheus(
        policy(prometheusUrls=["http://prometheus-*.monitoring.svc:9090"]),
        spec_url="http://prometheus-team-a.monitoring.svc:9090/",
        default_url="http://p:9090",
        overrides={},
    )
    assert isinstance(provider, PrometheusProvider)
    assert provider.query_url == "http://prometheus-team-a.monitoring.svc:9090/api/v1/query"


async def test_the_operators_token_goes_only_to_its_own_prometheus(
    prometheus: Server, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    allowed = policy(prometheusUrls=["http://127.0.0.1:*"])
    own = tenant_prometheus(
        allowed, spec_url=None, default_url=prometheus.url, overrides={}, token_file=token
    )
    await own.sample(QUERY)
    assert set(prometheus.authorization) == {"Bearer s3cret"}
    prometheus.authorization.clear()
    named = tenant_prometheus(
        allowed,
        spec_url=prometheus.url,
        default_url="http://p:9090",
        overrides={},
        token_file=token,
    )
    await named.sample(QUERY)
    assert set(prometheus.authorization) == {None}
    with pytest.raises(ProviderError, match="cannot read the Prometheus token file"):
        tenant_prometheus(
            allowed,
            spec_url=None,
            default_url=prometheus.url,
            overrides={},
            token_file=tmp_path / "missing",
        )
