"""docs/argocd-health.lua, run by a real Lua interpreter against statuses built with the API's
own pydantic models, the way Argo CD runs it: the object as the global `obj`, the script's
return value as the health."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelrollout.api.status import (
    AnalysisStatus,
    BakeStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    RolloutStatus,
)

from .cli.objects import condition, conditions

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "argocd-health.lua"
GITOPS = REPO / "docs" / "gitops.md"
T = "2026-03-01T12:00:00Z"
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "10m"}}]


def _lua_binary() -> str:
    for name in ("lua5.4", "lua5.3", "lua"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Lua interpreter: run `make lua` (Debian package lua5.4)")


# --- JSON to a Lua table constructor -------------------------------------------------------------


def _lua_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    # Lua strings are bytes; UTF-8 passes through untouched.
    return '"' + "".join(out) + '"'


def to_lua(value: Any) -> str:
    """A Lua expression for a JSON value. null becomes an absent key, as in Argo CD, where a
    JSON null reaches the script as nil."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value if v is not None) + "}"
    if isinstance(value, dict):
        fields = [f"[{_lua_string(k)}] = {to_lua(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"not JSON: {value!r}")


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(hs.status, hs.message) as the script returns them for `obj`."""
    harness = (
        f"obj = {to_lua(obj)}\n"
        f"local check = assert(loadfile({_lua_string(str(SCRIPT))}))\n"
        "local hs = check()\n"
        'io.write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")\n'
    )
    result = subprocess.run(
        [_lua_binary(), "-"], input=harness, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    return status, message.removesuffix("\n")


def test_converter_round_trip() -> None:
    """The converter against Lua itself: strings with quotes, newlines and UTF-8, numbers,
    nested arrays; null keys disappear."""
    value = {"s": 'a "b"\n\\ ✓', "n": 3, "f": 0.0025, "t": True, "l": [1, {"x": None}], "z": None}
    script = (
        f"local v = {to_lua(value)}\n"
        'io.write(v.s, "|", v.n, "|", v.f, "|", tostring(v.t), "|", #v.l, "|", '
        'tostring(v.l[2].x), "|", tostring(v.z))\n'
    )
    out = subprocess.run([_lua_binary(), "-"], input=script, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'a "b"\n\\ ✓|3|0.0025|true|2|nil|nil'


# --- objects ----------------------------------------------------------------------------------


def entry(revision: str, outcome: str, reason: str) -> HistoryEntry:
    return HistoryEntry(
        revision=revision,
        model_version="v2",
        model_uri="s3://models/iris/v2.onnx",
        image="ghcr.io/modelrollout/modelserver:0.1.0",
        started=T,
        finished=T,
        outcome=outcome,
        reason=reason,
    )


def mdep(
    status: ModelDeploymentStatus | None, generation: int = 3, paused: bool = False
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "generation": generation},
        "spec": {
            "model": {"uri": "s3://models/iris/v2.onnx", "version": "v2"},
            "rollout": {"steps": STEPS},
            "paused": paused,
        },
    }
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, mode="json")
    return obj


def canary(step: int, weight: int, phase: Phase = Phase.PROGRESSING) -> ModelDeploymentStatus:
    reason = "Paused" if phase == Phase.PAUSED else "Canary"
    return ModelDeploymentStatus(
        observed_generation=3,
        phase=phase,
        message=f"step {step}: moving canary weight {weight}% -> {weight}%",
        conditions=conditions("False", "True", "False", reason),
        stable_revision="aaaaaaaaaa",
        canary_revision="bbbbbbbbbb",
        canary_weight=weight,
        rollout=RolloutStatus(
            step=step,
            step_started=T,
            last_analysis=AnalysisStatus(verdict="Inconclusive", reason="too few requests", time=T),
        ),
        model_version="v1",
    )


READY = ModelDeploymentStatus(
    observed_generation=3,
    phase=Phase.READY,
    message="revision bbbbbbbbbb is serving",
    conditions=conditions("True", "False", "False", "Complete"),
    stable_revision="bbbbbbbbbb",
    model_version="v2",
    replicas=2,
    ready_replicas=2,
)

ROLLED_BACK = ModelDeploymentStatus(
    observed_generation=3,
    phase=Phase.ROLLED_BACK,
    message="revision bbbbbbbbbb rolledback: 2 failed analysis windows in a row: canary error "
    "rate 12% (60/500) over 5%",
    conditions=conditions("False", "False", "True", "RolledBack"),
    stable_revision="aaaaaaaaaa",
    failed_revision="bbbbbbbbbb",
    model_version="v1",
    history=[
        entry(
            "bbbbbbbbbb",
            "RolledBack",
            "2 failed analysis windows in a row: canary error rate 12% (60/500) over 5%",
        )
    ],
)


# --- one case per phase, and the edges between them -------------------------------------------

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "no status yet",
        mdep(None),
        "Progressing",
        "Waiting for the operator to reconcile the ModelDeployment",
    ),
    (
        "Pending",
        mdep(ModelDeploymentStatus(observed_generation=3, message="waiting for revision x")),
        "Progressing",
        "waiting for revision x",
    ),
    (
        "spec changed, operator behind",
        mdep(READY, generation=4),
        "Progressing",
        "Waiting for the operator to observe generation 4 (status describes generation 3)",
    ),
    (
        "Progressing: first revision",
        mdep(
            ModelDeploymentStatus(
                observed_generation=3,
                phase=Phase.PROGRESSING,
                message="waiting for revision aaaaaaaaaa to become available",
                conditions=conditions("False", "True", "False", "Deploying"),
            )
        ),
        "Progressing",
        "waiting for revision aaaaaaaaaa to become available",
    ),
    (
        "Progressing: canary moving weight",
        mdep(canary(step=0, weight=20)),
        "Progressing",
        "step 0: moving canary weight 20% -> 20%",
    ),
    (
        "Progressing: timed pause runs out on its own",
        mdep(canary(step=3, weight=50)),
        "Progressing",
        "step 3: moving canary weight 50% -> 50%",
    ),
    (
        "Progressing: waiting at a pause step",
        mdep(canary(step=1, weight=20)),
        "Suspended",
        "Waiting at pause step 1 with 20% of traffic on canary revision bbbbbbbbbb; set the "
        "modelrollout.io/resume annotation (kubectl modelrollout resume iris) to continue",
    ),
    (
        "Paused",
        mdep(canary(step=2, weight=20, phase=Phase.PAUSED), paused=True),
        "Suspended",
        "Paused by spec.paused with 20% of traffic on canary revision bbbbbbbbbb; set "
        "spec.paused to false to continue",
    ),
    ("Ready", mdep(READY), "Healthy", "revision bbbbbbbbbb is serving"),
    (
        "Ready, baking",
        mdep(
            READY.model_copy(
                update={
                    "bake": BakeStatus(
                        previous_revision="aaaaaaaaaa", until="2026-03-01T12:05:00Z"
                    ),
                    "conditions": conditions("True", "True", "False", "Baking"),
                }
            )
        ),
        "Progressing",
        "Revision bbbbbbbbbb is promoted and baking until 2026-03-01T12:05:00Z; a regression "
        "before then rolls back to revision aaaaaaaaaa",
    ),
    (
        "RolledBack",
        mdep(ROLLED_BACK),
        "Degraded",
        "Revision bbbbbbbbbb was rolled back (2 failed analysis windows in a row: canary error "
        "rate 12% (60/500) over 5%); revision aaaaaaaaaa serves. Change the spec, or set the "
        "modelrollout.io/retry annotation to try again",
    ),
    (
        "Degraded",
        mdep(
            ModelDeploymentStatus(
                observed_generation=3,
                phase=Phase.DEGRADED,
                message="deployment iris-bbbbbbbbbb is not progressing: ProgressDeadlineExceeded",
                conditions=conditions("False", "False", "True", "DeploymentFailed"),
                stable_revision="bbbbbbbbbb",
            )
        ),
        "Degraded",
        "deployment iris-bbbbbbbbbb is not progressing: ProgressDeadlineExceeded",
    ),
    (
        "Failed",
        mdep(
            ModelDeploymentStatus(
                observed_generation=3,
                phase=Phase.FAILED,
                message="spec.model.uri: Field required",
                conditions=conditions("False", "False", "True", "InvalidSpec"),
            )
        ),
        "Degraded",
        "spec.model.uri: Field required",
    ),
    (
        "Ready but Degraded condition (an API error while the stable serves)",
        mdep(
            READY.model_copy(
                update={
                    "message": "",
                    "conditions": [
                        condition("Ready", "True", "ApiError", "conflict"),
                        condition("Degraded", "True", "ApiError", "the route was modified"),
                    ],
                }
            )
        ),
        "Degraded",
        "the route was modified",
    ),
]


@pytest.mark.parametrize(
    ("obj", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_health(obj: dict[str, Any], status: str, message: str) -> None:
    assert health(obj) == (status, message)


def test_every_phase_is_covered() -> None:
    phases = {
        (c[1].get("status") or {}).get("phase") for c in CASES if c[1].get("status") is not None
    }
    assert {p.value for p in Phase} <= phases


def test_an_unknown_phase_falls_back_to_the_ready_condition() -> None:
    obj = mdep(READY)
    obj["status"]["phase"] = "Reticulating"
    assert health(obj) == ("Healthy", "revision bbbbbbbbbb is serving")
    obj["status"]["conditions"][0]["status"] = "False"
    assert health(obj) == ("Unknown", "Unrecognised phase Reticulating")


def test_floats_from_json_print_as_integers() -> None:
    """Argo CD hands the script JSON numbers as floats."""
    obj = mdep(READY, generation=4)
    obj["metadata"]["generation"] = 4.0
    obj["status"]["observedGeneration"] = 3.0
    assert health(obj)[1] == (
        "Waiting for the operator to observe generation 4 (status describes generation 3)"
    )


def test_script_stays_within_lua_5_1() -> None:
    """Argo CD runs gopher-lua (Lua 5.1): no goto, integer division, bit operators or
    attributes."""
    code = "\n".join(line.split("--", 1)[0] for line in SCRIPT.read_text().splitlines())
    for construct in (
        r"\bgoto\b",
        r"//",
        r"<const>",
        r"<close>",
        r"[^~]~[^=]",
        r"&",
        r"\|",
        "<<",
        ">>",
    ):
        assert not re.search(construct, code), construct


def test_gitops_page_embeds_the_script() -> None:
    """The argocd-cm snippet in docs/gitops.md is this file, indented."""
    page = GITOPS.read_text()
    match = re.search(
        r"resource\.customizations\.health\.modelrollout\.io_ModelDeployment: \|\n(.*?)\n```",
        page,
        re.S,
    )
    assert match, "docs/gitops.md has no resource.customizations snippet"
    embedded = "\n".join(line.removeprefix("    ") for line in match.group(1).splitlines())
    assert embedded.strip() == SCRIPT.read_text().strip(), (
        "docs/gitops.md embeds an outdated docs/argocd-health.lua"
    )


def test_round_trip_through_json_matches_the_model_dump() -> None:
    """The statuses used here are what the API server stores: the dump survives JSON."""
    for _, obj, _, _ in CASES:
        assert json.loads(json.dumps(obj)) == obj
