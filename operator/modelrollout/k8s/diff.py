"""Does a live object already hold every field of a desired manifest? (pure)

Server-side apply is idempotent, but patching only on a real difference keeps the API server's
write load and the objects' resourceVersions still while nothing changes.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes resource quantity as a number, or None when `text` is not one."""
    match = _QUANTITY.match(text)
    if not match:
        return None
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if suffix[:1] in ("e", "E"):
        return value * Decimal(10) ** int(suffix[1:])
    scale = _SUFFIXES.get(suffix)
    return None if scale is None else value * scale


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
