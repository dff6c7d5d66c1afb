"""A Job hook: a Job in the ModelDeployment's own namespace, built from the hook's container
template with the tenant's restrictions (the namespace's Pod Security admission applies to its
pod; the operator adds a restricted security context and mounts no ServiceAccount token), named
after the run key so a restarted operator finds it instead of starting another. It passes when
the Job succeeds; its status is read from the API server."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.batch_v1 import Job

from modelrollout.api.hooks import JobHook
from modelrollout.api.names import LABEL_DEPLOYMENT, MANAGED_BY
from modelrollout.plan.children import Owner

__all__ = ["job_manifest", "run_job"]

# Time a Job's pod may take to be scheduled and started, on top of the hook's timeout.
START_SLACK = 60.0
POLL_SECONDS = 1.0
LABEL_HOOK = "modelrollout.io/hook"


def job_manifest(
    owner: Owner,
    name: str,
    hook: str,
    job: JobHook,
    timeout: float,
    retries: int,
    env: dict[str, str],
) -> dict[str, Any]:
    c = job.container
    resources = {"cpu": c.cpu, "memory": c.memory}
    container: dict[str, Any] = {
        "name": "hook",
        "image": c.image,
        "env": [{"name": k, "value": v} for k, v in env.items()] + [e.wire() for e in c.env],
        "resources": {"requests": resources, "limits": resources},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if c.command:
        container["command"] = list(c.command)
    if c.args:
        container["args"] = list(c.args)
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_DEPLOYMENT: owner.name,
        LABEL_HOOK: hook,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": retries,
            "activeDeadlineSeconds": max(1, int(timeout)),
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                },
            },
        },
    }


async def run_job(client: AsyncClient, manifest: dict[str, Any], limit: float) -> tuple[bool, str]:
    """Create the Job (or find the one a previous operator created) and wait for it."""
    meta = manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        await client.create(cast(Job, Job.from_dict(manifest)))
    except ApiError as e:
        if e.status.code != 409:
            return False, f"cannot create Job {name}: {e.status.message}"
    deadline = time.monotonic() + limit + START_SLACK
    while time.monotonic() < deadline:
        try:
            job = await client.get(Job, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return False, f"Job {name} was deleted"
            return False, f"cannot read Job {name}: {e.status.message}"
        for cond in (job.status.conditions if job.status else None) or []:
            if cond.type == "Complete" and cond.status == "True":
                return True, f"Job {name} succeeded"
            if cond.type == "Failed" and cond.status == "True":
                why = cond.reason or "Failed"
                return False, f"Job {name} failed ({why}): {(cond.message or '')[:150]}".rstrip(
                    ": "
                )
        await asyncio.sleep(POLL_SECONDS)
    return False, f"Job {name} did not finish within {limit + START_SLACK:g}s"
