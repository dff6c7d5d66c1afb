"""Reading the errors a reconcile meets: the API server's refusals and an invalid stored spec."""

from __future__ import annotations

from lightkube import ApiError
from pydantic import ValidationError

try:  # lightkube 1.x talks through httpx2, older releases through httpx
    from httpx2 import HTTPStatusError, TransportError
except ImportError:  # pragma: no cover
    from httpx import HTTPStatusError, TransportError  # type: ignore[assignment]

__all__ = ["api_unavailable", "format_validation", "namespace_terminating"]

# The API server's answers while it cannot serve: starting ("storage is (re)initializing",
# paths not installed yet), overloaded, or its etcd unreachable or timing out.
UNAVAILABLE_CODES = frozenset({429, 500, 502, 503, 504})


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


def api_unavailable(exc: BaseException) -> bool:
    """The API server could not be reached (no connection, a connection cut) or answered that it
    cannot serve now: nothing about the object itself, worth retrying once it serves again."""
    if isinstance(exc, ApiError):
        return exc.status.code in UNAVAILABLE_CODES
    if isinstance(exc, HTTPStatusError):  # an answer that is not a Status object
        return exc.response.status_code in UNAVAILABLE_CODES
    return isinstance(exc, TransportError)
