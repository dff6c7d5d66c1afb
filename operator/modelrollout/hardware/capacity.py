"""Schedulable capacity: how many replicas of a pod shape the cluster can place right now.

Pure. The operator converts Node and Pod objects into the small dataclasses below; this module
reproduces the parts of the scheduler's filtering that decide whether hardware exists:
- a node is a candidate when it is Ready, not cordoned, carries every label of the pod's node
  selector, and every NoSchedule/NoExecute taint on it is tolerated (PreferNoSchedule never
  blocks);
- a candidate's free amount of each requested resource is its allocatable minus the requests
  of the non-terminated pods bound to it (a pod's request is the larger of the sum over its
  containers and the largest init container, as the scheduler computes it);
- replicas per node = min over requested resources of floor(free / request), also bounded by
  the node's free `pods` slots; identical replicas pack independently, so the cluster total
  is the sum over nodes.

Not modelled: node affinity and pod (anti-)affinity, topology spread, pods still waiting
for a node (they hold nothing yet), and preemption. These only make placement harder, so a
"fits" answer is necessary rather than sufficient; the scheduler's verdict is final.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from modelrollout.api.quantity import Quantity, format_quantity, parse_quantity

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
_BLOCKING = ("NoSchedule", "NoExecute")
_TERMINATED = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    effect: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod toleration, matched as the scheduler does (empty key + Exists tolerates all)."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""  # empty matches every effect
    toleration_seconds: int | None = None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value

    def to_dict(self) -> dict[str, str | int]:
        """The Kubernetes JSON form, empty fields omitted."""
        out: dict[str, str | int] = {"operator": self.operator}
        if self.key:
            out["key"] = self.key
        if self.value:
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    allocatable: Mapping[str, Quantity]
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False  # cordoned
    ready: bool = True


@dataclass(frozen=True, slots=True)
class PodInfo:
    name: str
    node_name: str | None
    phase: str = "Running"
    container_requests: tuple[Mapping[str, Quantity], ...] = ()
    init_container_requests: tuple[Mapping[str, Quantity], ...] = ()
    namespace: str = "default"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def requests(self) -> dict[str, Fraction]:
        total: dict[str, Fraction] = {}
        for c in self.container_requests:
            for r, q in c.items():
                total[r] = total.get(r, Fraction(0)) + parse_quantity(q)
        for c in self.init_container_requests:
            for r, q in c.items():
                total[r] = max(total.get(r, Fraction(0)), parse_quantity(q))
        return total


@dataclass(frozen=True, slots=True)
class PodShape:
    """What one replica needs: requests, and where it may go."""

    requests: Mapping[str, Quantity]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    name: str
    candidate: bool  # passes readiness, cordon, selector and taint checks
    reasons: tuple[str, ...]  # why it is not a candidate, or what limits it
    free: Mapping[str, Fraction]  # allocatable minus current requests (replaced pods included)
    fits: int | None  # replicas it can take once the replaced pods are gone (None: unbounded)
    fits_now: int | None  # replicas it can take beside everything running now


@dataclass(frozen=True, slots=True)
class CapacityReport:
    replicas: int
    surge: int
    max_replicas: int | None  # None when no requested resource bounds it
    surge_room: int | None  # extra replicas that fit now, before anything is removed
    nodes: tuple[NodeCapacity, ...]
    resources: Mapping[str, Fraction]  # the per-replica requests that were checked

    @property
    def fits(self) -> bool:
        return self.max_replicas is None or self.max_replicas >= self.replicas

    @property
    def surge_fits(self) -> bool:
        """Room for `surge` new pods next to the old ones; if not, roll out scale-down-first."""
        return self.surge_room is None or self.surge_room >= self.surge

    def summary(self) -> str:
        need = ", ".join(f"{r}={format_quantity(r, q)}" for r, q in self.resources.items())
        need = need or "nothing"
        head = (
            f"{'all' if self.fits else _count(self.max_replicas)} of {self.replicas} "
            f"replicas fit (each requests {need})"
        )
        parts = []
        for n in self.nodes:
            if n.candidate:
                why = f" ({'; '.join(n.reasons)})" if n.reasons else ""
                parts.append(f"{n.name}: room for {_count(n.fits)}{why}")
            else:
                parts.append(f"{n.name}: {'; '.join(n.reasons)}")
        if not parts:
            parts.append("no nodes")
        return f"{head}; " + ", ".join(parts)


def _count(n: int | None) -> str:
    return "unbounded" if n is None else str(n)


def node_rejections(node: NodeInfo, shape: PodShape) -> list[str]:
    """Why a pod of this shape cannot be scheduled on the node at all (empty: it can)."""
    reasons = []
    if not node.ready:
        reasons.append("not Ready")
    if node.unschedulable:
        reasons.append("cordoned")
    for k, v in shape.node_selector.items():
        actual = node.labels.get(k)
        if actual != v:
            reasons.append(f"label {k}={v} missing" if actual is None else f"label {k}={actual}")
    for t in node.taints:
        if t.effect in _BLOCKING and not any(tol.tolerates(t) for tol in shape.tolerations):
            reasons.append(f"taint {t} not tolerated")
    return reasons


def _fit(free: Mapping[str, Fraction], need: Mapping[str, Fraction]) -> tuple[int | None, str]:
    best: int | None = None
    limiting = ""
    for r, q in need.items():
        n = max(int(free.get(r, Fraction(0)) // q), 0)
        if best is None or n < best:
            best, limiting = n, r
    return best, limiting


@dataclass
class _Usage:
    """What running pods take on each node, and of that what the replaced pods take."""

    used: dict[str, dict[str, Fraction]] = field(default_factory=dict)
    used_replaced: dict[str, dict[str, Fraction]] = field(default_factory=dict)
    pod_count: dict[str, int] = field(default_factory=dict)
    replaced_count: dict[str, int] = field(default_factory=dict)


def _usage(pods: Iterable[PodInfo], replacing: Collection[str]) -> _Usage:
    usage = _Usage()
    for p in pods:
        if not p.node_name or p.phase in _TERMINATED:
            continue
        bucket = usage.used.setdefault(p.node_name, {})
        is_replaced = p.key in replacing
        rb = usage.used_replaced.setdefault(p.node_name, {})
        for r, q in p.requests().items():
            bucket[r] = bucket.get(r, Fraction(0)) + q
            if is_replaced:
                rb[r] = rb.get(r, Fraction(0)) + q
        usage.pod_count[p.node_name] = usage.pod_count.get(p.node_name, 0) + 1
        if is_replaced:
            usage.replaced_count[p.node_name] = usage.replaced_count.get(p.node_name, 0) + 1
    return usage


def compute_capacity(
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    shape: PodShape,
    replicas: int,
    *,
    surge: int = 1,
    replacing: Collection[str] = (),
) -> CapacityReport:
    """Can `replicas` pods of `shape` be placed?

    `replacing` names pods ("namespace/name") the new replicas will replace, e.g. the old
    revision's pods: their requests count as free for `max_replicas` (the fit once they are
    gone) but as taken for `surge_room` (what fits beside them right now).
    """
    need = {r: parse_quantity(q) for r, q in shape.requests.items()}
    need = {r: q for r, q in need.items() if q > 0}
    usage = _usage(pods, replacing)
    out: list[NodeCapacity] = []
    total: int | None = 0
    total_now: int | None = 0
    for node in sorted(nodes, key=lambda n: n.name):
        alloc = {r: parse_quantity(q) for r, q in node.allocatable.items()}
        taken = usage.used.get(node.name, {})
        free = {r: alloc.get(r, Fraction(0)) - taken.get(r, Fraction(0)) for r in need}
        released = usage.used_replaced.get(node.name, {})
        free_after = {r: free[r] + released.get(r, Fraction(0)) for r in need}
        rejections = node_rejections(node, shape)
        slot_need = dict(need)
        if "pods" in alloc:
            # Each replica also takes one of the node's pod slots.
            slot_need["pods"] = Fraction(1)
            free["pods"] = alloc["pods"] - usage.pod_count.get(node.name, 0)
            free_after["pods"] = free["pods"] + usage.replaced_count.get(node.name, 0)
        if rejections:
            out.append(NodeCapacity(node.name, False, tuple(rejections), free, 0, 0))
            continue
        fits, limiting = _fit(free_after, slot_need)
        fits_now, _ = _fit(free, slot_need)
        reasons: tuple[str, ...] = ()
        if fits == 0:
            have = alloc.get(limiting)
            reasons = (f"no {limiting}" if not have else f"not enough {limiting}",)
        out.append(NodeCapacity(node.name, True, reasons, free, fits, fits_now))
        total = None if total is None or fits is None else total + fits
        total_now = None if total_now is None or fits_now is None else total_now + fits_now
    return CapacityReport(
        replicas=replicas,
        surge=surge,
        max_replicas=total,
        surge_room=total_now,
        nodes=tuple(out),
        resources=need,
    )
