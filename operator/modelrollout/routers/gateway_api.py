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
  twice, is an error: the operator could not promise the canary its share.

A backendRef is "ours" when it is a core Service (group "" and kind Service, the defaults) in
the route's own namespace with the stable or canary name.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient

from modelrollout.api.names import CANARY, STABLE
from modelrollout.routers._route import (
    RouteAPI,
    RouteClient,
    Spec,
    SpecUpdate,
    WeightedRouteRouter,
    as_list,
    as_object,
    as_weight,
    check_weight,
    share_percent,
    where,
)
from modelrollout.routers.base import RouterError, RouteTarget

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


@dataclass(frozen=True)
class _Ref:
    track: str | None
    body: dict[str, Any]
    weight: int


def _refs(rule: Any, index: int, target: RouteTarget) -> list[_Ref]:
    path = f"spec.rules[{index}]"
    body = as_object(rule, path, KIND, target)
    refs = as_list(body.get("backendRefs"), f"{path}.backendRefs", KIND, target)
    out: list[_Ref] = []
    for j, raw in enumerate(refs):
        ref_path = f"{path}.backendRefs[{j}]"
        ref = as_object(raw, ref_path, KIND, target)
        if not isinstance(ref.get("name"), str):
            raise RouterError(f"{where(KIND, target)}: {ref_path}.name must be a string")
        weight = as_weight(ref.get("weight"), _DEFAULT_WEIGHT, f"{ref_path}.weight", KIND, target)
        out.append(_Ref(_track(ref, target), ref, weight))
    return out


def _steered(
    refs: list[_Ref],
    index: int,
    target: RouteTarget,
    canary_weight: int,
) -> list[dict[str, Any]]:
    path = f"spec.rules[{index}].backendRefs"
    foreign = [ref.body["name"] for ref in refs if ref.track is None]
    if foreign:
        raise RouterError(
            f"{where(KIND, target)}: {path} sends traffic to {', '.join(foreign)} besides "
            f"{target.stable_service}/{target.canary_service}; remove the other backends from "
            "this rule so the canary weight is exact"
        )
    tracks = [ref.track for ref in refs]
    for track in (STABLE, CANARY):
        if tracks.count(track) > 1:
            raise RouterError(f"{where(KIND, target)}: {path} names the {track} Service twice")
    weights: dict[str, int] = {STABLE: 100 - canary_weight, CANARY: canary_weight}
    names = {STABLE: target.stable_service, CANARY: target.canary_service}
    out = [
        {**ref.body, "port": target.port, "weight": weights[ref.track]}
        for ref in refs
        if ref.track is not None
    ]
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


def with_weight(spec: Spec, target: RouteTarget, canary_weight: int) -> SpecUpdate:
    """The HTTPRoute spec with `canary_weight` percent on the canary Service (see the module
    docstring for which rules change). Pure: `spec` is not modified."""
    check_weight(canary_weight)
    rules = as_list(spec.get("rules"), "spec.rules", KIND, target)
    new_rules: list[Any] = copy.deepcopy(rules)
    steered = False
    for i, rule in enumerate(rules):
        refs = _refs(rule, i, target)
        if any(ref.track is not None for ref in refs):
            new_rules[i]["backendRefs"] = _steered(refs, i, target, canary_weight)
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
    new_spec = {**copy.deepcopy(spec), "rules": new_rules}
    return SpecUpdate(new_spec, new_spec != spec)


def read_weight(spec: Spec, target: RouteTarget) -> int | None:
    """The canary's share (percent, rounded) of the rules that reference our Services; None when
    such a rule does not reference both, none references either, or the steered rules disagree."""
    rules = as_list(spec.get("rules"), "spec.rules", KIND, target)
    shares: set[int | None] = set()
    for i, rule in enumerate(rules):
        refs = _refs(rule, i, target)
        tracks = {ref.track for ref in refs}
        if not tracks & {STABLE, CANARY}:
            continue
        if not {STABLE, CANARY} <= tracks:
            return None
        total = sum(ref.weight for ref in refs)
        shares.add(share_percent(sum(ref.weight for ref in refs if ref.track == CANARY), total))
    return shares.pop() if len(shares) == 1 else None


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
    router gives up with RouterError.
    """

    def __init__(
        self, client: AsyncClient, *, api_version: str = "v1", conflict_retries: int = 5
    ) -> None:
        api = dataclasses.replace(GATEWAY_API, version=api_version)
        super().__init__(
            RouteClient(client, api, conflict_retries=conflict_retries), with_weight, read_weight
        )
