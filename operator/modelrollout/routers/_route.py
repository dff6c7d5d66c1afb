"""What the HTTPRoute and VirtualService routers share: weight arithmetic, spec checks, and the
read → compute → conditional-write loop against a user-owned route object.

The user owns the route; the operator only steers weights. So every write is a merge patch of
the one spec field that changed, carrying the resourceVersion it was computed from: a concurrent
edit by someone else makes the API server answer 409, and the loop recomputes from the new
object instead of overwriting that edit.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.types import PatchType

from modelrollout.api.names import CANARY, FIELD_MANAGER, STABLE
from modelrollout.routers.base import RouteCache, RouterError, RouteState, RouteTarget

Spec = dict[str, Any]


# lightkube raises its HTTP library's status error rather than ApiError when the answer is not a
# Kubernetes Status object, as with the plain-text 404 for an API the server does not serve.
# ApiError derives from that class whichever HTTP library this lightkube version uses.
_HTTPStatusError: type[Exception] = ApiError.__bases__[0]


@dataclass(frozen=True)
class SpecUpdate:
    """The route spec after steering, and whether it differs from the one given."""

    spec: Spec
    changed: bool


# --- weights ----------------------------------------------------------------------------------


def check_weight(canary_weight: int) -> int:
    """A canary weight is an integer percentage; anything else is a caller bug."""
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int):
        raise ValueError(f"canary weight must be an integer, got {canary_weight!r}")
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary weight must be between 0 and 100, got {canary_weight}")
    return canary_weight


def share_percent(part: int, total: int) -> int | None:
    """`part` as a whole percentage of `total`, halves rounded up; None when nothing is sent
    anywhere (a split of zero has no meaningful share)."""
    if total <= 0:
        return None
    # Integer arithmetic: float rounding would turn 1/8 (12.5) into 12 on some inputs.
    return (200 * part + total) // (2 * total)


# --- spec access with errors that name the field ----------------------------------------------


def where(kind: str, target: RouteTarget) -> str:
    return f"{kind} {target.namespace}/{target.route_name}"


def as_object(value: Any, path: str, kind: str, target: RouteTarget) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RouterError(f"{where(kind, target)}: {path} must be an object, got {value!r}")
    return cast(dict[str, Any], value)


def as_list(value: Any, path: str, kind: str, target: RouteTarget) -> list[Any]:
    """A list, with an absent field read as empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RouterError(f"{where(kind, target)}: {path} must be a list, got {value!r}")
    return value


def as_weight(value: Any, default: int, path: str, kind: str, target: RouteTarget) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RouterError(
            f"{where(kind, target)}: {path} must be a non-negative integer, got {value!r}"
        )
    return value


# --- cluster I/O ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One backend of a rule (HTTPRoute) or route (VirtualService): which of our Services it
    is (None: someone else's), its name as written, its weight, and the object itself."""

    track: str | None
    name: str
    weight: int
    body: dict[str, Any]


def check_steerable(
    backends: Sequence[Backend], path: str, kind: str, target: RouteTarget, noun: str, unit: str
) -> None:
    """A steered rule must send traffic to our two Services only, each named once: otherwise
    the canary's share could not be exact."""
    foreign = [b.name for b in backends if b.track is None]
    if foreign:
        raise RouterError(
            f"{where(kind, target)}: {path} sends traffic to {', '.join(foreign)} besides "
            f"{target.stable_service}/{target.canary_service}; remove the other {noun} from "
            f"this {unit} so the canary weight is exact"
        )
    tracks = [b.track for b in backends]
    for track in (STABLE, CANARY):
        if tracks.count(track) > 1:
            raise RouterError(f"{where(kind, target)}: {path} names the {track} Service twice")


def track_weights(canary_weight: int) -> dict[str, int]:
    return {STABLE: 100 - canary_weight, CANARY: canary_weight}


def track_names(target: RouteTarget) -> dict[str, str]:
    return {STABLE: target.stable_service, CANARY: target.canary_service}


def canary_share(groups: Iterable[Sequence[Backend]]) -> int | None:
    """The canary's share (percent, rounded) of the groups that reference our Services; None
    when such a group does not reference both, none references either, or they disagree."""
    shares: set[int | None] = set()
    for backends in groups:
        tracks = {b.track for b in backends}
        if not tracks & {STABLE, CANARY}:
            continue
        if not {STABLE, CANARY} <= tracks:
            return None
        total = sum(b.weight for b in backends)
        shares.add(share_percent(sum(b.weight for b in backends if b.track == CANARY), total))
    return shares.pop() if len(shares) == 1 else None


@dataclass(frozen=True)
class RouteAPI:
    """The route kind as the API server serves it, and what to tell a user who lacks it."""

    group: str
    version: str
    kind: str
    plural: str
    create_hint: str
    """Appended to "<Kind> ns/name not found: " — how to create the route the operator steers."""
    install_hint: str
    """Appended when the API itself is not served — which CRDs to install."""


class RouteClient:
    """Reads and conditionally writes one kind of route object through lightkube; with a
    `cache`, reads come from it while it holds the kind (writes always go to the API server)."""

    def __init__(
        self,
        client: AsyncClient,
        api: RouteAPI,
        *,
        conflict_retries: int = 5,
        backoff_seconds: float = 0.05,
        cache: RouteCache | None = None,
    ) -> None:
        if conflict_retries < 0:
            raise ValueError("conflict_retries must not be negative")
        self.client = client
        self.cache = cache
        self.api = api
        self.conflict_retries = conflict_retries
        self.backoff_seconds = backoff_seconds
        self.resource: type[GenericNamespacedResource] = create_namespaced_resource(
            api.group, api.version, api.kind, api.plural
        )

    async def get(self, target: RouteTarget, fresh: bool = False) -> dict[str, Any]:
        """The route, from the cache unless `fresh` (after a write lost a race with a newer
        version than the cache holds) or the cache does not hold its kind."""
        if self.cache is not None and not fresh:
            cached, obj = self.cache.route(self.api.kind, target.namespace, target.route_name)
            if cached:
                if obj is None:
                    raise RouterError(
                        f"{where(self.api.kind, target)} not found: {self.api.create_hint}"
                    )
                # The cache's copy is shared: the caller may change what it gets.
                return copy.deepcopy(obj)
        try:
            obj = await self.client.get(
                self.resource, target.route_name, namespace=target.namespace
            )
        except ApiError as exc:
            raise self._error(exc, target, "read") from exc
        except _HTTPStatusError as exc:
            raise self._plain_error(exc, target, "read") from exc
        # Generic resources are the decoded JSON object itself (a dict subclass).
        return self._remember(dict(obj))

    def _remember(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.cache is not None:
            self.cache.put(copy.deepcopy(obj))
        return obj

    async def update(self, target: RouteTarget, compute: Callable[[Spec], SpecUpdate]) -> Spec:
        """Apply `compute` to the live spec and write the result if it changed. Returns the spec
        the API server holds afterwards (what it answered the write with, or what was read)."""
        for attempt in range(self.conflict_retries + 1):
            obj = await self.get(target, fresh=attempt > 0)
            spec = obj.get("spec")
            if spec is None:
                spec = {}
            result = compute(as_object(spec, "spec", self.api.kind, target))
            if not result.changed:
                return result.spec
            body = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": spec_patch(spec, result.spec),
            }
            try:
                written = await self.client.patch(
                    self.resource,
                    target.route_name,
                    body,
                    namespace=target.namespace,
                    patch_type=PatchType.MERGE,
                    field_manager=FIELD_MANAGER,
                )
            except ApiError as exc:
                if exc.status.code != 409:
                    raise self._error(exc, target, "patch") from exc
                if attempt < self.conflict_retries:
                    # Jittered exponential backoff so two writers do not collide in lockstep.
                    delay = self.backoff_seconds * (2**attempt) * (0.5 + random.random())
                    await asyncio.sleep(delay)
                continue
            except _HTTPStatusError as exc:
                raise self._plain_error(exc, target, "patch") from exc
            return cast(Spec, self._remember(dict(written)).get("spec") or {})
        raise RouterError(
            f"{where(self.api.kind, target)} kept changing while the operator set its weights "
            f"({self.conflict_retries + 1} conflicting writes); it will try again on the next "
            "reconcile"
        )

    def _not_served(self, target: RouteTarget) -> RouterError:
        api = self.api
        return RouterError(
            f"{where(api.kind, target)}: this cluster does not serve "
            f"{api.plural}.{api.group}/{api.version}: {api.install_hint}"
        )

    def _plain_error(self, exc: Exception, target: RouteTarget, verb: str) -> RouterError:
        code = getattr(getattr(exc, "response", None), "status_code", None)
        if code == 404:
            return self._not_served(target)
        return RouterError(f"{where(self.api.kind, target)}: {verb} failed with HTTP {code}")

    def _error(self, exc: ApiError, target: RouteTarget, verb: str) -> RouterError:
        api, status = self.api, exc.status
        at = where(api.kind, target)
        message = status.message or ""
        if status.code == 404:
            details = status.details
            if details is not None and details.name == target.route_name:
                return RouterError(f"{at} not found: {api.create_hint}")
            # A Status 404 that names no object: the resource itself is unknown.
            return self._not_served(target)
        if status.code == 403:
            return RouterError(
                f"{at}: the operator may not {verb} it: grant get and patch on "
                f"{api.plural}.{api.group} ({message})"
            )
        if status.code == 422:
            return RouterError(f"{at}: the API server rejected the new weights: {message}")
        return RouterError(f"{at}: {verb} failed with HTTP {status.code}: {message}")


def spec_patch(old: Spec, new: Spec) -> Spec:
    """A merge patch turning `old` into `new` at the top level of the spec. Lists are replaced
    whole by merge patches, so sending only the changed top-level fields is exact."""
    patch: Spec = {key: value for key, value in new.items() if old.get(key) != value}
    patch.update({key: None for key in old if key not in new})
    return patch


def check_target(target: RouteTarget) -> None:
    if target.stable_service == target.canary_service:
        raise ValueError(
            f"stable and canary Service must differ, both are {target.stable_service!r}"
        )


class WeightedRouteRouter:
    """A TrafficRouter over one kind of route object, given that kind's pure functions.

    `with_weight(spec, target, weight, mirror)` steers a spec; `read_weight(spec, target)` and
    `read_mirror(spec, target)` read the canary share and the mirroring back. Every write is
    verified by reading both from the object the API server answered with, so a webhook or
    controller that rewrites them is reported rather than assumed away.
    """

    def __init__(
        self,
        routes: RouteClient,
        with_weight: Callable[[Spec, RouteTarget, int, bool], SpecUpdate],
        read_weight: Callable[[Spec, RouteTarget], int | None],
        read_mirror: Callable[[Spec, RouteTarget], bool],
    ) -> None:
        self.routes = routes
        self._with_weight = with_weight
        self._read_weight = read_weight
        self._read_mirror = read_mirror

    async def set_weight(
        self, target: RouteTarget, canary_weight: int, mirror: bool = False
    ) -> None:
        check_weight(canary_weight)
        check_target(target)
        held = await self.routes.update(
            target, lambda spec: self._with_weight(spec, target, canary_weight, mirror)
        )
        got = RouteState(self._read_weight(held, target), self._read_mirror(held, target))
        if got != RouteState(canary_weight, mirror):
            raise RouterError(
                f"{where(self.routes.api.kind, target)} holds canary weight {got.weight}"
                f"{' mirrored' if got.mirror else ''} after the operator set {canary_weight}"
                f"{' mirrored' if mirror else ''}: something else rewrites it (an admission "
                "webhook or another controller)"
            )

    async def current_weight(self, target: RouteTarget) -> int | None:
        return (await self.current(target)).weight

    async def current(self, target: RouteTarget) -> RouteState:
        check_target(target)
        obj = await self.routes.get(target)
        spec = as_object(obj.get("spec") or {}, "spec", self.routes.api.kind, target)
        return RouteState(self._read_weight(spec, target), self._read_mirror(spec, target))
