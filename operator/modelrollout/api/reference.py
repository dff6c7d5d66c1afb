"""spec.model.reference: the reference profile of a model (docs/reference-profile.md)."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from modelrollout.api.types import SHA256_PATTERN, ApiModel, Duration

__all__ = [
    "MAX_REFERENCE_BYTES",
    "FeatureReference",
    "ReferenceSpec",
    "draw_rows",
    "parse_reference",
]

# The profile format (docs/reference-profile.md); the model server reads the same file.
FORMAT = "modelrollout.io/reference-profile"
VERSION = 1
MAX_REFERENCE_BYTES = 1 << 20
_MAX_FEATURES = 16
_MAX_BUCKETS = 32

_SCHEMES = {"file", "http", "https", "s3"}
_USERINFO = re.compile(r"^[A-Za-z0-9+.-]+://[^/?#]*@")


class ReferenceSpec(ApiModel):
    """Where the model's reference profile lives: the bins its model servers count outputs and
    input features in, and the reference frequencies input drift is measured against."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.uri.matches('^(file|https?|s3)://.+') "
                    "|| self.uri.startsWith('/')",
                    "message": "spec.model.reference.uri must be an absolute path or a file://, "
                    "http(s):// or s3:// URI",
                    "fieldPath": ".uri",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!self.uri.matches('^[A-Za-z0-9+.-]+://[^/?#]*@')",
                    "message": "spec.model.reference.uri must not carry credentials "
                    "(user:password@); reference a Secret with spec.model.credentialsSecret",
                    "fieldPath": ".uri",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    uri: str = Field(min_length=1, max_length=2048)
    """Where the profile (a JSON file of at most 1 MiB) lives: the same schemes and credentials
    as the model's."""

    sha256: str = Field(pattern=SHA256_PATTERN)
    """Lower-case hex SHA-256 of the profile: the model servers and the operator refuse
    another file."""

    max_drift: float = Field(default=0.2, gt=0, le=100)
    """Input drift: a feature whose population stability index against the profile is over
    this has drifted (DataDrift=True). Under 0.1 is usually read as stable, over 0.25 as a
    large shift."""

    drift_window: Duration = "5m"
    """Input drift: the span of traffic each score is computed over."""

    @model_validator(mode="after")
    def _uri(self) -> ReferenceSpec:
        if not (self.uri.startswith("/") or self.uri.split("://", 1)[0] in _SCHEMES):
            raise ValueError(
                "spec.model.reference.uri must be an absolute path or a file://, http(s):// "
                "or s3:// URI"
            )
        if _USERINFO.match(self.uri):
            raise ValueError(
                "spec.model.reference.uri must not carry credentials (user:password@); "
                "reference a Secret with spec.model.credentialsSecret"
            )
        return self


@dataclass(frozen=True, slots=True)
class FeatureReference:
    """One profiled input feature: its buckets (as the model servers label them) and the
    reference sample's share in each."""

    input: str
    feature: str
    buckets: tuple[str, ...]
    frequencies: tuple[float, ...] | None
    index: int = 0  # the column in the input
    edges: tuple[float, ...] = ()


def _edge_labels(edges: list[float]) -> tuple[str, ...]:
    return (*(f"{float(e):g}" for e in edges), "+Inf")


def parse_reference(raw: bytes) -> tuple[FeatureReference, ...]:
    """The input features of a reference profile; ValueError naming what is wrong. Reads only
    what drift needs: the model server validates the whole profile when it loads it."""
    if len(raw) > MAX_REFERENCE_BYTES:
        raise ValueError(f"reference profile is over {MAX_REFERENCE_BYTES} bytes")
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("reference profile is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"reference profile: format must be {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise ValueError(f"reference profile: version {doc.get('version')!r} is not supported")
    out: list[FeatureReference] = []
    inputs = doc.get("inputs", [])
    for i, item in enumerate(inputs if isinstance(inputs, list) else [None]):
        name = item.get("name") if isinstance(item, dict) else None
        features = item.get("features") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(features, list):
            raise ValueError(f"reference profile: inputs[{i}] needs a name and features")
        for j, f in enumerate(features):
            out.append(_feature(name, f, f"inputs[{i}].features[{j}]"))
    if len(out) > _MAX_FEATURES:
        raise ValueError(f"reference profile: {len(out)} features, over {_MAX_FEATURES}")
    return tuple(out)


def _feature(input_name: str, f: Any, where: str) -> FeatureReference:
    edges = f.get("edges") if isinstance(f, dict) else None
    if (
        not isinstance(edges, list)
        or not 1 <= len(edges) < _MAX_BUCKETS
        or not all(isinstance(e, int | float) and math.isfinite(e) for e in edges)
    ):
        raise ValueError(f"reference profile: {where}.edges must be 1-31 finite numbers")
    feature = f.get("name", str(f.get("index")))
    freq = f.get("frequencies")
    if freq is not None and (
        not isinstance(freq, list)
        or len(freq) != len(edges) + 1
        or not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in freq)
    ):
        raise ValueError(f"reference profile: {where}.frequencies must be {len(edges) + 1} shares")
    index = f.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1 << 16:
        raise ValueError(f"reference profile: {where}.index must be a non-negative integer")
    return FeatureReference(
        input_name,
        str(feature),
        _edge_labels(edges),
        tuple(float(v) for v in freq) if freq is not None else None,
        index,
        tuple(float(e) for e in edges),
    )


def draw_rows(features: Sequence[FeatureReference], count: int, seed: int = 0) -> list[list[float]]:
    """`count` rows for one model input that look like the reference sample: each profiled
    column drawn from its frequencies (a bucket by its share, then uniformly inside it; the
    open first and last buckets reach as far out as their neighbour is wide), the columns the
    profile does not name 0. For synthetic traffic; the same seed gives the same rows."""
    inputs = {f.input for f in features}
    if len(inputs) > 1:
        raise ValueError(f"draw_rows takes the features of one input, got {sorted(inputs)}")
    usable = [f for f in features if f.frequencies is not None and f.edges]
    if not usable or count < 0:
        raise ValueError("draw_rows needs features with edges and frequencies, and count >= 0")
    rng = random.Random(seed)
    width = max(f.index for f in features) + 1
    rows = [[0.0] * width for _ in range(count)]
    for f in usable:
        assert f.frequencies is not None
        e = f.edges
        step = (e[-1] - e[0]) / max(1, len(e) - 1) or 1.0
        bounds = [e[0] - step, *e, e[-1] + step]
        picks = rng.choices(range(len(f.frequencies)), weights=f.frequencies, k=count)
        for row, b in zip(rows, picks, strict=True):
            row[f.index] = rng.uniform(bounds[b], bounds[b + 1])
    return rows
