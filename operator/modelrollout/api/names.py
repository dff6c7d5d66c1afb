"""Names and formats every layer shares: child object names, labels, the kinds of children, and
the timestamp format of status and events. One home, so the planner, the cluster I/O, the
kopf wiring, the CLI and the local gateway cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

MANAGED_BY = "modelrollout"
# Server-side apply field manager of every write the operator makes.
FIELD_MANAGER = "modelrollout"
LABEL_DEPLOYMENT = "modelrollout.io/deployment"
LABEL_REVISION = "modelrollout.io/revision"
LABEL_TRACK = "modelrollout.io/track"
CONTAINER = "modelserver"
# On a revision's Deployment: the spec sections it was built from (JSON), for history and undo.
ANNOTATION_REVISION_SPEC = "modelrollout.io/revision-spec"
# On every child: a digest of the manifest last applied, so that a field dropped from it is
# applied away (k8s/diff.py).
ANNOTATION_APPLIED = "modelrollout.io/applied"

Track = Literal["stable", "canary"]
STABLE: Track = "stable"
CANARY: Track = "canary"


def deployment_name(owner: str, revision: str) -> str:
    """The Deployment of one revision."""
    return f"{owner}-{revision}"


def track_service_name(owner: str, track: Track) -> str:
    """`NAME-stable` / `NAME-canary`: the two Services a traffic router splits between."""
    return f"{owner}-{track}"


def canary_autoscaler_name(owner: str) -> str:
    return f"{owner}-canary"


# Every kind of child, as (apiVersion, kind, plural): what the operator lists, applies, deletes
# and watches.
CHILD_KINDS: tuple[tuple[str, str, str], ...] = (
    ("apps/v1", "Deployment", "deployments"),
    ("v1", "Service", "services"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
)

# Timestamps in status, conditions, history and events: RFC 3339 in UTC, whole seconds.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(t: datetime) -> str:
    return (t.astimezone(UTC) if t.tzinfo else t).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """Read a timestamp written by `format_time` (or by the API server, fractions allowed)."""
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
