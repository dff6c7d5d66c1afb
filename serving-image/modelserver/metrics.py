"""Prometheus metrics on an injected registry.

The canary analysis compares these series between the stable and canary tracks, so names and
labels are part of the interface (documented in README.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

IDENTITY_LABELS = ("model", "version", "revision", "track")

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model: str,
        version: str,
        revision: str,
        track: str,
    ) -> None:
        self.registry = registry
        self._identity = (model, version, revision, track)
        ident = IDENTITY_LABELS
        self.requests = Counter(
            "modelserver_requests_total",
            "Inference requests by HTTP status code.",
            (*ident, "code"),
            registry=registry,
        )
        self.request_duration = Histogram(
            "modelserver_request_duration_seconds",
            "Inference request time from first byte read to response sent.",
            ident,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ).labels(*self._identity)
        self.inference_duration = Histogram(
            "modelserver_inference_duration_seconds",
            "Time in onnxruntime per session run (one run may serve a whole batch).",
            ident,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ).labels(*self._identity)
        self.batch_size = Histogram(
            "modelserver_batch_size",
            "Rows (first-axis length) per onnxruntime run.",
            ident,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        ).labels(*self._identity)
        self.inflight = Gauge(
            "modelserver_inflight_requests",
            "Inference requests being handled.",
            ident,
            registry=registry,
        ).labels(*self._identity)
        self.load_seconds = Gauge(
            "modelserver_model_load_seconds",
            "Time to fetch, verify and load the model.",
            ident,
            registry=registry,
        ).labels(*self._identity)
        self._info = Gauge(
            "modelserver_model_info",
            "Always 1 once the model is loaded; labels describe what is served.",
            (*ident, "sha256", "provider"),
            registry=registry,
        )
        # Label lookup costs more than the increment: keep one child per status code.
        self._by_code: dict[int, Counter] = {}

    def count(self, code: int) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self.requests.labels(*self._identity, str(code))
        child.inc()

    def model_loaded(self, *, seconds: float, sha256: str, provider: str) -> None:
        self.load_seconds.set(seconds)
        self._info.labels(*self._identity, sha256, provider).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
