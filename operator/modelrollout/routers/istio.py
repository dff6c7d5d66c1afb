"""Istio router: canary weights on a `VirtualService`'s HTTP routes.

The user creates the VirtualService (hosts, gateways, matches, retries, timeouts); the operator
only rewrites the weighted destinations of its `http` routes:

- every `http[]` entry whose `route` sends to the stable or canary Service is steered: its
  destinations become exactly those two Services on the target port, weighted `100 - canary`
  and `canary` (both always present, weight 0 allowed); other destination fields (subset,
  headers) and their order are kept, as is the host spelling the user chose;
- entries that reference neither Service (other hosts, redirects, delegates) and `tcp`/`tls`
  routes are left alone;
- if no entry references either Service, the FIRST `http` entry's `route` is replaced by the
  two Services; a VirtualService without `http` entries gets one that holds just the two
  destinations, which matches every request;
- a steered entry that also sends traffic to some other host, or names one of our Services
  twice, is an error: the operator could not promise the canary its share;
- during a shadow step every steered entry also gets `mirror` (the canary Service) and
  `mirrorPercentage` 100: Envoy copies each request there and drops the answer. They are
  removed after it; an entry that already mirrors to some other host is an error then (one
  `mirror` per entry).

A destination host is "ours" when it is the stable or canary Service in the VirtualService's
namespace, written short (`svc`), as `svc.ns`, or as `svc.ns.svc[.cluster-domain]`.
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

KIND = "VirtualService"
# Fields that make an http entry answer without routing: it cannot take destinations.
_NOT_ROUTING = ("redirect", "directResponse", "delegate")


def service_of(host: str, namespace: str) -> str | None:
    """The Service name `host` denotes inside `namespace`, or None for any other host."""
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0]
    if parts[1] == namespace and (len(parts) == 2 or parts[2] == "svc"):
        return parts[0]
    return None


def _track(host: str, target: RouteTarget) -> str | None:
    name = service_of(host, target.namespace)
    if name == target.stable_service:
        return STABLE
    if name == target.canary_service:
        return CANARY
    return None


def _destinations(entry: Any, index: int, target: RouteTarget) -> list[Backend]:
    path = f"spec.http[{index}]"
    body = as_object(entry, path, KIND, target)
    routes = as_list(body.get("route"), f"{path}.route", KIND, target)
    out: list[Backend] = []
    for j, raw in enumerate(routes):
        route_path = f"{path}.route[{j}]"
        route = as_object(raw, route_path, KIND, target)
        dest = as_object(route.get("destination"), f"{route_path}.destination", KIND, target)
        host = dest.get("host")
        if not isinstance(host, str) or not host:
            raise RouterError(
                f"{where(KIND, target)}: {route_path}.destination.host must be a non-empty string"
            )
        # Istio: a lone destination takes all traffic; among several, an absent weight is 0.
        default = 100 if len(routes) == 1 else 0
        weight = as_weight(route.get("weight"), default, f"{route_path}.weight", KIND, target)
        out.append(Backend(_track(host, target), host, weight, route))
    return out


def _steered(
    dests: list[Backend], index: int, target: RouteTarget, canary_weight: int
) -> list[dict[str, Any]]:
    path = f"spec.http[{index}].route"
    check_steerable(dests, path, KIND, target, "destinations", "route")
    weights, names = track_weights(canary_weight), track_names(target)
    out = [
        {
            **d.body,
            "destination": {**d.body["destination"], "port": {"number": target.port}},
            "weight": weights[d.track],
        }
        for d in dests
        if d.track is not None
    ]
    tracks = {d.track for d in dests}
    out += [
        {
            "destination": {"host": names[track], "port": {"number": target.port}},
            "weight": weights[track],
        }
        for track in (STABLE, CANARY)
        if track not in tracks
    ]
    return out


def _ours(entry: dict[str, Any], target: RouteTarget) -> bool:
    mirror = entry.get("mirror")
    host = mirror.get("host") if isinstance(mirror, dict) else None
    return isinstance(host, str) and _track(host, target) == CANARY


def _mirror(entry: dict[str, Any], index: int, target: RouteTarget, mirror: bool) -> None:
    """Set or clear the entry's mirror to the canary Service; another host's mirror is kept
    unless a shadow step needs the field."""
    if entry.get("mirror") is not None and not _ours(entry, target):
        if mirror:
            raise RouterError(
                f"{where(KIND, target)}: spec.http[{index}].mirror already mirrors to another "
                f"host; a shadow step needs it for {target.canary_service}"
            )
        return
    if mirror:
        entry["mirror"] = {"host": target.canary_service, "port": {"number": target.port}}
        entry["mirrorPercentage"] = {"value": 100.0}
    elif entry.get("mirror") is not None:
        entry.pop("mirror")
        entry.pop("mirrorPercentage", None)


def with_weight(
    spec: Spec, target: RouteTarget, canary_weight: int, mirror: bool = False
) -> SpecUpdate:
    """The VirtualService spec with `canary_weight` percent on the canary Service, and with
    `mirror` every request copied to it (see the module docstring for which entries change).
    Pure: `spec` is not modified."""
    check_weight(canary_weight)
    entries = as_list(spec.get("http"), "spec.http", KIND, target)
    new_entries: list[Any] = copy.deepcopy(entries)
    steered = False
    for i, entry in enumerate(entries):
        dests = _destinations(entry, i, target)
        if any(d.track is not None for d in dests):
            new_entries[i]["route"] = _steered(dests, i, target, canary_weight)
            _mirror(new_entries[i], i, target, mirror)
            steered = True
    if not steered:
        fresh = _steered([], 0, target, canary_weight)
        if not new_entries:
            new_entries = [{"route": fresh}]
        else:
            blocking = [f for f in _NOT_ROUTING if new_entries[0].get(f) is not None]
            if blocking:
                raise RouterError(
                    f"{where(KIND, target)}: no http route references {target.stable_service} "
                    f"or {target.canary_service}, and spec.http[0] has {blocking[0]}, so it "
                    "cannot take destinations; add an http route to either Service"
                )
            new_entries[0]["route"] = fresh
        _mirror(new_entries[0], 0, target, mirror)
    new_spec = {**copy.deepcopy(spec), "http": new_entries}
    return SpecUpdate(new_spec, new_spec != spec)


def read_weight(spec: Spec, target: RouteTarget) -> int | None:
    """The canary's share (percent, rounded) of the http routes that reference our Services;
    None when such a route does not reference both, none references either, or the steered
    routes disagree."""
    entries = as_list(spec.get("http"), "spec.http", KIND, target)
    return canary_share(_destinations(entry, i, target) for i, entry in enumerate(entries))


def read_mirror(spec: Spec, target: RouteTarget) -> bool:
    """Whether every http route that references our Services mirrors all of its requests to
    the canary."""
    entries = as_list(spec.get("http"), "spec.http", KIND, target)
    steered = [
        e
        for i, e in enumerate(entries)
        if any(d.track is not None for d in _destinations(e, i, target))
    ]
    return bool(steered) and all(_ours(e, target) and _full(e) for e in steered)


def _full(entry: dict[str, Any]) -> bool:
    """Istio mirrors all requests when mirrorPercentage is absent."""
    share = entry.get("mirrorPercentage")
    return share is None or (isinstance(share, dict) and share.get("value") == 100)


ISTIO = RouteAPI(
    group="networking.istio.io",
    version="v1",
    kind=KIND,
    plural="virtualservices",
    create_hint="create it with your hosts (and gateways, for ingress traffic); the operator "
    "only sets http route weights",
    install_hint="install Istio 1.22 or later, which serves networking.istio.io/v1",
)


class VirtualServiceRouter(WeightedRouteRouter):
    """Steers the VirtualService named in the target through `client`.

    `api_version` selects the served version (`v1`, or `v1beta1` before Istio 1.22);
    `conflict_retries` is how often a write that lost a race is recomputed before the router
    gives up with RouterError; `cache`, where the operator keeps routes by a watch, is
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
        api = dataclasses.replace(ISTIO, version=api_version)
        super().__init__(
            RouteClient(client, api, conflict_retries=conflict_retries, cache=cache),
            with_weight,
            read_weight,
            read_mirror,
        )
