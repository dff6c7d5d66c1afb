"""Reading the errors a reconcile meets: the API server's refusals and an invalid stored spec."""

from __future__ import annotations

from lightkube import ApiError
from pydantic import ValidationError

__all__ = ["format_validation", "namespace_terminating"]


def format_validation(exc: ValidationError) -> str:
    """A spec's validation errors, each naming its field (`spec.rollout.steps: ...`)."""
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{path}: {err['msg']}" if path else err["msg"])
    return "; ".join(parts)


def namespace_terminating(exc: ApiError) -> bool:
    """The API server refused because the object's namespace is being deleted."""
    details = exc.status.details
    causes = (details.causes if details else None) or []
    return any(c.reason == "NamespaceTerminating" for c in causes)
