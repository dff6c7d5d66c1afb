"""Kubernetes resource quantities ("500m", "4Gi", "1e3") as exact fractions, and back."""

from __future__ import annotations

import re
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")

Quantity = int | float | str
MI = 2**20
MAX_EXPONENT = 64


def parse_quantity(value: Quantity) -> Fraction:
    """Parse a Kubernetes quantity; ints and floats pass through. ValueError if malformed."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Fraction(value)
    m = _RE.match(value.strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, exponent, suffix = m.groups()
    q = Fraction(number)
    if exponent:
        power = int(exponent[1:])
        # 10**power is exact, so its cost grows with power: "1e999999999" would take the
        # operator forever. No quantity a cluster holds comes near this bound.
        if abs(power) > MAX_EXPONENT:
            raise ValueError(
                f"not a Kubernetes quantity (exponent beyond {MAX_EXPONENT}): {value!r}"
            )
        q *= Fraction(10) ** power
    return q * _SUFFIXES[suffix or ""]


def format_cpu(cores: Fraction | float | int) -> str:
    """Whole cores as "2", otherwise millicores ("1500m"), rounded up to a millicore."""
    milli = -(-Fraction(cores) * 1000 // 1)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def format_bytes(n: Fraction | float | int) -> str:
    """Bytes as whole mebibytes ("1536Mi"), rounded up; whole gibibytes as "4Gi"."""
    mib = int(-(-Fraction(n) // MI))
    return f"{mib // 1024}Gi" if mib and mib % 1024 == 0 else f"{mib}Mi"


def format_quantity(resource: str, value: Fraction | float | int) -> str:
    """CPU in cores/millicores, memory-like resources in Mi/Gi, others as whole numbers."""
    if resource == "cpu":
        return format_cpu(value)
    if resource in ("memory", "ephemeral-storage") or resource.startswith("hugepages-"):
        return format_bytes(value)
    v = Fraction(value)
    return str(v.numerator) if v.denominator == 1 else str(-(-v // 1))
