"""The default PromQL, evaluated by Prometheus' own engine (`promtool test rules`) on series
shaped like the model server's: REST and gRPC requests both count, and gRPC's server-side
failures count as errors like HTTP 5xx while the caller's own failures do not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.prometheus import INSTALL_HINT
from modelrollout.metrics.queries import (
    COUNTER_QUERIES,
    DEFAULT_BUCKETS_QUERY,
    DEFAULT_ERRORS_QUERY,
    DEFAULT_P99_QUERY,
    DEFAULT_REQUESTS_QUERY,
    GRPC_SERVER_ERRORS,
    render_template,
)

LABELS = 'revision="canary",namespace="risk",model="fraud",track="canary"'
SELECTOR = 'revision="canary",namespace="risk"'
# Another revision's series, which no query of this revision may read.
OTHER = 'revision="stable",namespace="risk",model="fraud",track="stable"'

# Every series grows by its `step` per 15 s sample, 9 samples (0 to 2 minutes).
REST_CODES = {"200": 10, "400": 3, "499": 1, "500": 2, "503": 1}
GRPC_CODES = {
    "OK": 20,
    "INVALID_ARGUMENT": 4,
    "RESOURCE_EXHAUSTED": 2,
    "CANCELLED": 1,
    "UNAVAILABLE": 1,
    "INTERNAL": 2,
    "UNKNOWN": 1,
    "DEADLINE_EXCEEDED": 1,
}
BOUNDS = ("0.001", "0.01", "+Inf")
REST_BUCKETS = {"0.001": 5, "0.01": 9, "+Inf": 10}  # cumulative, per sample
GRPC_BUCKETS = {"0.001": 1, "0.01": 18, "+Inf": 20}


def _series(grpc: bool) -> list[dict[str, str]]:
    out = []
    for code, step in REST_CODES.items():
        out.append({"series": f'modelserver_requests_total{{{LABELS},code="{code}"}}'})
        out[-1]["values"] = f"0+{step}x8"
    for le, step in REST_BUCKETS.items():
        name = f'modelserver_request_duration_seconds_bucket{{{LABELS},le="{le}"}}'
        out.append({"series": name, "values": f"0+{step}x8"})
    out.append({"series": f'modelserver_requests_total{{{OTHER},code="500"}}', "values": "0+99x8"})
    if grpc:
        for code, step in GRPC_CODES.items():
            name = f'modelserver_grpc_requests_total{{{LABELS},code="{code}"}}'
            out.append({"series": name, "values": f"0+{step}x8"})
        for le, step in GRPC_BUCKETS.items():
            name = f'modelserver_grpc_request_duration_seconds_bucket{{{LABELS},le="{le}"}}'
            out.append({"series": name, "values": f"0+{step}x8"})
    return out


def _render(template: str) -> str:
    return render_template(template, {"selector": SELECTOR, "window": "1m"})


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail(f"promtool is not installed: {INSTALL_HINT}")
    return found


def _evaluate(tmp_path: Path, grpc: bool, checks: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Fail unless every (query, expected samples) holds at 2 minutes."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": []}))
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": _series(grpc),
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "2m", "exp_samples": samples}
                    for expr, samples in checks
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [_promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _value(v: float, labels: str = "{}") -> list[dict[str, Any]]:
    return [{"labels": labels, "value": v}]


def _per_minute(steps: int) -> float:
    return steps * 4.0  # four 15 s samples in the 1 m window, no extrapolation at the edges


def test_grpc_server_errors_count_like_5xx(tmp_path: Path) -> None:
    rest_5xx = REST_CODES["500"] + REST_CODES["503"]
    grpc_errors = sum(GRPC_CODES[c] for c in GRPC_SERVER_ERRORS)
    assert grpc_errors == 5
    _evaluate(
        tmp_path,
        grpc=True,
        checks=[
            (
                _render(DEFAULT_REQUESTS_QUERY),
                _value(_per_minute(sum(REST_CODES.values()) + sum(GRPC_CODES.values()))),
            ),
            (_render(DEFAULT_ERRORS_QUERY), _value(_per_minute(rest_5xx + grpc_errors))),
            (
                _render(COUNTER_QUERIES["requests"]),
                _value(8.0 * (sum(REST_CODES.values()) + sum(GRPC_CODES.values()))),
            ),
            (_render(COUNTER_QUERIES["errors"]), _value(8.0 * (rest_5xx + grpc_errors))),
        ],
    )


def test_without_the_grpc_port_rest_alone_is_read(tmp_path: Path) -> None:
    # The server exports no gRPC family then: the `or` must not empty the answer.
    _evaluate(
        tmp_path,
        grpc=False,
        checks=[
            (_render(DEFAULT_REQUESTS_QUERY), _value(_per_minute(sum(REST_CODES.values())))),
            (_render(DEFAULT_ERRORS_QUERY), _value(_per_minute(3))),
            (_render(COUNTER_QUERIES["errors"]), _value(8.0 * 3)),
            (
                _render(DEFAULT_BUCKETS_QUERY),
                [
                    {"labels": f'{{le="{le}"}}', "value": _per_minute(REST_BUCKETS[le])}
                    for le in BOUNDS
                ],
            ),
        ],
    )


def test_latency_histograms_of_both_protocols_are_added(tmp_path: Path) -> None:
    both = {le: REST_BUCKETS[le] + GRPC_BUCKETS[le] for le in BOUNDS}
    _evaluate(
        tmp_path,
        grpc=True,
        checks=[
            (
                _render(DEFAULT_BUCKETS_QUERY),
                [{"labels": f'{{le="{le}"}}', "value": _per_minute(both[le])} for le in BOUNDS],
            ),
            (
                _render(COUNTER_QUERIES["buckets"]),
                [{"labels": f'{{le="{le}"}}', "value": 8.0 * both[le]} for le in BOUNDS],
            ),
            # 30 observations a sample, 6 under 1 ms and 27 under 10 ms: the 99th percentile
            # lies in the +Inf bucket, which histogram_quantile reports as its highest bound.
            (_render(DEFAULT_P99_QUERY), _value(0.01)),
        ],
    )
