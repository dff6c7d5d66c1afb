"""Kubernetes quantities."""

from __future__ import annotations

from fractions import Fraction

import pytest

from modelrollout.api.quantity import (
    format_bytes,
    format_cpu,
    format_quantity,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Fraction(1)),
        ("500m", Fraction(1, 2)),
        ("1.5", Fraction(3, 2)),
        ("4Gi", Fraction(4 * 2**30)),
        ("128Mi", Fraction(128 * 2**20)),
        ("1G", Fraction(10**9)),
        ("1e3", Fraction(1000)),
        ("2E-3", Fraction(2, 1000)),
        ("1e64", Fraction(10**64)),
        (".5", Fraction(1, 2)),
        ("100k", Fraction(100_000)),
        (3, Fraction(3)),
        (0.25, Fraction(1, 4)),
    ],
)
def test_parse(text: str | int | float, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "1Gb", "abc", "1.2.3", "--1", "Gi"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(bad)


@pytest.mark.parametrize("huge", ["1e999999999", "8e91234567", "12e4567890123456", "1e-65"])
def test_parse_refuses_exponents_it_cannot_afford(huge: str) -> None:
    # Exact powers of ten that large never finish: the operator would hang on one string (a
    # tenant's, or a hex digest that happens to read as digits, 'e', digits).
    with pytest.raises(ValueError, match="exponent beyond 64"):
        parse_quantity(huge)


def test_format() -> None:
    assert format_cpu(2) == "2"
    assert format_cpu(Fraction(5, 2)) == "2500m"
    assert format_cpu(Fraction(1, 3000)) == "1m"  # rounded up, never to zero
    assert format_bytes(2**30) == "1Gi"
    assert format_bytes(2**30 + 1) == "1025Mi"
    assert format_bytes(1) == "1Mi"
    assert format_quantity("nvidia.com/gpu", 1) == "1"
    assert format_quantity("memory", 3 * 2**20) == "3Mi"
