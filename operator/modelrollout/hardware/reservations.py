"""Capacity held for placement decisions whose pods do not exist yet.

Pure (time is passed in). Between a decision ("3 GPU replicas fit") and the moment its pods
are bound to nodes, the cluster's pods do not show that capacity as taken; a second decision in
that gap would see the same free GPUs and both would roll out, one to Pending pods. So each
decision that passed the capacity check holds its replicas as pods of its own, placed on the
nodes that had room, and later decisions count them as taken. A hold ends when the revision's
pods are bound (they then count themselves), when the same owner decides again, or after `ttl`
seconds (a Deployment that never got its pods must not hold capacity forever).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelrollout.api.quantity import Quantity
from modelrollout.hardware.capacity import CapacityReport, PodInfo

Owner = tuple[str, str]  # (namespace, ModelDeployment name)

DEFAULT_TTL = 120.0


def assign(report: CapacityReport, replicas: int) -> list[str]:
    """Nodes for `replicas` pods, filling candidates in name order by the room each has now."""
    nodes: list[str] = []
    for node in report.nodes:
        if not node.candidate:
            continue
        room = replicas - len(nodes) if node.fits_now is None else node.fits_now
        nodes += [node.name] * max(min(room, replicas - len(nodes)), 0)
        if len(nodes) >= replicas:
            break
    return nodes


@dataclass(frozen=True)
class Hold:
    revision: str
    replicas: int
    pods: tuple[PodInfo, ...]
    expires: float


@dataclass
class Ledger:
    ttl: float = DEFAULT_TTL
    holds: dict[Owner, Hold] = field(default_factory=dict)

    def hold(
        self,
        owner: Owner,
        revision: str,
        report: CapacityReport,
        requests: Mapping[str, Quantity],
        now: float,
    ) -> None:
        namespace, name = owner
        pods = tuple(
            PodInfo(
                name=f"{name}-held-{i}",
                namespace=namespace,
                node_name=node,
                container_requests=(dict(requests),),
            )
            for i, node in enumerate(assign(report, report.replicas))
        )
        self.holds[owner] = Hold(revision, report.replicas, pods, now + self.ttl)

    def release(self, bound: Mapping[tuple[str, str, str], int], now: float) -> None:
        """End the holds whose pods are bound (`bound`: (namespace, owner, revision) -> count
        of that revision's pods with a node) or whose time is up."""
        for owner, held in list(self.holds.items()):
            arrived = bound.get((*owner, held.revision), 0) >= held.replicas
            if arrived or now >= held.expires:
                del self.holds[owner]

    def held_pods(self, excluding: Owner | None = None) -> Iterable[PodInfo]:
        """The held pods of every decision but `excluding`'s (its own earlier hold)."""
        for owner, held in self.holds.items():
            if owner != excluding:
                yield from held.pods
