"""Does a live object already hold every field of a desired manifest? (pure)

Server-side apply is idempotent, but patching only on a real difference keeps the API server's
write load and the objects' resourceVersions still while nothing changes.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from typing import Any

from modelrollout.api.names import ANNOTATION_APPLIED
from modelrollout.api.quantity import parse_quantity as _parse


def parse_quantity(text: str) -> Fraction | None:
    """A Kubernetes resource quantity as a number, or None when `text` is not one."""
    try:
        return _parse(text)
    except ValueError:
        return None


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, str) and isinstance(live, str | int):
        # The API server normalises quantities ("1000m" is stored as "1").
        a, b = parse_quantity(desired), parse_quantity(str(live))
        return a is not None and a == b
    return False


def contains(live: Any, desired: Any) -> bool:
    """True when every field in `desired` has the same value in `live`. Lists must match in
    length and element by element; fields only in `live` (defaults, status) are ignored."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(a, b) for a, b in zip(live, desired, strict=True))
    return _same_scalar(desired, live)


def stamped(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` with a digest of itself in an annotation. `contains` ignores fields only the
    live object has, so a field dropped from the manifest (a GPU node selector after a fall
    back to CPU) would never be applied away; with the digest, any change to the manifest,
    a removal too, makes the live object differ, and the apply removes what it no longer
    sets."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    meta = manifest["metadata"]
    annotations = {**meta.get("annotations", {}), ANNOTATION_APPLIED: digest}
    return {**manifest, "metadata": {**meta, "annotations": annotations}}
