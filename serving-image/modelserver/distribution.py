"""What the model predicts and what it is asked: outputs and input features counted in fixed bins.

The canary analysis compares these counts between canary and stable (prediction shift) and
against the reference profile (input drift). They are Prometheus counters::

    modelserver_output_bucket_total{model,version,revision,track,output,bucket}
    modelserver_input_bucket_total{model,version,revision,track,input,feature,bucket}

Cheap by construction: bins are fixed when the model loads, so one request costs a few numpy
calls per counted tensor (``searchsorted`` or ``argmax``, then ``bincount``) adding into one
int64 array, without locks (the event loop thread alone writes it; a scrape reads a copy).

Default bins, without a reference profile: a fixed set, the same in every pod. Counts from all
pods of a revision then add up in Prometheus and canary and stable compare bin by bin with no
coordination. Quantiles learned from the first requests were the alternative and are refused:
each pod (and each restart) would learn different edges, and a canary learning its own
quantiles would make its distribution look uniform, hiding exactly the shift looked for. The
set cuts [0, 1] in tenths (probabilities, scores) and the rest on a signed log scale (logits,
regressions). A float output whose last axis has 2 to 31 entries is counted as classes by
argmax; an integer output by value (0 to 30, the rest ``other``); anything else as a histogram.
Input features are counted only with a profile: their useful bins depend on the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .reference import MAX_BUCKETS, MAX_OUTPUTS, OutputBins, ProfileError, ReferenceProfile

__all__ = ["DEFAULT_EDGES", "Distribution", "default_bins"]

DEFAULT_EDGES: tuple[float, ...] = (
    -1000.0, -100.0, -10.0, -1.0, -0.1, 0.0,
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    10.0, 100.0, 1000.0,
)  # fmt: skip
_DEFAULT_CLASSES = MAX_BUCKETS - 1
# Requests held before they are binned: numpy's cost is per call, so binning a few hundred
# requests at once costs about what one does. What is held is bounded by elements as well: past
# HOLD_ELEMENTS (one large output, or many small ones) everything held is binned at once.
FLUSH_EVERY = 256
HOLD_ELEMENTS = 1 << 14
_NO_FEEDS: dict[str, np.ndarray[Any, Any]] = {}

Arrays = Mapping[str, np.ndarray[Any, Any]]


@dataclass(slots=True)
class _Output:
    name: str
    kind: str  # "classes" | "histogram"
    offset: int  # where its buckets start in the counts array
    edges: np.ndarray[Any, np.dtype[np.float64]]
    classes: np.ndarray[Any, np.dtype[np.int64]] | None  # None: 0..n-1
    labels: tuple[str, ...]


@dataclass(slots=True)
class _Input:
    name: str
    columns: np.ndarray[Any, np.dtype[np.intp]]  # feature indices
    edges: np.ndarray[Any, np.dtype[np.float64]]  # (features, max edges), +inf padded
    offsets: np.ndarray[Any, np.dtype[np.intp]]  # per feature, into the counts array
    first: int
    size: int


class Distribution(Collector):
    """Per-process bucket counts of outputs and input features; see the module docstring."""

    def __init__(
        self,
        identity: list[str],
        outputs: Mapping[str, tuple[str, tuple[int, ...]]],
        inputs: Mapping[str, tuple[str, tuple[int, ...]]],
        profile: ReferenceProfile | None = None,
    ) -> None:
        """``outputs`` and ``inputs`` map tensor names to (OIP datatype, shape)."""
        self._identity = identity
        self._outputs: list[_Output] = []
        self._inputs: list[_Input] = []
        self._features: list[tuple[str, str, tuple[str, ...]]] = []
        size = 0
        chosen = profile.outputs if profile is not None and profile.outputs else None
        for bins in chosen or default_bins(outputs):
            if bins.name not in outputs:
                raise ProfileError(f"reference profile: the model has no output {bins.name!r}")
            out = _output(bins, size)
            self._outputs.append(out)
            size += len(out.labels)
        for name in dict.fromkeys(f.input for f in profile.features) if profile else ():
            feats = [f for f in profile.features if f.input == name] if profile else []
            datatype, shape = inputs.get(name, ("", ()))
            if not datatype.startswith(("FP", "INT", "UINT")) or len(shape) != 2:
                raise ProfileError(
                    f"reference profile: input {name!r} is not a 2-D numeric tensor of the model"
                )
            if shape[1] != -1 and any(f.index >= shape[1] for f in feats):
                raise ProfileError(f"reference profile: a feature of {name!r} is out of range")
            width = max(len(f.edges) for f in feats)
            edges = np.full((len(feats), width), np.inf)
            for i, f in enumerate(feats):
                edges[i, : len(f.edges)] = f.edges
            offsets = np.cumsum([0] + [len(f.edges) + 1 for f in feats[:-1]]) + size
            total = sum(len(f.edges) + 1 for f in feats)
            columns = np.array([f.index for f in feats], dtype=np.intp)
            self._inputs.append(_Input(name, columns, edges, offsets.astype(np.intp), size, total))
            self._features += [(name, f.name, f.labels) for f in feats]
            size += total
        self.counts = np.zeros(size, dtype=np.int64)
        self._pending: list[tuple[Arrays, Arrays]] = []
        self._held = 0  # elements of the tensors held

    # The hot path: event loop thread only.

    def record(self, feeds: Arrays, outputs: Arrays) -> None:
        """Hold the request's tensors; they are binned together, a few hundred at a time."""
        pending = self._pending
        pending.append((feeds if self._inputs else _NO_FEEDS, outputs))
        held = self._held
        for value in outputs.values():
            held += value.size
        for inp in self._inputs:  # held only when profiled
            fed = feeds.get(inp.name)
            if fed is not None:
                held += fed.size
        self._held = held
        if held > HOLD_ELEMENTS or len(pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Bin what is held: one numpy pass per counted tensor for all held requests."""
        pending, self._pending = self._pending, []
        self._held = 0
        if not pending:
            return
        counts = self.counts
        for out in self._outputs:
            n = len(out.labels)
            for value in _joined([o[out.name] for _, o in pending if out.name in o], out.kind):
                if value.dtype.kind in "fiub" and value.size:
                    idx = _bucket(out, value)
                    counts[out.offset : out.offset + n] += np.bincount(idx, minlength=n)[:n]
        for inp in self._inputs:
            arrays = [f[inp.name] for f, _ in pending if inp.name in f]
            for x in _joined(arrays, "rows"):
                if x.ndim != 2 or x.dtype.kind not in "fiu" or x.shape[1] <= inp.columns[-1]:
                    continue
                x = x[:, inp.columns]
                # Per feature, the number of its edges below the value: searchsorted(side="left")
                # of every feature at once.
                bins = (x[:, :, None] > inp.edges[None, :, :]).sum(axis=2) + inp.offsets
                counts[inp.first : inp.first + inp.size] += np.bincount(
                    bins.ravel() - inp.first, minlength=inp.size
                )

    # Exposition, from a copy taken at scrape time.

    def collect(self) -> Iterator[Metric]:
        self.flush()  # the scrape runs on the event loop too
        counts = self.counts.copy()
        ident = self._identity
        labels = ("model", "version", "revision", "track")
        outputs = CounterMetricFamily(
            "modelserver_output_bucket",
            "Predictions by output and bucket (class, or upper bin edge as in a histogram's le).",
            labels=(*labels, "output", "bucket"),
        )
        for out in self._outputs:
            for i, label in enumerate(out.labels):
                outputs.add_metric([*ident, out.name, label], int(counts[out.offset + i]))
        yield outputs
        if not self._inputs:
            return
        inputs = CounterMetricFamily(
            "modelserver_input_bucket",
            "Input feature values by bin of the reference profile (upper bin edge).",
            labels=(*labels, "input", "feature", "bucket"),
        )
        at = self._inputs[0].first
        for name, feature, flabels in self._features:
            for label in flabels:
                inputs.add_metric([*ident, name, feature, label], int(counts[at]))
                at += 1
        yield inputs


def default_bins(outputs: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[OutputBins]:
    """Default bins for the first outputs of the model (see the module docstring)."""
    chosen = []
    for name, (datatype, shape) in list(outputs.items())[:MAX_OUTPUTS]:
        if datatype.startswith(("INT", "UINT")):
            chosen.append(OutputBins(name, "classes", classes=tuple(range(_DEFAULT_CLASSES))))
        elif datatype.startswith("FP"):
            width = shape[-1] if len(shape) >= 2 else -1
            if 2 <= width < MAX_BUCKETS:
                chosen.append(OutputBins(name, "classes", classes=tuple(range(width))))
            else:
                chosen.append(OutputBins(name, "histogram", edges=DEFAULT_EDGES))
    return chosen


def _output(bins: OutputBins, offset: int) -> _Output:
    if bins.kind == "classes":
        contiguous = bins.classes == tuple(range(len(bins.classes)))
        classes = None if contiguous else np.array(sorted(bins.classes), dtype=np.int64)
        labels = bins.labels if contiguous else (*(str(c) for c in sorted(bins.classes)), "other")
        return _Output(bins.name, "classes", offset, np.empty(0), classes, labels)
    return _Output(
        bins.name, "histogram", offset, np.array(bins.edges, dtype=np.float64), None, bins.labels
    )


def _joined(arrays: list[np.ndarray[Any, Any]], kind: str) -> list[np.ndarray[Any, Any]]:
    """The held tensors of one name as few arrays as their shapes allow (usually one)."""
    if len(arrays) <= 1:
        return arrays
    if kind == "histogram":
        return [np.concatenate([a.ravel() for a in arrays])]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) == 1 and arrays[0].ndim >= 1:
        return [np.concatenate(arrays)]  # rows of one shape: argmax and features stay per row
    return arrays


def _bucket(out: _Output, value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The bucket index of every row (classes) or element (histogram)."""
    if out.kind == "histogram":
        return np.searchsorted(out.edges, value.ravel(), side="left")
    other = len(out.labels) - 1
    if value.dtype.kind == "f":
        # One class per row: argmax over the last axis (a 1-D float output is one row).
        picked = value.reshape(-1, value.shape[-1]).argmax(axis=1) if value.ndim >= 2 else value
        picked = picked.astype(np.int64, copy=False)
    else:
        picked = value.ravel().astype(np.int64, copy=False)
    if out.classes is None:
        return np.where((picked >= 0) & (picked < other), picked, other)
    pos = np.searchsorted(out.classes, picked).clip(0, other - 1)
    return np.where(out.classes[pos] == picked, pos, other)
