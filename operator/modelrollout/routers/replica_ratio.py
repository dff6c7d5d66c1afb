"""Replica-ratio router: the fallback for clusters with no mesh or gateway.

There is no route object. The one Service spans every live revision and the planner sizes the
canary's Deployment so that its share of the pods is the weight (plan/desired.py), so steering
has nothing to do here: a null object, so the reconciler treats every router alike.
"""

from __future__ import annotations

from modelrollout.routers.base import RouterError, RouteState, RouteTarget


class ReplicaRatioRouter:
    async def set_weight(
        self, target: RouteTarget, canary_weight: int, mirror: bool = False
    ) -> None:
        """Nothing to write: replica counts carry the weight. Pods behind one Service cannot
        copy requests to each other, so mirroring is refused (admission refuses a shadow step
        with this router before it gets here)."""
        if mirror:
            raise RouterError(
                "trafficRouter type replicas cannot mirror requests for a shadow step; use "
                "gatewayAPI or istio"
            )

    async def current_weight(self, target: RouteTarget) -> int | None:
        """No route splits the traffic, so there is no weight to read."""
        return None

    async def current(self, target: RouteTarget) -> RouteState:
        return RouteState(None)
