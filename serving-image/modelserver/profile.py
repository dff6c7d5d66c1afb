"""Build a reference profile from a sample of inputs run through the model.

    python -m modelserver.profile --model model.onnx --data sample.npy --out profile.json

The sample is a 2-D table of a tabular model's input: ``.npy`` or CSV (a first row that is not
numbers is taken as the feature names). Parquet is not read: it needs pyarrow, which the model
server does not depend on; convert it first (``pandas.read_parquet(p).to_numpy()``).

Histogram edges are the sample's quantiles (``--bins`` buckets, fewer when values repeat),
rounded to 4 significant digits; an output counted as classes keeps its classes. The format is
``modelserver.reference`` (docs/reference-profile.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .distribution import default_bins
from .reference import (
    MAX_BUCKETS,
    MAX_FEATURES,
    FeatureBins,
    OutputBins,
    ProfileError,
    ReferenceProfile,
    parse_profile,
)
from .runtime import Runtime

__all__ = ["build_profile", "main", "read_sample"]

Array = np.ndarray[Any, Any]


def read_sample(path: Path) -> tuple[Array, list[str] | None]:
    """The sample as a 2-D float array, and the feature names when the file has them."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data = np.load(path, allow_pickle=False)
        names = None
    elif suffix in (".csv", ".txt"):
        with path.open(newline="") as fh:
            rows = [row for row in csv.reader(fh) if row]
        names = None
        if rows and not _numeric(rows[0]):
            names, rows = [c.strip() for c in rows[0]], rows[1:]
        try:
            data = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
        except ValueError as exc:
            raise ProfileError(f"{path.name}: a value is not a number ({exc})") from None
    elif suffix in (".parquet", ".pq"):
        raise ProfileError(
            "Parquet needs pyarrow, which the model server does not depend on: convert the "
            "sample to .npy or CSV first"
        )
    else:
        raise ProfileError(f"{path.name}: the sample must be .npy or .csv")
    if data.ndim != 2 or data.shape[0] == 0:
        raise ProfileError(
            f"{path.name}: the sample must be a non-empty 2-D table (rows, features)"
        )
    return data, names


def _numeric(row: Sequence[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def quantile_edges(values: Array, bins: int) -> tuple[float, ...]:
    """Interior quantiles of the values, rounded and deduplicated: at most ``bins`` buckets."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0,)
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    edges = sorted({float(f"{q:.4g}") for q in qs})
    return tuple(edges) or (float(f"{finite[0]:.4g}"),)


def frequencies(values: Array, edges: Sequence[float]) -> tuple[float, ...]:
    idx = np.searchsorted(np.asarray(edges), values.ravel(), side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return tuple(round(float(c), 6) for c in counts / max(1.0, counts.sum()))


def _class_frequencies(picked: Array, classes: Sequence[int]) -> tuple[float, ...]:
    counts = np.array([np.count_nonzero(picked == c) for c in classes], dtype=np.float64)
    total = max(1.0, counts.sum())
    return tuple(round(float(c), 6) for c in counts / total)


def build_profile(
    runtime: Runtime,
    data: Array,
    *,
    input_name: str | None = None,
    names: Sequence[str] | None = None,
    bins: int = 10,
    chunk: int = 1024,
) -> ReferenceProfile:
    """Run the sample through the model and bin its outputs and features."""
    if not 2 <= bins <= MAX_BUCKETS:
        raise ProfileError(f"--bins must be between 2 and {MAX_BUCKETS}")
    name = input_name or next(iter(runtime.inputs))
    spec = runtime.inputs.get(name)
    if spec is None or len(runtime.inputs) != 1:
        raise ProfileError("the profile builder reads models with exactly one (tabular) input")
    if len(spec.shape) != 2 or spec.shape[1] not in (-1, data.shape[1]):
        raise ProfileError(f"input {name!r} has shape {list(spec.shape)}, the sample {data.shape}")
    feeds = data.astype(spec.dtype)
    parts: dict[str, list[Array]] = {}
    for start in range(0, len(feeds), chunk):
        for out_name, value in runtime.run({name: feeds[start : start + chunk]}).items():
            parts.setdefault(out_name, []).append(value)
    results = {k: np.concatenate(v) for k, v in parts.items()}
    outputs = []
    for default in default_bins({n: (t.datatype, t.shape) for n, t in runtime.outputs.items()}):
        value = results[default.name]
        if default.kind == "histogram":
            edges = quantile_edges(value.ravel().astype(np.float64), bins)
            bins_ = OutputBins(default.name, "histogram", edges=edges)
            outputs.append(_with(bins_, frequencies(value, edges)))
            continue
        if value.dtype.kind == "f":
            picked = value.reshape(-1, value.shape[-1]).argmax(axis=1)
            classes = default.classes
        else:
            picked = value.ravel()
            classes = tuple(int(c) for c in np.unique(picked)[: MAX_BUCKETS - 1] if c >= 0)
        bins_ = OutputBins(default.name, "classes", classes=classes or (0,))
        outputs.append(_with(bins_, _class_frequencies(picked, bins_.classes)))
    features = []
    for i in range(min(data.shape[1], MAX_FEATURES)):
        column = data[:, i].astype(np.float64)
        edges = quantile_edges(column, bins)
        label = names[i] if names and i < len(names) and names[i] else str(i)
        features.append(FeatureBins(name, i, label, edges, frequencies(column, edges)))
    profile = ReferenceProfile(tuple(outputs), tuple(features), int(data.shape[0]))
    # What is written must read back: the same checks as the model server's.
    return parse_profile(json.dumps(profile.as_json()).encode())


def _with(bins: OutputBins, freq: tuple[float, ...]) -> OutputBins:
    return OutputBins(bins.name, bins.kind, bins.edges, bins.classes, freq)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelserver.profile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, type=Path, help="the ONNX model")
    parser.add_argument("--data", required=True, type=Path, help="sample inputs: .npy or .csv")
    parser.add_argument("--out", required=True, type=Path, help="where to write the profile")
    parser.add_argument("--input", help="the model input the sample feeds (default: its only one)")
    parser.add_argument("--bins", type=int, default=10, help="buckets per histogram (2-32)")
    args = parser.parse_args(argv)
    try:
        data, names = read_sample(args.data)
        runtime = Runtime(args.model, threads=1)
        profile = build_profile(runtime, data, input_name=args.input, names=names, bins=args.bins)
    except (ProfileError, OSError, ValueError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(profile.as_json(), indent=1) + "\n")
    print(
        f"wrote {args.out}: {len(profile.outputs)} outputs, {len(profile.features)} features, "
        f"{profile.samples} samples"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
