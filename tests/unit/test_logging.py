"""The operator's log formats: JSON logs are one valid JSON object a line, whatever the message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from modelrollout.handlers import configure_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_stay_valid_with_quotes_and_newlines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    message = 'route "web" said: {"error": "no"}\nsecond line \\ done'
    logging.getLogger("modelrollout.reconciler").warning("reconcile failed: %s", message)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == f"reconcile failed: {message}"
    assert record["level"] == "WARNING"
    assert record["logger"] == "modelrollout.reconciler"
    assert set(record) == {"time", "level", "logger", "message"}


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_carry_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    try:
        raise ValueError('bad "value"')
    except ValueError:
        logging.getLogger("modelrollout").exception("failed")
    record = json.loads(capsys.readouterr().err.strip())
    assert 'ValueError: bad "value"' in record["exception"]


@pytest.mark.usefixtures("restore_root_logger")
def test_plain_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("plain")
    logging.getLogger("modelrollout.reconciler").info("applied %s", "Service ns/iris")
    err = capsys.readouterr().err
    assert "INFO modelrollout.reconciler: applied Service ns/iris" in err
