"""kstatus-compatible conditions: lastTransitionTime moves only when a condition's status flips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from modelrollout.api.status import Condition

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
# kstatus' abnormal-true pair (Flux and kpt read these).
RECONCILING = "Reconciling"
STALLED = "Stalled"
# The canary's observed share of requests is far from the weight its route was set to.
ROUTE_NOT_HONOURED = "RouteNotHonoured"

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: Status
    reason: str
    message: str = ""


def merge_conditions(
    previous: Sequence[Condition],
    updates: Sequence[ConditionUpdate],
    *,
    now: str,
    generation: int,
) -> list[Condition]:
    """Apply `updates` over `previous`, keeping conditions not mentioned and their order."""
    by_type = {c.type: c for c in previous}
    order = [c.type for c in previous]
    for update in updates:
        old = by_type.get(update.type)
        transition = old.last_transition_time if old and old.status == update.status else now
        by_type[update.type] = Condition(
            type=update.type,
            status=update.status,
            reason=update.reason,
            message=update.message,
            last_transition_time=transition,
            observed_generation=generation,
        )
        if update.type not in order:
            order.append(update.type)
    return [by_type[t] for t in order]
