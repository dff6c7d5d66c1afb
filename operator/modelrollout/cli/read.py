"""Reading a ModelDeployment as the API server returns it (a JSON dict) for the plugin's views.

The status is read into the API's status model, leniently: a plugin older or newer than the
operator must still show whatever it can instead of refusing the object, so fields this
version does not know, or cannot read, are left out rather than failing the whole status.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus

Obj = Mapping[str, Any]

# Each pass drops the fields that failed; a status has few enough fields for this to end soon.
_MAX_PASSES = 20


def _known(model: type[BaseModel], raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` without the keys `model` has no field for (by wire name or Python name)."""
    names = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
    return {k: v for k, v in raw.items() if k in names}


def _drop(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Remove the value at `loc` (a validation error's location); False if it is not there."""
    for key in loc[:-1]:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1] if loc else None
    if isinstance(data, dict) and last in data:
        del data[last]
        return True
    if isinstance(data, list) and isinstance(last, int) and 0 <= last < len(data):
        del data[last]
        return True
    return False


def read_status(obj: Obj) -> ModelDeploymentStatus:
    """The object's status as the status model; what cannot be read is left out."""
    raw = obj.get("status")
    # A deep copy: dropping what cannot be read must not change the caller's object.
    data = copy.deepcopy(_known(ModelDeploymentStatus, raw)) if isinstance(raw, Mapping) else {}
    for _ in range(_MAX_PASSES):
        try:
            return ModelDeploymentStatus.model_validate(data)
        except ValidationError as exc:
            # An unknown or unreadable field is dropped; an object missing a field it needs
            # (say, one condition) is dropped, not the whole status.
            dropped = [
                _drop(data, err["loc"][:-1] if err["type"] == "missing" else err["loc"])
                for err in exc.errors()
            ]
            if not any(dropped):
                break
    return ModelDeploymentStatus()


def spec_with_defaults(spec: Obj | None) -> dict[str, Any]:
    """The spec with the API defaults filled in (default steps, analysis limits), as the
    operator sees it. A spec this version cannot read is shown as stored."""
    raw = dict(spec or {})
    try:
        return ModelDeploymentSpec.model_validate(raw).model_dump(by_alias=True, mode="json")
    except ValidationError:
        return raw


def step_text(step: Obj) -> str:
    """One rollout step in words."""
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}%"
    if step.get("pause") is not None:
        length = (step.get("pause") or {}).get("duration")
        return f"pause {length}" if length else "pause until resumed"
    if step.get("analysis") is not None:
        n = (step.get("analysis") or {}).get("intervals", 1)
        return f"analysis ({n} passing window{'s' if n != 1 else ''})"
    return "?"


def in_rollout(obj: Obj) -> bool:
    status = read_status(obj)
    return bool(status.canary_revision) and status.rollout is not None


def waiting_for_resume(obj: Obj) -> bool:
    """Is the rollout at a pause step without a duration (it waits for `resume`)?"""
    status = read_status(obj)
    if not (status.canary_revision and status.rollout):
        return False
    steps = spec_with_defaults(obj.get("spec")).get("rollout", {}).get("steps") or []
    index = status.rollout.step
    if not 0 <= index < len(steps):
        return False
    pause = steps[index].get("pause")
    return pause is not None and not pause.get("duration")


def router_text(router: Obj) -> str:
    kind = router.get("type", "replicas")
    if kind == "gatewayAPI":
        return f"Gateway API HTTPRoute {router.get('httpRoute', '?')}"
    if kind == "istio":
        return f"Istio VirtualService {router.get('virtualService', '?')}"
    return "replica ratio (approximate: traffic follows the pod counts)"
