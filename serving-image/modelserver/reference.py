"""The reference profile: bin edges and reference frequencies of a model's outputs and inputs.

A small JSON document, versioned (``docs/reference-profile.md`` is its specification)::

    {"format": "modelrollout.io/reference-profile", "version": 1, "samples": 1000,
     "outputs": [{"name": "probabilities", "kind": "classes", "classes": [0, 1, 2],
                  "frequencies": [0.33, 0.33, 0.34]},
                 {"name": "score", "kind": "histogram", "edges": [0.1, 0.5, 0.9],
                  "frequencies": [0.1, 0.4, 0.4, 0.1]}],
     "inputs": [{"name": "input", "features": [{"index": 0, "name": "sepal_length",
                 "edges": [5.0, 6.0], "frequencies": [0.3, 0.4, 0.3]}]}]}

Histogram bucket ``i`` holds the values ``v`` with ``edges[i-1] < v <= edges[i]`` (the last holds
everything above the last edge): ``len(frequencies) == len(edges) + 1``. A ``classes`` output
counts the class of each row: the argmax over the last axis of a float output, or the value of
an integer output; a value outside ``classes`` counts as ``other``. Parsing only (no numpy, no
onnxruntime), so the same rules can be read anywhere; the caps bound the series per pod.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FORMAT",
    "MAX_BUCKETS",
    "MAX_FEATURES",
    "MAX_OUTPUTS",
    "MAX_PROFILE_BYTES",
    "VERSION",
    "FeatureBins",
    "OutputBins",
    "ProfileError",
    "ReferenceProfile",
    "parse_profile",
]

FORMAT = "modelrollout.io/reference-profile"
VERSION = 1
# Cardinality caps: buckets per output or feature (the "other" class included), outputs and
# input features counted. At most (8 + 16) * 32 = 768 bucket series per pod.
MAX_BUCKETS = 32
MAX_OUTPUTS = 8
MAX_FEATURES = 16
MAX_PROFILE_BYTES = 1 << 20


class ProfileError(ValueError):
    """The profile is malformed or exceeds a cap; the message names the field."""


@dataclass(frozen=True, slots=True)
class OutputBins:
    name: str
    kind: Literal["classes", "histogram"]
    edges: tuple[float, ...] = ()  # histogram
    classes: tuple[int, ...] = ()  # classes
    frequencies: tuple[float, ...] | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The ``bucket`` label values, in order."""
        if self.kind == "classes":
            return (*(str(c) for c in self.classes), "other")
        return edge_labels(self.edges)


@dataclass(frozen=True, slots=True)
class FeatureBins:
    input: str
    index: int
    name: str
    edges: tuple[float, ...]
    frequencies: tuple[float, ...] | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return edge_labels(self.edges)


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    outputs: tuple[OutputBins, ...] = ()
    features: tuple[FeatureBins, ...] = ()
    samples: int = 0

    def as_json(self) -> dict[str, Any]:
        inputs: dict[str, list[dict[str, Any]]] = {}
        for f in self.features:
            inputs.setdefault(f.input, []).append(
                {"index": f.index, "name": f.name, "edges": list(f.edges)}
                | ({"frequencies": list(f.frequencies)} if f.frequencies is not None else {})
            )
        outputs = []
        for o in self.outputs:
            doc: dict[str, Any] = {"name": o.name, "kind": o.kind}
            doc |= {"classes": list(o.classes)} if o.kind == "classes" else {"edges": list(o.edges)}
            if o.frequencies is not None:
                doc["frequencies"] = list(o.frequencies)
            outputs.append(doc)
        return {
            "format": FORMAT,
            "version": VERSION,
            "samples": self.samples,
            "outputs": outputs,
            "inputs": [{"name": k, "features": v} for k, v in inputs.items()],
        }


def edge_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """A bucket is named by its upper edge, the last one ``+Inf`` (as Prometheus' ``le``)."""
    return (*(f"{e:g}" for e in edges), "+Inf")


def parse_profile(raw: bytes) -> ReferenceProfile:
    """The profile in ``raw``; ProfileError naming what is wrong otherwise."""
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"reference profile is {len(raw)} bytes, over {MAX_PROFILE_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProfileError(f"reference profile is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProfileError(f"reference profile: format must be {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise ProfileError(
            f"reference profile: version {doc.get('version')!r} is not supported "
            f"(this server reads version {VERSION})"
        )
    outputs = tuple(_output(o, f"outputs[{i}]") for i, o in enumerate(_list(doc, "outputs")))
    features: list[FeatureBins] = []
    for i, item in enumerate(_list(doc, "inputs")):
        where = f"inputs[{i}]"
        name = _name(item, where)
        for j, f in enumerate(_list(item, "features", where)):
            features.append(_feature(name, f, f"{where}.features[{j}]"))
    if len(outputs) > MAX_OUTPUTS:
        raise ProfileError(f"reference profile: {len(outputs)} outputs, over {MAX_OUTPUTS}")
    if len(features) > MAX_FEATURES:
        raise ProfileError(f"reference profile: {len(features)} features, over {MAX_FEATURES}")
    _unique([o.name for o in outputs], "output")
    _unique([f"{f.input}[{f.index}]" for f in features], "feature")
    samples = doc.get("samples", 0)
    if not isinstance(samples, int) or samples < 0:
        raise ProfileError("reference profile: samples must be a non-negative integer")
    return ReferenceProfile(outputs, tuple(features), samples)


def _list(doc: Any, key: str, where: str = "") -> list[Any]:
    value = doc.get(key, []) if isinstance(doc, dict) else None
    if not isinstance(value, list):
        raise ProfileError(f"reference profile: {where + '.' if where else ''}{key} must be a list")
    return value


def _name(item: Any, where: str) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise ProfileError(f"reference profile: {where}.name must be a string of 1-128 characters")
    return name


def _edges(item: dict[str, Any], where: str) -> tuple[float, ...]:
    edges = item.get("edges")
    if not isinstance(edges, list) or not all(
        isinstance(e, int | float) and not isinstance(e, bool) and math.isfinite(e) for e in edges
    ):
        raise ProfileError(f"reference profile: {where}.edges must be a list of finite numbers")
    if not 1 <= len(edges) < MAX_BUCKETS:
        raise ProfileError(f"reference profile: {where}.edges needs 1 to {MAX_BUCKETS - 1} edges")
    if any(a >= b for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"reference profile: {where}.edges must be strictly increasing")
    out = tuple(float(e) for e in edges)
    if len(set(edge_labels(out))) != len(out) + 1:
        raise ProfileError(
            f"reference profile: {where}.edges are too close to name apart at 6 significant digits"
        )
    return out


def _frequencies(
    item: dict[str, Any], buckets: int, where: str, rest: bool = False
) -> tuple[float, ...] | None:
    """``rest``: classes, whose frequencies may leave some share to ``other``."""
    freq = item.get("frequencies")
    if freq is None:
        return None
    if (
        not isinstance(freq, list)
        or len(freq) != buckets
        or not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in freq)
        or not (sum(freq) <= 1.001 if rest else math.isclose(sum(freq), 1.0, abs_tol=1e-3))
    ):
        total = "at most 1" if rest else "1"
        raise ProfileError(
            f"reference profile: {where}.frequencies must be {buckets} non-negative numbers "
            f"summing to {total}"
        )
    return tuple(float(v) for v in freq)


def _output(item: Any, where: str) -> OutputBins:
    name = _name(item, where)
    kind = item.get("kind")
    if kind == "histogram":
        edges = _edges(item, where)
        return OutputBins(name, "histogram", edges=edges, frequencies=_frequencies(
            item, len(edges) + 1, where
        ))  # fmt: skip
    if kind == "classes":
        classes = item.get("classes")
        if (
            not isinstance(classes, list)
            or not 1 <= len(classes) < MAX_BUCKETS
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ProfileError(
                f"reference profile: {where}.classes must be 1 to {MAX_BUCKETS - 1} distinct "
                "non-negative integers"
            )
        freq = _frequencies(item, len(classes), where, rest=True)
        return OutputBins(name, "classes", classes=tuple(classes), frequencies=freq)
    raise ProfileError(f"reference profile: {where}.kind must be 'classes' or 'histogram'")


def _feature(input_name: str, item: Any, where: str) -> FeatureBins:
    if not isinstance(item, dict):
        raise ProfileError(f"reference profile: {where} must be an object")
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1 << 16:
        raise ProfileError(f"reference profile: {where}.index must be a non-negative integer")
    name = item.get("name", str(index))
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise ProfileError(f"reference profile: {where}.name must be a string of 1-128 characters")
    edges = _edges(item, where)
    return FeatureBins(input_name, index, name, edges, _frequencies(item, len(edges) + 1, where))


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ProfileError(f"reference profile: {what} {n!r} appears twice")
        seen.add(n)
