"""Repository-wide test policy: under CI, a skipped test is a failed check."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from hack.s3server import S3Server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which counts as a failure: {report.longrepr}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (moto's server mode) on loopback, once per session."""
    with S3Server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server
