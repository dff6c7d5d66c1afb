"""Settings from the environment and CPU count from the cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelserver.runtime import ProviderMissingError, choose_providers
from modelserver.settings import Settings, cgroup_cpu_count

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, AFFINITY),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "150000 100000\n"}, min(AFFINITY, 2)),
        ({"cpu.max": "6400000 100000\n"}, AFFINITY),  # a quota above the affinity mask
        ({"cpu/cpu.cfs_quota_us": "25000", "cpu/cpu.cfs_period_us": "100000"}, 1),
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            AFFINITY,
        ),
        ({}, AFFINITY),
    ],
)
def test_cgroup_cpu_count(tmp_path: Path, files: dict[str, str], expected: int) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_count(tmp_path) == expected


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVER_MODEL_NAME", "fraud")
    monkeypatch.setenv("MODELSERVER_TRACK", "canary")
    monkeypatch.setenv("MODELSERVER_THREADS", "3")
    monkeypatch.setenv("MODELSERVER_BATCH_MAX_SIZE", "32")
    monkeypatch.setenv("MODELSERVER_FAULT_ERROR_RATIO", "0.25")
    s = Settings()
    assert (s.model_name, s.track, s.threads, s.batch_max_size) == ("fraud", "canary", 3, 32)
    assert s.fault_error_ratio == 0.25
    monkeypatch.setenv("MODELSERVER_TRACK", "blue")
    with pytest.raises(ValidationError):
        Settings()


def test_sha256_validation() -> None:
    assert Settings(model_sha256="AB" * 32).model_sha256 == "ab" * 32
    assert Settings(model_sha256="").model_sha256 is None
    with pytest.raises(ValidationError, match="64 hexadecimal"):
        Settings(model_sha256="xyz")


def test_connection_max_age() -> None:
    assert Settings().connection_max_age_s == 15.0
    assert Settings(connection_max_age_s=0).connection_max_age_s == 0.0  # off
    with pytest.raises(ValidationError, match="connection_max_age_s"):
        Settings(connection_max_age_s=-1)


def test_provider_choice() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cuda", both) == both
    assert choose_providers("cpu", both) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderMissingError, match="no CUDAExecutionProvider"):
        choose_providers("cuda", ["CPUExecutionProvider"])
