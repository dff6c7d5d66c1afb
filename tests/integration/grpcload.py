"""gRPC load for the canary tests: Triton's client, split between the revisions by the route's
weights as a gRPC-aware gateway would, straight to the pods' stand-in processes."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from hack.podrunner import PodRunner, PodServer

FEATURES = np.full((1, 4), 0.5, dtype=np.float32)


def with_grpc(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with the gRPC port on (its default)."""
    manifest["spec"]["serving"]["grpc"] = {}
    return manifest


def _call(target: str, clients: dict[str, Any]) -> str:
    client = clients.get(target)
    if client is None:
        client = clients[target] = tgrpc.InferenceServerClient(target)
    tensor = tgrpc.InferInput("input", list(FEATURES.shape), "FP32")
    tensor.set_data_from_numpy(FEATURES)
    try:
        client.infer("iris", [tensor], client_timeout=5)
    except InferenceServerException as exc:
        return str(exc.status())
    return "OK"


@contextmanager
def grpc_load(
    runner: PodRunner,
    namespace: str,
    canary: str,
    weight: Callable[[], int],
    rate: float = 30,
) -> Iterator[Counter[tuple[str, str]]]:
    """gRPC calls to model `iris` at `rate` per second until the block ends, `weight()`
    percent of them to the `canary` revision, counted by (revision, status)."""
    stop = threading.Event()
    seen: Counter[tuple[str, str]] = Counter()
    clients: dict[str, Any] = {}

    def run() -> None:
        share, refreshed = 0, 0.0
        servers: list[PodServer] = []
        while not stop.is_set():
            if time.monotonic() - refreshed > 1:
                share = weight()
                servers = runner.servers(namespace=namespace, ready=True)
                servers = [s for s in servers if s.deployment == "iris" and s.grpc_target]
                refreshed = time.monotonic()
            to_canary = random.uniform(0, 100) < share
            pool = [s for s in servers if (s.revision == canary) == to_canary]
            if pool:
                server = random.choice(pool)
                seen[server.revision, _call(server.grpc_target, clients)] += 1
            time.sleep(1 / rate)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=20)
        for client in clients.values():
            client.close()
