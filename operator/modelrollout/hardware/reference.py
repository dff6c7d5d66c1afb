"""The reference profile of spec.model.reference, read by the operator for input drift.

A tenant writes the URI: it is read through the same hardened path as the model
(fetch.open_model: the policy's schemes, hosts, addresses and deadline), at most 1 MiB, and
must hash to the spec's sha256. Profiles are immutable for a given sha256, so the parsed
features are kept in memory by it (a cache only: nothing of the rollout's state is there).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from modelrollout.api.reference import MAX_REFERENCE_BYTES, FeatureReference, parse_reference
from modelrollout.redact import redact_uri
from modelrollout.tenancy import TenantPolicy

from .errors import ProfileError
from .fetch import Resolver, _resolve, open_model

__all__ = ["ReferenceCache", "ReferenceError", "read_reference"]

_DEADLINE_SECONDS = 30.0


class ReferenceError(Exception):
    """The profile cannot be read or used; the message is fit for status."""


def read_reference(
    uri: str, sha256: str, policy: TenantPolicy, resolve: Resolver = _resolve
) -> tuple[FeatureReference, ...]:
    """Fetch, verify and parse the profile. Blocking: call it from a worker thread."""
    limited = policy.model_copy(
        update={
            "max_model_bytes": min(policy.max_model_bytes, MAX_REFERENCE_BYTES),
            "fetch_deadline_seconds": min(policy.fetch_deadline_seconds, _DEADLINE_SECONDS),
        }
    )
    where = f"reference profile {redact_uri(uri)}"
    try:
        with open_model(uri, limited, resolve=resolve) as chunks:
            raw = b"".join(chunks)
    except ProfileError as exc:
        raise ReferenceError(f"{where}: {exc.message}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise ReferenceError(f"{where}: sha256 is {digest}, the spec says {sha256}")
    try:
        return parse_reference(raw)
    except ValueError as exc:
        raise ReferenceError(f"{where}: {exc}") from None


class ReferenceCache:
    """Parsed profiles by sha256, the least recently used dropped past ``size``."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[FeatureReference, ...]] = OrderedDict()

    def get(self, sha256: str) -> tuple[FeatureReference, ...] | None:
        found = self._items.get(sha256)
        if found is not None:
            self._items.move_to_end(sha256)
        return found

    def put(self, sha256: str, features: tuple[FeatureReference, ...]) -> None:
        self._items[sha256] = features
        self._items.move_to_end(sha256)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
