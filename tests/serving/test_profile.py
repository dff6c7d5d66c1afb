"""The reference profile builder: sample files, quantile bins, and what it writes reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelserver.profile import build_profile, main, quantile_edges, read_sample
from modelserver.reference import ProfileError, parse_profile
from modelserver.runtime import Runtime

from .conftest import Models


def test_quantile_edges_follow_the_sample() -> None:
    values = np.arange(1000, dtype=np.float64)
    edges = quantile_edges(values, 4)
    assert edges == (249.8, 499.5, 749.2)
    assert quantile_edges(np.full(50, 3.0), 10) == (3.0,)  # repeated values: one edge
    assert quantile_edges(np.array([np.nan]), 10) == (0.0,)


def test_reads_npy_and_csv_with_names(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "s.npy", data)
    got, names = read_sample(tmp_path / "s.npy")
    assert names is None
    assert got.shape == (4, 3)
    (tmp_path / "s.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    got, names = read_sample(tmp_path / "s.csv")
    assert names == ["a", "b", "c"]
    assert got.tolist() == [[1, 2, 3], [4, 5, 6]]
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(ProfileError, match="not a number"):
        read_sample(tmp_path / "bad.csv")
    with pytest.raises(ProfileError, match="pyarrow"):
        read_sample(tmp_path / "s.parquet")


def test_builds_a_profile_that_reads_back(models: Models) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(500, 16))
    profile = build_profile(Runtime(models.mlp), data, names=[f"f{i}" for i in range(16)], bins=5)
    assert profile.samples == 500
    assert {o.name: o.kind for o in profile.outputs} == {
        "logits": "classes",
        "probabilities": "classes",
    }
    assert len(profile.features) == 16
    assert profile.features[3].name == "f3"
    f = profile.features[0]
    assert len(f.edges) == 4
    assert f.frequencies is not None
    assert all(abs(x - 0.2) < 0.02 for x in f.frequencies)  # quantile bins hold equal shares
    probs = profile.outputs[1].frequencies
    assert probs is not None
    assert abs(sum(probs) - 1) < 1e-3
    assert parse_profile(json.dumps(profile.as_json()).encode()) == profile


def test_cli(models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", np.ones((10, 16), dtype=np.float32))
    out = tmp_path / "p.json"
    assert (
        main(["--model", str(models.mlp), "--data", str(tmp_path / "s.npy"), "--out", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["format"] == "modelrollout.io/reference-profile"
    np.save(tmp_path / "narrow.npy", np.ones((10, 3), dtype=np.float32))
    args = ["--model", str(models.mlp), "--data", str(tmp_path / "narrow.npy"), "--out", str(out)]
    assert main(args) == 2
    assert "the sample (10, 3)" in capsys.readouterr().err
