"""Prometheus metrics on an injected registry.

The canary analysis compares these series between the stable and canary tracks, so names and
labels are part of the interface (documented in README.md).

Per-request metrics are plain numbers updated on the event loop thread only (the inference
thread hands its timings back to the loop), and turned into Prometheus families at scrape
time: prometheus_client's locked values cost several microseconds per update, which on a small
model is a tenth of the whole request. More per-request series (per-output counters, say) fit
the same pattern: a ``LoopHistogram`` or a dict of counts, and a few lines in ``collect``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

IDENTITY_LABELS = ("model", "version", "revision", "track")

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Observations held before a histogram bins them (numpy's cost is per call, not per value).
FOLD_EVERY = 4096


class LoopHistogram:
    """A histogram without locks: only ever touched from the event loop thread.

    ``observe`` is the ``append`` of a list, with no Python frame of its own; the values are
    binned a few thousand at a time by ``fold`` (numpy, once per batch), which the scrape and
    the request paths call (``Metrics.fold``) so what is held stays small.
    """

    __slots__ = ("_edges", "bounds", "counts", "observe", "pending", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._edges = np.asarray(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last is +Inf
        self.sum = 0.0
        self.pending: list[float] = []
        self.observe: Callable[[float], None] = self.pending.append

    def fold(self) -> None:
        if not self.pending:
            return
        values = np.asarray(self.pending, dtype=np.float64)
        self.pending.clear()
        # le: a bound holds values <= it, so a value equal to a bound goes in that bound's bucket.
        index = np.searchsorted(self._edges, values, side="left")
        self.counts += np.bincount(index, minlength=len(self.counts))
        self.sum += float(values.sum())

    def family(self, name: str, doc: str, identity: list[str]) -> HistogramMetricFamily:
        self.fold()
        family = HistogramMetricFamily(name, doc, labels=IDENTITY_LABELS)
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts.tolist(), strict=True):
            total += count
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # the library's "le" text
            buckets.append((le, total))
        family.add_metric(identity, buckets, self.sum)
        return family


class Metrics(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model: str,
        version: str,
        revision: str,
        track: str,
        grpc: bool = False,
    ) -> None:
        self.registry = registry
        self._identity = [model, version, revision, track]
        self.identity = self._identity  # for the collectors beside this one (distribution.py)
        self.codes: dict[int, int] = {}
        # Requests marked synthetic (x-modelrollout-synthetic), also counted in `codes`.
        self.synthetic_codes: dict[int, int] = {}
        # gRPC requests in families of their own: the REST series keep their names and labels.
        self.grpc = grpc
        self.grpc_codes: dict[str, int] = {}
        self.grpc_request_duration = LoopHistogram(_LATENCY_BUCKETS)
        self.inflight = 0
        self.request_duration = LoopHistogram(_LATENCY_BUCKETS)
        self.inference_duration = LoopHistogram(_LATENCY_BUCKETS)
        self.batch_size = LoopHistogram(_BATCH_BUCKETS)
        self._histograms = (
            self.request_duration,
            self.grpc_request_duration,
            self.inference_duration,
            self.batch_size,
        )
        registry.register(self)
        ident = IDENTITY_LABELS
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

    # Updates: event loop thread only.

    def count(self, code: int, synthetic: bool = False) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        if synthetic:
            self.synthetic_codes[code] = self.synthetic_codes.get(code, 0) + 1

    def request_done(self, code: int, synthetic: bool, seconds: float) -> None:
        """A REST inference request answered: its code and duration, in one call."""
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        if synthetic:
            self.synthetic_codes[code] = self.synthetic_codes.get(code, 0) + 1
        pending = self.request_duration.pending
        pending.append(seconds)
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def count_grpc(self, code: str) -> None:
        self.grpc_codes[code] = self.grpc_codes.get(code, 0) + 1

    def observe_run(self, rows: int, seconds: float) -> None:
        self.inference_duration.observe(seconds)
        self.batch_size.observe(rows)

    def fold(self) -> None:
        """Bin what every histogram holds: called once FOLD_EVERY requests wait (REST or gRPC),
        it bounds the memory held between scrapes."""
        for histogram in self._histograms:
            histogram.fold()

    def model_loaded(self, *, seconds: float, sha256: str, provider: str) -> None:
        self.load_seconds.set(seconds)
        self._info.labels(*self._identity, sha256, provider).set(1)

    # Exposition.

    def collect(self) -> Iterator[Metric]:
        ident = self._identity
        requests = CounterMetricFamily(
            "modelserver_requests",
            "REST inference requests by HTTP status code.",
            labels=(*IDENTITY_LABELS, "code"),
        )
        for code, n in sorted(self.codes.items()):
            requests.add_metric([*ident, str(code)], n)
        yield requests
        synthetic = CounterMetricFamily(
            "modelserver_synthetic_requests",
            "Of the REST inference requests, those the operator sent as synthetic traffic.",
            labels=(*IDENTITY_LABELS, "code"),
        )
        for code, n in sorted(self.synthetic_codes.items()):
            synthetic.add_metric([*ident, str(code)], n)
        yield synthetic
        yield self.request_duration.family(
            "modelserver_request_duration_seconds",
            "REST inference request time from first byte read to response sent.",
            ident,
        )
        yield self.inference_duration.family(
            "modelserver_inference_duration_seconds",
            "Time in onnxruntime per session run (one run may serve a whole batch).",
            ident,
        )
        yield self.batch_size.family(
            "modelserver_batch_size", "Rows (first-axis length) per onnxruntime run.", ident
        )
        if self.grpc:
            yield from self._grpc_families()
        inflight = GaugeMetricFamily(
            "modelserver_inflight_requests",
            "Inference requests being handled, REST and gRPC together.",
            labels=IDENTITY_LABELS,
        )
        inflight.add_metric(ident, self.inflight)
        yield inflight

    def _grpc_families(self) -> Iterator[Metric]:
        ident = self._identity
        requests = CounterMetricFamily(
            "modelserver_grpc_requests",
            "gRPC ModelInfer requests by gRPC status code name (OK, INVALID_ARGUMENT, ...).",
            labels=(*IDENTITY_LABELS, "code"),
        )
        for code, n in sorted(self.grpc_codes.items()):
            requests.add_metric([*ident, code], n)
        yield requests
        yield self.grpc_request_duration.family(
            "modelserver_grpc_request_duration_seconds",
            "gRPC ModelInfer time from the decoded request to the response handed to grpc.",
            ident,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
