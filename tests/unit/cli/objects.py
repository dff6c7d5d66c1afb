"""ModelDeployment objects as the API server returns them, with statuses built from the API's
own pydantic models so the views are tested against what the operator really writes."""

from __future__ import annotations

from typing import Any

from modelrollout.api.status import (
    AnalysisStatus,
    BakeStatus,
    Condition,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    RolloutStatus,
)

T0 = "2026-03-01T12:00:00Z"
SHA_A = "a" * 64
SHA_B = "b" * 64
IMAGE = "ghcr.io/modelrollout/modelserver:0.1.0"
STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"analysis": {"intervals": 2}},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {"duration": "5m"}},
]


def condition(kind: str, status: str, reason: str, message: str = "") -> Condition:
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=T0,
        observed_generation=2,
    )


def conditions(ready: str, progressing: str, degraded: str, reason: str) -> list[Condition]:
    return [
        condition("Ready", ready, reason),
        condition("Progressing", progressing, reason),
        condition("Degraded", degraded, "Healthy" if degraded == "False" else reason),
    ]


def entry(
    revision: str, version: str, outcome: str, reason: str = "", sha: str | None = SHA_A
) -> HistoryEntry:
    return HistoryEntry(
        revision=revision,
        model_version=version,
        model_uri=f"https://models.example/iris-{version}.onnx",
        model_sha256=sha,
        image=IMAGE,
        started=T0,
        finished="2026-03-01T12:05:00Z",
        outcome=outcome,
        reason=reason,
    )


PASS = AnalysisStatus(
    verdict="Pass",
    reason="canary error rate 0.25% (3/1200) within limits; p99 1.2x stable",
    time="2026-03-01T12:09:50Z",
    canary_requests=1200,
    canary_errors=3,
    canary_error_rate=0.0025,
    canary_p99_seconds=0.12,
    stable_requests=3400,
    stable_errors=10,
    stable_error_rate=10 / 3400,
    stable_p99_seconds=0.1,
    p99_ratio=1.2,
    z=-0.31,
    p_value=0.62,
)


def mdep(
    status: ModelDeploymentStatus | None,
    *,
    version: str = "v2",
    sha: str | None = SHA_B,
    paused: bool = False,
    steps: list[dict[str, Any]] | None = None,
    generation: int = 2,
    name: str = "iris",
    image: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": f"https://models.example/iris-{version}.onnx", "version": version},
        "rollout": {"steps": STEPS if steps is None else steps},
    }
    if sha:
        spec["model"]["sha256"] = sha
    if paused:
        spec["paused"] = True
    if image:
        spec["serving"] = {"image": image}
    obj: dict[str, Any] = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "generation": generation,
            "resourceVersion": "4711",
            "creationTimestamp": "2026-03-01T11:00:00Z",
        },
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, mode="json")
    return obj


def ready() -> dict[str, Any]:
    """v1 serving, nothing in flight."""
    status = ModelDeploymentStatus(
        observed_generation=2,
        phase=Phase.READY,
        message="revision aaaaaaaaaa is serving",
        conditions=conditions("True", "False", "False", "Complete"),
        replicas=2,
        ready_replicas=2,
        stable_revision="aaaaaaaaaa",
        model_version="v1",
        history=[entry("aaaaaaaaaa", "v1", "Promoted", "first revision")],
    )
    return mdep(status, version="v1", sha=SHA_A)


def canary(step: int = 1, weight: int = 10, paused: bool = False, **kw: Any) -> dict[str, Any]:
    """v2 rolling out over v1."""
    status = ModelDeploymentStatus(
        observed_generation=2,
        phase=Phase.PAUSED if paused else Phase.PROGRESSING,
        message=f"step {step}: analysing at {weight}% (1/2 windows passed, last Pass)",
        conditions=conditions("False", "True", "False", "Paused" if paused else "Canary"),
        replicas=3,
        ready_replicas=3,
        stable_revision="aaaaaaaaaa",
        canary_revision="bbbbbbbbbb",
        canary_weight=weight,
        rollout_started="2026-03-01T12:06:00Z",
        rollout=RolloutStatus(
            step=step,
            step_started="2026-03-01T12:08:00Z",
            passes=1,
            failures=0,
            analysis_since="2026-03-01T12:09:50Z",
            last_analysis=PASS,
            stable_min_replicas=2,
        ),
        model_version="v1",
        history=[entry("aaaaaaaaaa", "v1", "Promoted", "first revision")],
    )
    return mdep(status, paused=paused, **kw)


def baking() -> dict[str, Any]:
    """v2 promoted, watched until the bake window ends; v1 kept."""
    status = ModelDeploymentStatus(
        observed_generation=2,
        phase=Phase.READY,
        message="revision bbbbbbbbbb is serving; baking until 2026-03-01T12:20:00Z",
        conditions=conditions("True", "True", "False", "Baking"),
        replicas=4,
        ready_replicas=4,
        stable_revision="bbbbbbbbbb",
        bake=BakeStatus(
            previous_revision="aaaaaaaaaa", until="2026-03-01T12:20:00Z", last_analysis=PASS
        ),
        model_version="v2",
        history=[
            entry("bbbbbbbbbb", "v2", "Promoted", "replaced revision aaaaaaaaaa", sha=SHA_B),
            entry("aaaaaaaaaa", "v1", "Promoted", "first revision"),
        ],
    )
    return mdep(status)


def rolled_back() -> dict[str, Any]:
    """v2 failed its analysis; v1 serves again."""
    fail = PASS.model_copy(
        update={"verdict": "Fail", "reason": "canary error rate 25% (100/400) over 5%"}
    )
    status = ModelDeploymentStatus(
        observed_generation=2,
        phase=Phase.ROLLED_BACK,
        message="revision bbbbbbbbbb rolledback: 2 failed analysis windows in a row",
        conditions=conditions("False", "False", "True", "RolledBack"),
        replicas=2,
        ready_replicas=2,
        stable_revision="aaaaaaaaaa",
        failed_revision="bbbbbbbbbb",
        model_version="v1",
        history=[
            entry(
                "bbbbbbbbbb",
                "v2",
                "RolledBack",
                f"2 failed analysis windows in a row: {fail.reason}",
                sha=SHA_B,
            ),
            entry("aaaaaaaaaa", "v1", "Promoted", "first revision"),
        ],
    )
    return mdep(status)
