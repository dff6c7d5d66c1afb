"""Cluster I/O for the reconciler: read a ModelDeployment and its children, apply manifests with
server-side apply, delete, write status, record events. Everything here talks to the API server;
nothing here decides anything."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Pod, Secret, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from modelrollout.api import GROUP, KIND, PLURAL, VERSION
from modelrollout.api.names import (
    ANNOTATION_REVISION_SPEC,
    CHILD_KINDS,
    CONTAINER,
    FIELD_MANAGER,
    LABEL_REVISION,
    LABEL_TRACK,
)
from modelrollout.k8s.caches import Caches
from modelrollout.k8s.diff import contains, stamped
from modelrollout.k8s.events import EventRecorder
from modelrollout.plan.children import Manifest
from modelrollout.plan.types import ChildRef, ObservedDeployment

log = logging.getLogger(__name__)

ModelDeploymentResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)

_CLASSES: dict[str, type[NamespacedResource]] = {
    "Deployment": Deployment,
    "Service": Service,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "PodDisruptionBudget": PodDisruptionBudget,
}
# The children the operator lists, applies and deletes: the kinds names.CHILD_KINDS declares.
_KINDS = {(api_version, kind): _CLASSES[kind] for api_version, kind, _ in CHILD_KINDS}


def _as_dict(obj: Any) -> dict[str, Any]:
    # lightkube's to_dict is untyped; every resource serialises to a JSON object.
    return cast(dict[str, Any], obj.to_dict())


def make_client(kubeconfig: Path | None) -> AsyncClient:
    """A client for `kubeconfig`; None: in-cluster config, then $KUBECONFIG, ~/.kube/config."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else None
    return AsyncClient(config=config, field_manager=FIELD_MANAGER)


def _resource(api_version: str, kind: str) -> type[NamespacedResource]:
    try:
        return _KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None


def observe_deployment(obj: dict[str, Any]) -> ObservedDeployment:
    """Summarise a live Deployment the way the planner needs it."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    available = conditions.get("Available", {}).get("status") == "True"
    replicas = spec.get("replicas", 1)
    current = (
        status.get("observedGeneration", 0) >= meta.get("generation", 0)
        and status.get("updatedReplicas", 0) >= replicas
        and status.get("availableReplicas", 0) >= replicas
    )
    progressing = conditions.get("Progressing", {})
    failed = (
        progressing.get("message", "ProgressDeadlineExceeded")
        if progressing.get("reason") == "ProgressDeadlineExceeded"
        else None
    )
    containers = spec.get("template", {}).get("spec", {}).get("containers") or [{}]
    server = next((c for c in containers if c.get("name") == CONTAINER), containers[0])
    env = {e.get("name"): e.get("value", "") for e in server.get("env") or []}
    return ObservedDeployment(
        name=meta["name"],
        revision=meta.get("labels", {}).get(LABEL_REVISION, ""),
        replicas=status.get("replicas", 0),
        ready_replicas=status.get("readyReplicas", 0),
        available=available and current,
        failed_reason=failed,
        model_version=env.get("MODELSERVER_MODEL_VERSION", ""),
        model_uri=env.get("MODELSERVER_MODEL_URI", ""),
        model_sha256=env.get("MODELSERVER_MODEL_SHA256") or None,
        image=server.get("image", ""),
        born_track=env.get("MODELSERVER_TRACK", ""),
        revision_spec=_revision_spec(meta.get("annotations") or {}),
    )


def _revision_spec(annotations: dict[str, str]) -> dict[str, Any] | None:
    """The spec sections a Deployment was built from; None when absent or not readable (an
    older operator's Deployment, a hand edit): history then records less, nothing fails."""
    try:
        value = json.loads(annotations.get(ANNOTATION_REVISION_SPEC, ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class ChildSet:
    """Live children of one ModelDeployment, keyed by (kind, name)."""

    objects: dict[tuple[str, str], dict[str, Any]]

    def keys(self) -> frozenset[tuple[str, str, str]]:
        return frozenset((o["apiVersion"], kind, name) for (kind, name), o in self.objects.items())

    def deployments(self) -> list[dict[str, Any]]:
        return [o for (kind, _), o in self.objects.items() if kind == "Deployment"]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))


class Cluster:
    """Reads from the watch-fed caches, writes through the API server (and puts what each
    write returned into the cache, so the next read sees it before its watch event)."""

    def __init__(self, client: AsyncClient, caches: Caches) -> None:
        self.client = client
        self.caches = caches
        self.events = EventRecorder(client)

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.caches.model_deployments.get(namespace, name)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's values, decoded; {} when it does not exist (or is not readable: the
        operator reads Secrets only when its policy and RBAC say so)."""
        try:
            secret = await self.client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code in (403, 404):
                log.info("secret %s/%s not read: HTTP %d", namespace, name, exc.status.code)
                return {}
            raise
        data = secret.data or {}
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}

    async def children(self, namespace: str, owner: str) -> ChildSet:
        objects: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, store in self.caches.children.items():
            for data in store.owned_by(namespace, owner):
                objects[(kind, data["metadata"]["name"])] = data
        return ChildSet(objects)

    async def apply(self, manifest: Manifest, live: dict[str, Any] | None) -> bool:
        """Server-side apply `manifest` unless `live` already holds it. True if it patched."""
        manifest = stamped(manifest)
        if live is not None and contains(live, manifest):
            return False
        res = _resource(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        # force: this operator owns these fields; a hand edit is drift to be reset.
        applied = await self.client.patch(
            res,
            meta["name"],
            manifest,
            namespace=meta["namespace"],
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
        )
        self.caches.put(_as_dict(applied))
        log.info("applied %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        return True

    async def delete(self, namespace: str, ref: ChildRef) -> None:
        try:
            await self.client.delete(
                _resource(ref.api_version, ref.kind), ref.name, namespace=namespace
            )
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        log.info("deleted %s %s/%s", ref.kind, namespace, ref.name)

    async def nodes_and_pods(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every node and every pod, for the capacity check (finished pods free their
        requests; the capacity computation skips them by phase)."""
        return list(self.caches.nodes), list(self.caches.pods)

    async def pods(self, namespace: str, owner: str) -> list[dict[str, Any]]:
        """The ModelDeployment's pods, for what only they know (containers killed for memory)."""
        return list(self.caches.pods.owned_by(namespace, owner))

    async def label_tracks(self, namespace: str, owner: str, tracks: dict[str, str]) -> int:
        """Put each pod's live track on its modelrollout.io/track label (no restart: labels
        on a pod are not part of its template). Returns how many pods were relabelled."""
        wrong = []
        for pod in list(self.caches.pods.owned_by(namespace, owner)):
            labels = pod["metadata"].get("labels") or {}
            track = tracks.get(labels.get(LABEL_REVISION, ""))
            if track is not None and labels.get(LABEL_TRACK) != track:
                wrong.append((pod["metadata"]["name"], track))
        done = await asyncio.gather(*(self._label(namespace, n, t) for n, t in wrong))
        return sum(done)

    async def _label(self, namespace: str, name: str, track: str) -> bool:
        try:
            patched = await self.client.patch(
                Pod,
                name,
                {"metadata": {"labels": {LABEL_TRACK: track}}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code == 404:  # the pod went away meanwhile
                return False
            raise
        self.caches.put(_as_dict(patched))
        return True

    async def remove_annotations(self, namespace: str, name: str, keys: Iterable[str]) -> None:
        patch = {"metadata": {"annotations": dict.fromkeys(keys)}}
        patched = await self.client.patch(
            ModelDeploymentResource, name, patch, namespace=namespace, patch_type=PatchType.MERGE
        )
        self.caches.put(_as_dict(patched))

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # A merge patch with explicit nulls replaces the whole status: fields the planner
        # cleared are removed rather than left behind.
        patched = await self.client.patch(
            ModelDeploymentResource.Status,
            name,
            {"status": status},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        self.caches.put(_as_dict(patched))

    async def record_events(
        self, owner: dict[str, Any], events: Iterable[tuple[str, str, str]]
    ) -> None:
        await self.events.record(owner, events)
