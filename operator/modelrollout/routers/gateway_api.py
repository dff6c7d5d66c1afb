"""Gateway API router: canary weights on an `HTTPRoute`'s backendRefs.

The user creates the HTTPRoute (parentRefs to their Gateway, hostnames, matches, filters); the
operator only rewrites backendRefs weights:

- every rule whose backendRefs name the stable or canary Service is steered: its backendRefs
  become exactly those two Services on the target port, weighted `100 - canary` and `canary`
  (both always present, weight 0 allowed, so the route stays valid at 0% and 100%); other fields
  of those refs (filters) and their order are kept;
- rules that reference neither Service are left alone;
- if no rule references either Service, the FIRST rule's backendRefs are replaced by the two
  Services (a route created with a placeholder backend gets taken over there); a route without
  rules gets one rule holding just the two backendRefs, which matches every request;
- a steered rule that also sends traffic to some other backend, or names one of our Services
  twice, is an error: the operator could not promise the canary its share;
- during a shadow step every steered rule also gets a `RequestMirror` filter whose backendRef
  is the canary Service (the gateway copies each request there and drops the answer); the
  filter is removed again after it, and the user's other filters are kept.

A backendRef is "ours" when it is a core Service (group "" and kind Service, the defaults) in
the route's own namespace with the stable or canary name.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from lightkube import AsyncClient

from modelrollout.api.names import CANARY, STABLE
from modelrollout.routers._route import (
    Backend,
    RouteAPI,
    RouteClient,
    Spec,
    SpecUpdate,
    WeightedRouteRouter,
    as_list,
    as_object,
    as_weight,
    canary_share,
    check_steerable,
    check_weight,
    track_names,
    track_weights,
    where,
)
from modelrollout.routers.base import RouteCache, RouterError, RouteTarget

KIND = "HTTPRoute"
# Gateway API: an absent backendRef weight means 1.
_DEFAULT_WEIGHT = 1


def _track(ref: dict[str, Any], target: RouteTarget) -> str | None:
    """STABLE or CANARY if `ref` points at that Service of ours, else None."""
    if ref.get("group") not in (None, "") or ref.get("kind") not in (None, "Service"):
        return None
    if ref.get("namespace") not in (None, target.namespace):
        return None
    name = ref.get("name")
    if name == target.stable_service:
        return STABLE
    if name == target.canary_service:
        return CANARY
    return None


def _refs(rule: Any, index: int, target: RouteTarget) -> list[Backend]:
    path = f"spec.rules[{index}]"
    body = as_object(rule, path, KIND, target)
    refs = as_list(body.get("backendRefs"), f"{path}.backendRefs", KIND, target)
    out: list[Backend] = []
    for j, raw in enumerate(refs):
        ref_path = f"{path}.backendRefs[{j}]"
        ref = as_object(raw, ref_path, KIND, target)
        if not isinstance(ref.get("name"), str):
            raise RouterError(f"{where(KIND, target)}: {ref_path}.name must be a string")
        weight = as_weight(ref.get("weight"), _DEFAULT_WEIGHT, f"{ref_path}.weight", KIND, target)
        out.append(Backend(_track(ref, target), ref["name"], weight, ref))
    return out


def _steered(
    refs: list[Backend],
    index: int,
    target: RouteTarget,
    canary_weight: int,
) -> list[dict[str, Any]]:
    path = f"spec.rules[{index}].backendRefs"
    check_steerable(refs, path, KIND, target, "backends", "rule")
    weights, names = track_weights(canary_weight), track_names(target)
    out = [
        {**ref.body, "port": target.port, "weight": weights[ref.track]}
        for ref in refs
        if ref.track is not None
    ]
    tracks = {ref.track for ref in refs}
    out += [
        {"name": names[track], "port": target.port, "weight": weights[track]}
        for track in (STABLE, CANARY)
        if track not in tracks
    ]
    return out


def _redirects(rule: dict[str, Any]) -> bool:
    filters = rule.get("filters")
    return isinstance(filters, list) and any(
        isinstance(f, dict) and f.get("type") == "RequestRedirect" for f in filters
    )


def _is_our_mirror(f: Any, target: RouteTarget) -> bool:
    if not isinstance(f, dict) or f.get("type") != "RequestMirror":
        return False
    mirror = f.get("requestMirror")
    ref = mirror.get("backendRef") if isinstance(mirror, dict) else None
    return isinstance(ref, dict) and _track(ref, target) == CANARY


def _mirror_filter(rule: dict[str, Any], target: RouteTarget, mirror: bool) -> None:
    """Add or remove the filter that copies the rule's requests to the canary Service."""
    filters = [f for f in (rule.get("filters") or []) if not _is_our_mirror(f, target)]
    if mirror:
        ref = {"name": target.canary_service, "port": target.port}
        filters.append({"type": "RequestMirror", "requestMirror": {"backendRef": ref}})
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)


def with_weight(
    spec: Spec, target: RouteTarget, canary_weight: int, mirror: bool = False
) -> SpecUpdate:
    """The HTTPRoute spec with `canary_weight` percent on the canary Service, and with `mirror`
    every request copied to it (see the module docstring for which rules change). Pure: `spec`
    is not modified."""
    check_weight(canary_weight)
    rules = as_list(spec.get("rules"), "spec.rules", KIND, target)
    new_rules: list[Any] = copy.deepcopy(rules)
    steered = False
    for i, rule in enumerate(rules):
        refs = _refs(rule, i, target)
        if any(ref.track is not None for ref in refs):
            new_rules[i]["backendRefs"] = _steered(refs, i, target, canary_weight)
            _mirror_filter(new_rules[i], target, mirror)
            steered = True
    if not steered:
        fresh = _steered([], 0, target, canary_weight)
        if not new_rules:
            new_rules = [{"backendRefs": fresh}]
        elif _redirects(new_rules[0]):
            raise RouterError(
                f"{where(KIND, target)}: no rule references {target.stable_service} or "
                f"{target.canary_service}, and spec.rules[0] redirects, so it cannot take "
                "backendRefs; add a rule with a backendRef to either Service"
            )
        else:
            new_rules[0]["backendRefs"] = fresh
        _mirror_filter(new_rules[0], target, mirror)
    new_spec = {**copy.deepcopy(spec), "rules": new_rules}
    return SpecUpdate(new_spec, new_spec != spec)


def read_weight(spec: Spec, target: RouteTarget) -> int | None:
    """The canary's share (percent, rounded) of the rules that reference our Services; None when
    such a rule does not reference both, none references either, or the steered rules disagree."""
    rules = as_list(spec.get("rules"), "spec.rules", KIND, target)
    return canary_share(_refs(rule, i, target) for i, rule in enumerate(rules))


def read_mirror(spec: Spec, target: RouteTarget) -> bool:
    """Whether every rule that references our Services mirrors its requests to the canary."""
    rules = as_list(spec.get("rules"), "spec.rules", KIND, target)
    steered = [
        rule
        for i, rule in enumerate(rules)
        if any(ref.track is not None for ref in _refs(rule, i, target))
    ]
    return bool(steered) and all(
        any(
            _is_our_mirror(f, target) for f in as_list(rule.get("filters"), "filters", KIND, target)
        )
        for rule in steered
    )


GATEWAY_API = RouteAPI(
    group="gateway.networking.k8s.io",
    version="v1",
    kind=KIND,
    plural="httproutes",
    create_hint="create it with a parentRef to your Gateway; the operator only sets backendRefs "
    "weights",
    install_hint="install the Gateway API CRDs (v1.0 or later, standard channel) and a "
    "Gateway controller",
)


class HTTPRouteRouter(WeightedRouteRouter):
    """Steers the HTTPRoute named in the target through `client`.

    `api_version` selects the served version (`v1`, or `v1beta1` on older Gateway API
    installs); `conflict_retries` is how often a write that lost a race is recomputed before the
    router gives up with RouterError; `cache`, where the operator keeps routes by a watch, is
    read instead of the API server.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        api_version: str = "v1",
        conflict_retries: int = 5,
        cache: RouteCache | None = None,
    ) -> None:
        api = dataclasses.replace(GATEWAY_API, version=api_version)
        super().__init__(
            RouteClient(client, api, conflict_retries=conflict_retries, cache=cache),
            with_weight,
            read_weight,
            read_mirror,
        )
