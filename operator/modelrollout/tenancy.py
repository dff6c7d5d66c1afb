"""What a tenant's ModelDeployment may make the operator do: set by the platform team only.

A ModelDeployment is written by whoever may edit it in one namespace; the operator runs with
the reach of the whole platform. This policy (operator settings, Helm value `policy`) bounds
what a spec can make the operator fetch, query and spend, so no tenant can read what it could
not reach itself or stop the operator for everyone. Each field is a named rule: a refusal says
which one (`policy.modelUriSchemes`, ...), so the platform team knows what to change.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasGenerator, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelrollout.redact import redact_uri

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Scheme = Literal["https", "http", "s3", "gs", "az", "file"]
QueryOverrides = Literal["namespaced", "off", "any"]


_DEFAULT_SCHEMES: list[Scheme] = ["https", "http", "s3", "gs", "az"]


class PolicyError(ValueError):
    """A tenant's spec asks for something the policy refuses; `rule` names the setting."""

    reason = "RefusedByPolicy"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"refused by policy.{rule}: {message}")
        self.rule = rule


class TenantPolicy(BaseSettings):
    """The platform team's limits on tenants, as JSON in MODELROLLOUT_POLICY with camelCase keys
    (the chart renders its `policy` value there)."""

    model_config = SettingsConfigDict(
        env_prefix="MODELROLLOUT_POLICY_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel),
    )

    model_uri_schemes: list[Scheme] = Field(default_factory=lambda: _DEFAULT_SCHEMES.copy())
    """Schemes the operator reads model URIs with. `file` (and bare paths) open files inside
    the operator's own pod: only for an operator run outside the cluster (tests, a laptop)."""

    model_hosts: list[str] = Field(default_factory=list)
    """Hosts model URIs may name, as shell patterns (`models.example.com`, `*.s3.amazonaws.com`).
    Empty: any host, subject to `allowedNetworks`. Redirects must stay within the list too."""

    allowed_networks: list[IPNetwork] = Field(default_factory=list)
    """Non-public networks the operator may fetch models from (e.g. an in-cluster model store
    at 10.0.0.0/8). Private, loopback, link-local (cloud metadata), multicast and reserved
    addresses are refused unless listed here."""

    read_model_credentials: bool = False
    """Whether the operator reads the Secret a spec names in `model.credentialsSecret` (in the
    spec's own namespace) to profile a model in a private store. Off: the operator holds no
    Secret and profiles anonymously; a private model then needs `hardware.mode: cpu|gpu`. The
    chart grants the Secret read only when this is on."""

    max_redirects: int = Field(default=5, ge=0, le=20)
    """Redirects followed per model download; each target is checked like the URI itself."""

    fetch_deadline_seconds: float = Field(default=600.0, gt=0)
    """Whole time to download and profile one model, however slowly the server sends it."""

    read_timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest silence from a model server (connect, or between two reads)."""

    max_model_bytes: int = Field(default=4 << 30, gt=0)
    """Largest model file the operator reads, counted on the wire (no decompression)."""

    profile_max_nodes: int = Field(default=5_000_000, gt=0)
    """Most graph nodes (subgraphs included) a profiled model may have."""

    profile_memory_bytes: int = Field(default=16 << 20, ge=1 << 20)
    """Graph metadata the profiler keeps for the compute estimate. Past it, the estimate falls
    back to the parameter count (marked approximate) and memory stays at this bound."""

    prometheus_urls: list[str] = Field(default_factory=list)
    """Prometheus base URLs a spec's `rollout.analysis.prometheusUrl` may name, as shell patterns
    (`http://prometheus-*.monitoring.svc:9090`). Empty: the override is refused and the
    operator's own Prometheus (MODELROLLOUT_PROMETHEUS_URL) is always used."""

    query_overrides: QueryOverrides = "namespaced"
    """PromQL templates in a spec: `namespaced` (every series selector must match the object's
    own namespace, checked on the parsed query), `off` (refused), `any` (trusted tenants)."""

    namespace_labels: list[str] = Field(default_factory=lambda: ["namespace"], min_length=1)
    """Labels that hold a series' namespace, for `namespaced`: a selector must match one of them
    to the object's namespace (e.g. add `destination_workload_namespace` for Istio's metrics).
    The first is the one the built-in queries select on."""

    hook_urls: list[str] = Field(default_factory=list)
    """URLs a spec's HTTP hooks may call, as shell patterns over the whole URL
    (`https://ci.example.com/hooks/*`). Empty: HTTP hooks are refused. The host's addresses
    must also be public or inside `allowedNetworks`."""

    synthetic_max_rate: float = Field(default=5.0, ge=0)
    """Synthetic requests per second one ModelDeployment may have the operator send to its
    canary (`spec.rollout.syntheticTraffic`); 0 turns synthetic traffic off."""

    synthetic_max_requests: int = Field(default=10_000, ge=0)
    """Synthetic requests sent at most to one canary revision."""

    @field_validator("model_hosts", "prometheus_urls", "namespace_labels", "hook_urls")
    @classmethod
    def _no_blank(cls, values: list[str]) -> list[str]:
        for v in values:
            if not v.strip():
                raise ValueError("entries must not be empty")
        return values

    @field_validator("prometheus_urls")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for v in values:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or parts.query or parts.fragment:
                raise ValueError(f"{v!r}: want an http(s) base URL without query or fragment")
        return values

    # --- decisions (pure) -----------------------------------------------------------------

    def check_scheme(self, scheme: str) -> None:
        if scheme not in self.model_uri_schemes:
            allowed = ", ".join(self.model_uri_schemes) or "none"
            raise PolicyError(
                "modelUriSchemes", f"scheme {scheme!r} is not allowed (allowed: {allowed})"
            )

    def check_host(self, host: str) -> None:
        host = host.lower().rstrip(".")
        if self.model_hosts and not any(fnmatch.fnmatchcase(host, p) for p in self.model_hosts):
            raise PolicyError("modelHosts", f"host {host!r} is not in the allowed hosts")

    def check_address(self, host: str, address: IPAddress) -> None:
        if address.is_global and not address.is_multicast:
            return
        if any(address in net for net in self.allowed_networks):
            return
        kind = _address_kind(address)
        shown = host if host == str(address) else f"{host} ({address})"
        raise PolicyError("allowedNetworks", f"{shown} is a {kind} address")

    def check_prometheus_url(self, url: str) -> str:
        """The base URL a spec asks for, when the policy lists it; PolicyError otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyError("prometheusUrls", "the Prometheus URL must be http(s)://host...")
        if parts.username is not None or parts.password is not None:
            raise PolicyError("prometheusUrls", "credentials in the Prometheus URL are refused")
        if parts.query or parts.fragment or "#" in url or "?" in url:
            raise PolicyError("prometheusUrls", "a query or fragment in the URL is refused")
        base = url.rstrip("/")
        if not any(fnmatch.fnmatchcase(base, p.rstrip("/")) for p in self.prometheus_urls):
            if not self.prometheus_urls:
                raise PolicyError("prometheusUrls", "this operator allows no Prometheus override")
            raise PolicyError("prometheusUrls", f"{base} is not an allowed Prometheus")
        return base

    def check_hook_url(self, url: str) -> None:
        """An HTTP hook's URL must match one of `hookUrls` (whole URL, credentials refused)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyError("hookUrls", "a hook URL must be http(s)://host...")
        if parts.username is not None or parts.password is not None:
            raise PolicyError("hookUrls", "credentials in a hook URL are refused")
        if not self.hook_urls:
            raise PolicyError("hookUrls", "this operator allows no HTTP hooks")
        if not any(fnmatch.fnmatchcase(url, p) for p in self.hook_urls):
            raise PolicyError("hookUrls", f"{redact_uri(url)} is not an allowed hook URL")


def _address_kind(address: IPAddress) -> str:
    for attr, kind in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, attr):
            return kind
    return "non-public"


# The camelCase names of the rules, as refusals and the Helm values spell them.
RULES = tuple(to_camel(name) for name in TenantPolicy.model_fields)
