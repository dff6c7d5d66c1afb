"""What runs beside the reconciles of every ModelDeployment: rollout hooks, notification
delivery and synthetic traffic. A reconcile gives them what its plan wants and reads back what
they did; none of them is ever waited for (docs/rollouts.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus
from modelrollout.hooks.runner import HookRunner, Target
from modelrollout.notifications.delivery import Notifier
from modelrollout.plan.types import Inputs, Plan
from modelrollout.settings import OperatorSettings
from modelrollout.synthetic.traffic import SyntheticTraffic
from modelrollout.telemetry import OperatorMetrics

__all__ = ["Companions"]


@dataclass
class Companions:
    hooks: HookRunner
    notifier: Notifier
    synthetic: SyntheticTraffic
    # Where the operator reaches a canary Service (an operator outside the cluster needs
    # another way in: MODELROLLOUT_CANARY_URL_TEMPLATE).
    canary_url: str = "http://{service}.{namespace}.svc:{port}"

    @classmethod
    def configured(
        cls, client: AsyncClient, settings: OperatorSettings, metrics: OperatorMetrics
    ) -> Companions:
        return cls(
            HookRunner.configured(client, settings, metrics),
            Notifier.configured(settings, metrics),
            SyntheticTraffic(client, settings.policy),
            settings.canary_url_template,
        )

    def set_wake(self, wake: Callable[[str, str], None]) -> None:
        """A finished hook or a delivered notification brings its ModelDeployment back."""
        self.hooks.wake = self.notifier.wake = wake

    def inputs(self, namespace: str, name: str) -> dict[str, Any]:
        """What they did since the last reconcile, as the planner's inputs."""
        return {
            "hook_results": self.hooks.results(namespace, name),
            "notified": self.notifier.delivered(namespace, name),
            "synthetic": self.synthetic.progress(namespace, name),
        }

    def act(self, plan: Plan, service: str, port: int) -> None:
        """Start the hook runs the plan wants; drive or stop the synthetic traffic."""
        inputs = plan.inputs
        owner, spec = inputs.owner, inputs.spec
        # Hooks get the in-cluster address (a Job runs there; a hook's server is told it).
        self.hooks.ensure(
            Target(owner, f"http://{service}.{owner.namespace}.svc:{port}"), plan.hook_runs
        )
        base = self.canary_url.format(service=service, namespace=owner.namespace, port=port)
        url = f"{base}/v2/models/{spec.model.name or owner.name}/infer"
        key = (owner.namespace, owner.name)
        traffic = spec.rollout.synthetic_traffic
        self.synthetic.drive(key, plan.synthetic_revision, traffic, url, inputs.status.synthetic)

    def written(
        self, inputs: Inputs, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
    ) -> None:
        """The status holding this cycle's results is written: drop them, send the outbox."""
        namespace, name = inputs.owner.namespace, inputs.owner.name
        self.hooks.consumed(namespace, name, inputs.hook_results)
        # Only once the outbox is in status: a delivery never precedes its record.
        self.notifier.consumed(namespace, name, inputs.notified)
        self.notifier.enqueue(namespace, name, spec.notify, status.notifications)

    def forget(self, namespace: str, name: str) -> None:
        self.hooks.forget(namespace, name)
        self.notifier.forget(namespace, name)
        self.synthetic.forget(namespace, name)

    async def close(self) -> None:
        await self.hooks.close()
        await self.notifier.close()
        await self.synthetic.close()
