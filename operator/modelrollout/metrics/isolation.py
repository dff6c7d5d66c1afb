"""A tenant's analysis reads its own namespace's series, from a Prometheus the platform allows.

The spec may name a Prometheus URL and replace the PromQL templates; both come from whoever
may edit the ModelDeployment. The platform's policy (tenancy.TenantPolicy) decides:

- `prometheusUrls`: which base URLs a spec may name (none by default), never with credentials,
  a query or a `#` fragment (which would move `/api/v1/query` out of the path);
- `queryOverrides`: `namespaced` parses every query that is sent and requires an equality
  matcher on the namespace label with the object's own namespace in *every* series selector
  (vector, range and subquery alike), so `sum(x{namespace="other"}) # {revision}` is refused
  before it leaves; `off` refuses templates in specs; `any` trusts tenants.

Why parse rather than keep an operator-side list of allowed queries: a list would make every
new dashboard-style query a platform change, while the namespace rule is what isolation
means and can be checked mechanically. The query text sent is the text checked (the parser's
own printer is not used to rewrite it); constructs whose meaning could differ between the
parser and Prometheus (`or` inside a selector, `info()` with its implicit lookups) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import promql_parser

from modelrollout.tenancy import PolicyError, TenantPolicy

from .base import MetricProvider, ProviderError, WindowQuery
from .prometheus import PrometheusProvider, QueryTemplateError, QueryTemplates
from .registry import ProviderFactory

__all__ = ["require_namespace", "tenant_prometheus"]

_RULE = "policy.queryOverrides"
# Functions that read series beyond the selectors written in the query.
_IMPLICIT_READS = frozenset({"info"})


def require_namespace(promql: str, labels: Sequence[str], namespace: str) -> None:
    """Raise ValueError unless every series selector in `promql` has `label="namespace"` for
    one of `labels`."""
    try:
        expr = promql_parser.parse(promql)
    except Exception as exc:  # the binding raises plain ValueError/RuntimeError variants
        raise ValueError(f"{_RULE}: the query does not parse: {exc}") from None
    problems: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.Call):
            name = getattr(getattr(node, "func", None), "name", "")
            if name in _IMPLICIT_READS:
                problems.append(f"{name}() reads series the query does not select")
        if not isinstance(node, promql_parser.VectorSelector):
            return
        matchers = node.matchers
        shown = str(node)
        if matchers.or_matchers:
            problems.append(f"{shown}: `or` inside a selector is not allowed")
        elif not any(
            m.name in labels and m.op == promql_parser.MatchOp.Equal and m.value == namespace
            for m in matchers.matchers
        ):
            problems.append(f'{shown} lacks {labels[0]}="{namespace}"')

    promql_parser.walk(expr, visit, None)
    if problems:
        raise ValueError(
            f'refused by {_RULE}: every series selector must match {labels[0]}="{namespace}": '
            + "; ".join(problems[:3])
        )


def _guard(labels: Sequence[str], promql: str, query: WindowQuery) -> None:
    if query.namespace is None:
        raise ProviderError(f"refused by {_RULE}: the query has no namespace to keep to")
    try:
        require_namespace(promql, labels, query.namespace)
    except ValueError as exc:
        raise ProviderError(str(exc), query=promql) from None


def tenant_prometheus(
    policy: TenantPolicy,
    *,
    spec_url: str | None,
    default_url: str,
    overrides: Mapping[str, str | None],
    factory: ProviderFactory = PrometheusProvider,
    token_file: Path | None = None,
) -> MetricProvider:
    """The provider a spec may have under `policy`, built by `factory` (the registry's);
    ValueError (naming the rule) otherwise. The operator's token (`token_file`) goes only to
    the operator's own Prometheus."""
    url = default_url if spec_url is None else policy.check_prometheus_url(spec_url)
    headers = _bearer(token_file) if spec_url is None and token_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given and policy.query_overrides == "off":
        raise PolicyError(
            "queryOverrides", "this operator allows no query templates in specs (remove them)"
        )
    try:
        templates = QueryTemplates(**given)
    except QueryTemplateError as exc:
        raise QueryTemplateError(f"invalid query override: {exc}") from None
    guard = None
    if given and policy.query_overrides == "namespaced":
        guard = partial(_guard, tuple(policy.namespace_labels))
    return factory(
        url,
        templates=templates,
        namespace_label=policy.namespace_labels[0],
        guard=guard,
        headers=headers,
    )


def _bearer(token_file: Path) -> dict[str, str]:
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ProviderError(f"cannot read the Prometheus token file: {exc.strerror}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}
