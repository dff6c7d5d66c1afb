"""What the same detection takes under Flagger's and Argo Rollouts' documented defaults.

Scenario: the canary first gets traffic at t = 0 and answers 30% of requests with 5xx from then
on; the figure is t when its traffic weight is back at 0. Computed from each tool's documented
rules (pages cited below, and the source where the docs give no default); nothing here was run.
"""

from __future__ import annotations

from dataclasses import dataclass

FLAGGER_STRATEGIES = "https://docs.flagger.app/usage/deployment-strategies"
FLAGGER_HOW = "https://docs.flagger.app/usage/how-it-works"
FLAGGER_METRICS = "https://docs.flagger.app/usage/metrics"
FLAGGER_DEFAULTS_SRC = (
    "https://github.com/fluxcd/flagger/blob/main/pkg/apis/flagger/v1beta1/canary.go"
)
FLAGGER_SCHEDULER_SRC = "https://github.com/fluxcd/flagger/blob/main/pkg/controller/scheduler.go"
ARGO_ANALYSIS = "https://argoproj.github.io/argo-rollouts/features/analysis/"
ARGO_FAQ = "https://argoproj.github.io/argo-rollouts/FAQ/"
ARGO_TYPES_SRC = (
    "https://github.com/argoproj/argo-rollouts/blob/master/pkg/apis/rollouts/v1alpha1/"
    "analysis_types.go"
)
ARGO_DEFAULTS_SRC = (
    "https://github.com/argoproj/argo-rollouts/blob/master/utils/defaults/defaults.go"
)
ARGO_ROLLOUT_TYPES_SRC = (
    "https://github.com/argoproj/argo-rollouts/blob/master/pkg/apis/rollouts/v1alpha1/types.go"
)

FLAGGER_DEFAULT_INTERVAL_S = 60  # "schedule interval (default 60s)"
FLAGGER_DEFAULT_THRESHOLD = 1  # not in the docs; GetAnalysisThreshold() returns 1 when unset
FLAGGER_MIN_INTERVAL_S = 10  # GetAnalysisInterval() raises anything shorter to 10 s
ARGO_DEFAULT_FAILURE_LIMIT = 0
ARGO_DOC_EXAMPLE_INTERVAL_S = 300  # the docs' success-rate template: interval 5m,
ARGO_DOC_EXAMPLE_FAILURE_LIMIT = 3  # failureLimit 3


@dataclass(frozen=True)
class Reference:
    tool: str
    settings: str
    formula: str
    seconds: float | None  # None: never detected with these settings
    note: str = ""


def flagger_seconds(interval_s: float, threshold: int) -> float:
    """Onset to weight 0. The scheduler tick that sets the first weight runs no metric check;
    the next tick checks (fail: failedChecks + 1); the tick after the `threshold`-th failure
    routes all traffic back to the primary. The docs' `interval * threshold` counts from the
    first failing check, one interval after the weight was set."""
    return interval_s * (threshold + 1)


def argo_seconds(interval_s: float, failure_limit: int) -> float:
    """Onset to abort, background analysis: measurements at the run's start and every interval
    after; the run fails when failed measurements exceed failureLimit, and a failed background
    run aborts the rollout (canary weight back to 0). The run starts with the update
    (startingStep 0), before the canary has traffic, so the first failing measurement comes at
    most one interval after onset: an upper bound."""
    return interval_s * (failure_limit + 1)


def references(interval_s: int, failure_limit: int) -> list[Reference]:
    """Rows for the results file; `interval_s` and `failure_limit` are the benchmark's own."""
    fl_default = flagger_seconds(FLAGGER_DEFAULT_INTERVAL_S, FLAGGER_DEFAULT_THRESHOLD)
    docs_formula = FLAGGER_DEFAULT_INTERVAL_S * FLAGGER_DEFAULT_THRESHOLD
    short = max(interval_s, FLAGGER_MIN_INTERVAL_S)
    argo_same = failure_limit - 1  # Argo tolerates failureLimit failures; ours is the Nth
    return [
        Reference(
            "Flagger",
            f"defaults: interval {FLAGGER_DEFAULT_INTERVAL_S}s, threshold "
            f"{FLAGGER_DEFAULT_THRESHOLD}, request-success-rate window 1m",
            f"interval x (threshold + 1) = {FLAGGER_DEFAULT_INTERVAL_S} x "
            f"({FLAGGER_DEFAULT_THRESHOLD} + 1)",
            fl_default,
            f"docs' `interval * threshold` = {docs_formula}s after the first failing check; "
            "thresholdRange has no default (docs example min 99%: 70% fails)",
        ),
        Reference(
            "Flagger",
            f"interval {short}s (its minimum), default threshold {FLAGGER_DEFAULT_THRESHOLD}",
            f"{short} x ({FLAGGER_DEFAULT_THRESHOLD} + 1)",
            flagger_seconds(short, FLAGGER_DEFAULT_THRESHOLD),
        ),
        Reference(
            "Flagger",
            f"interval {short}s, threshold {failure_limit} (same count as ours)",
            f"{short} x ({failure_limit} + 1)",
            flagger_seconds(short, failure_limit),
        ),
        Reference(
            "Argo Rollouts",
            "defaults: no interval (single measurement), failureLimit 0, "
            "consecutiveErrorLimit 4, startingStep 0",
            "one measurement as the run starts with the update, before the canary has "
            "served more than a moment",
            None,
            "the 30% errors that follow are never measured: not detected without `interval`",
        ),
        Reference(
            "Argo Rollouts",
            f"interval {interval_s}s, count unset (runs until the rollout ends), "
            f"failureLimit {ARGO_DEFAULT_FAILURE_LIMIT} (default)",
            f"<= interval x (failureLimit + 1) = {interval_s} x ({ARGO_DEFAULT_FAILURE_LIMIT} + 1)",
            argo_seconds(interval_s, ARGO_DEFAULT_FAILURE_LIMIT),
            "one failed window aborts; a NaN first measurement fails `result[0] >= x` "
            "unless the condition handles NaN",
        ),
        Reference(
            "Argo Rollouts",
            f"interval {interval_s}s, failureLimit {argo_same} (= {failure_limit} failed "
            "windows, as ours)",
            f"<= {interval_s} x ({argo_same} + 1)",
            argo_seconds(interval_s, argo_same),
        ),
        Reference(
            "Argo Rollouts",
            f"docs' example template: interval {ARGO_DOC_EXAMPLE_INTERVAL_S // 60}m, "
            f"failureLimit {ARGO_DOC_EXAMPLE_FAILURE_LIMIT}",
            f"<= {ARGO_DOC_EXAMPLE_INTERVAL_S} x ({ARGO_DOC_EXAMPLE_FAILURE_LIMIT} + 1)",
            argo_seconds(ARGO_DOC_EXAMPLE_INTERVAL_S, ARGO_DOC_EXAMPLE_FAILURE_LIMIT),
        ),
    ]


SOURCES_MD = f"""\
Sources (defaults as documented; where the docs name none, the controller source):

- Flagger: analysis `interval` "schedule interval (default 60s)" and `threshold` "max number of
  failed metric checks before rollback" ({FLAGGER_HOW}); rollback time `interval * threshold`
  ({FLAGGER_STRATEGIES}); built-in `request-success-rate` (non-5xx percentage) and
  `request-duration` (P99) checks, each with a `thresholdRange` and a query window `interval`
  ({FLAGGER_METRICS}). The docs give no default for `threshold` or `thresholdRange`: the code
  uses threshold 1 when unset, raises intervals under 10 s to 10 s and defaults a metric's
  window to 1m ({FLAGGER_DEFAULTS_SRC}); a `request-success-rate` check with neither
  `thresholdRange` nor the deprecated `threshold` never fails. When the checks run: the
  tick that sets the first canary weight runs none, each later tick checks once, and the
  rollback happens on the tick after `failedChecks` reaches the threshold
  ({FLAGGER_SCHEDULER_SRC}), hence `interval x (threshold + 1)` from onset.
- Argo Rollouts: "If the interval is omitted, the AnalysisRun takes a single measurement. The
  count ... causes the AnalysisRun to run indefinitely if omitted" ({ARGO_FAQ}); `failureLimit`
  defaults to 0, "no failures are tolerated", and a failed background analysis "causes the
  Rollout to abort, setting the canary weight back to zero" ({ARGO_ANALYSIS});
  `consecutiveErrorLimit` defaults to 4 (errors are failed queries, not failed conditions) and
  `inconclusiveLimit` to 0 ({ARGO_TYPES_SRC}, {ARGO_DEFAULTS_SRC}); background analysis starts
  at `startingStep` 0, i.e. with the update ({ARGO_ROLLOUT_TYPES_SRC}), and its first
  measurement is taken at once unless `initialDelay` is set ({ARGO_ANALYSIS}). There is no
  default `interval`, success condition or query: the docs' example template uses `interval:
  5m`, `successCondition: result[0] >= 0.95`, `failureLimit: 3`.
- Counting: Flagger's `threshold` and ours count the failed windows that trigger the rollback;
  Argo's `failureLimit` counts the failures tolerated, one fewer. Flagger and Argo count
  failures over the whole run; ours counts consecutive failed windows (a passing window resets
  it), and a window fails only when the excess error rate is statistically significant.
"""
