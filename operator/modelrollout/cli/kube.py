"""API server access for the plugin: kubeconfig selection as kubectl does it, and the few calls
the commands make (get, list, merge patch, watch), with errors turned into plain sentences."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lightkube import ALL_NS, ApiError, Client
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import OnErrorAction, OnErrorResult, PatchType

from modelrollout.api import GROUP, KIND, PLURAL, VERSION

try:  # lightkube 1.x talks through httpx2, older releases through httpx
    from httpx2 import HTTPError
except ImportError:  # pragma: no cover
    from httpx import HTTPError  # type: ignore[assignment]

ModelDeployment = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
FIELD_MANAGER = "kubectl-modelrollout"
RESOURCE = f"{PLURAL}.{GROUP}"

# Exit codes, documented in docs/kubectl-plugin.md.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_FORBIDDEN = 4


class CliError(Exception):
    """A failure to report in one sentence, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _kubeconfig_path(explicit: str | None) -> Path | None:
    """--kubeconfig, else the first existing file of $KUBECONFIG, else ~/.kube/config."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("KUBECONFIG")
    if env:
        # kubectl merges every file of the list; the plugin takes the first that exists.
        for part in env.split(os.pathsep):
            if part and Path(part).expanduser().is_file():
                return Path(part).expanduser()
        raise CliError(f"none of the files in KUBECONFIG exists: {env}")
    default = Path.home() / ".kube" / "config"
    return default if default.is_file() else None


def load_config(kubeconfig: str | None, context: str | None) -> SingleConfig:
    try:
        path = _kubeconfig_path(kubeconfig)
        if path is None:
            if context:
                raise CliError(f"no kubeconfig to find context {context!r} in")
            if "KUBERNETES_SERVICE_HOST" not in os.environ:
                raise CliError(
                    "no kubeconfig found: set KUBECONFIG, pass --kubeconfig, or create "
                    "~/.kube/config"
                )
            # Inside a pod, the way kubectl falls back to the service account.
            config = KubeConfig.from_service_account().get()
        else:
            config = KubeConfig.from_file(path).get(context)
    except ConfigError as exc:
        raise CliError(f"kubeconfig: {exc}") from None
    if config is None:
        raise CliError("kubeconfig has no current context; pass --context")
    return config


def api_error(exc: ApiError, namespace: str | None, name: str | None) -> CliError:
    """A sentence for an API error, with the exit code that classifies it."""
    status = exc.status
    code = status.code or 0
    message = status.message or str(exc)
    if code == 404:
        details = status.details
        if name and details is not None and details.name == name:
            where = f" in namespace {namespace}" if namespace else ""
            return CliError(f"modeldeployment {name!r} not found{where}", EXIT_NOT_FOUND)
        return CliError(
            f"the server does not serve {RESOURCE}/{VERSION}: install the CRD "
            "(kubectl apply --server-side -f crds/)",
            EXIT_NOT_FOUND,
        )
    if code == 401:
        return CliError(
            f"unauthorised: the server refused the kubeconfig's credentials ({message})",
            EXIT_FORBIDDEN,
        )
    if code == 403:
        return CliError(f"forbidden: {message}", EXIT_FORBIDDEN)
    if code == 409:
        return CliError(
            f"conflict: {message}; the object changed while the command ran, run it again"
        )
    return CliError(f"the API server refused the request ({code}): {message}")


def _as_dict(obj: Any) -> dict[str, Any]:
    # lightkube's to_dict is untyped; a generic resource serialises to a JSON object.
    return cast(dict[str, Any], obj.to_dict())


def _watch_error(exc: Exception, count: int) -> OnErrorResult:
    """Keep a watch going through what a long watch meets (an expired resourceVersion, a
    dropped stream); give up on what retrying cannot fix (gone, forbidden)."""
    if isinstance(exc, ApiError) and exc.status.code in (401, 403, 404):
        return OnErrorResult(OnErrorAction.RAISE)
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(0.5 * count, 5.0))


@dataclass
class Kube:
    """A lightkube client bound to one namespace, speaking in plain dicts."""

    client: Client
    namespace: str
    server: str

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Kube:
        config = load_config(kubeconfig, context)
        ns = namespace or config.namespace
        try:
            client = Client(config=config, namespace=ns, field_manager=FIELD_MANAGER)
        except ConfigError as exc:
            raise CliError(f"kubeconfig: {exc}") from None
        return cls(client, ns, config.cluster.server)

    def _call(self, name: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise api_error(exc, self.namespace, name) from None
        except HTTPError as exc:
            raise CliError(f"cannot reach the API server at {self.server}: {exc}") from None

    def get(self, name: str) -> dict[str, Any]:
        return _as_dict(
            self._call(name, self.client.get, ModelDeployment, name, namespace=self.namespace)
        )

    def list(self, all_namespaces: bool) -> list[dict[str, Any]]:
        ns = ALL_NS if all_namespaces else self.namespace

        def items() -> list[dict[str, Any]]:
            return [_as_dict(o) for o in self.client.list(ModelDeployment, namespace=ns)]

        objs: list[dict[str, Any]] = self._call(None, items)
        return sorted(
            objs, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def merge_patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _as_dict(
            self._call(
                name,
                self.client.patch,
                ModelDeployment,
                name,
                patch,
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        )

    def watch(self, name: str, stop: threading.Event) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events for one object, from a background thread so the caller can redraw on a
        timer as well. Reconnects after dropped connections; API errors end the iteration."""
        events: queue.Queue[tuple[str, dict[str, Any]] | CliError] = queue.Queue()

        def pump() -> None:
            backoff = 0.5
            while not stop.is_set():
                try:
                    for kind, obj in self.client.watch(
                        ModelDeployment,
                        namespace=self.namespace,
                        fields={"metadata.name": name},
                        server_timeout=60,
                        on_error=_watch_error,
                    ):
                        backoff = 0.5
                        events.put((kind, _as_dict(obj)))
                        if stop.is_set():
                            return
                except ApiError as exc:
                    events.put(api_error(exc, self.namespace, name))
                    return
                except HTTPError:
                    # The connection dropped; the object is still there to watch.
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

        threading.Thread(target=pump, name="watch", daemon=True).start()
        while not stop.is_set():
            try:
                item = events.get(timeout=0.2)
            except queue.Empty:
                yield ("TICK", {})
                continue
            if isinstance(item, CliError):
                raise item
            yield item
