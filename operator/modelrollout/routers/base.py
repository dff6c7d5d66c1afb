"""The traffic-router interface: put a canary weight on a route, and read back what is there.

Each implementation lives in its own file and is found through routers/registry.py. The
replica-ratio fallback has no route object (the planner realises its weight through replica
counts); its router is a null object that writes and reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class RouteTarget:
    """Which route to steer, and the two per-track Services it should point at."""

    namespace: str
    route_name: str
    stable_service: str
    canary_service: str
    port: int


@dataclass(frozen=True)
class RouteState:
    """What a route holds: the canary's weight (None when it does not split between the two
    Services) and whether it mirrors requests to the canary Service."""

    weight: int | None
    mirror: bool = False


class RouteCache(Protocol):
    """Routes kept by a watch (k8s/caches.py): read from memory, the API server written."""

    def route(self, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(True, the route or None when there is none) when `kind` is cached in `namespace`;
        (False, None) when it is not (the router reads the API server)."""

    def put(self, obj: dict[str, Any]) -> None:
        """What a read or write of the API server returned, so the next read sees it."""


class RouterError(Exception):
    """The route cannot be steered (missing, malformed, not referencing our Services); the
    message says which and why, for status."""


@runtime_checkable
class TrafficRouter(Protocol):
    async def set_weight(
        self, target: RouteTarget, canary_weight: int, mirror: bool = False
    ) -> None:
        """Send `canary_weight` percent to the canary Service and the rest to the stable one;
        with `mirror`, also send a copy of every request to the canary Service, whose answers
        are dropped (a shadow step). A router that cannot mirror raises RouterError."""

    async def current_weight(self, target: RouteTarget) -> int | None:
        """The canary weight the route holds now; None when the route does not split between
        the two Services (e.g. nobody has set it yet)."""

    async def current(self, target: RouteTarget) -> RouteState:
        """The weight and the mirroring the route holds now, from one read."""
