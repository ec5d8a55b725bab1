"""Kubernetes resource quantities ("256Gi", "100G", "1.5Ti", "5e9", 1024) as exact numbers, and the
whole-GiB disk size an AKS agent pool takes.

Exact arithmetic (``Fraction``) on purpose: upstream gpu-provisioner v0.2.1 cast bytes to int32 and
sent AKS a wrapped-around disk size; a float would mis-round large sizes just as quietly.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exponent>[eE][+-]?\d+)|(?P<decimal>[numkMGTPE]?))$"
)
GIB = 1 << 30


class InvalidQuantity(ValueError):
    """The text is not a Kubernetes quantity."""


def parse_quantity(value: int | float | str) -> Fraction:
    """The exact value of a Kubernetes quantity (the API server's grammar: a signed decimal number
    followed by a binary suffix, a decimal SI suffix, or a decimal exponent)."""
    if isinstance(value, bool):
        raise InvalidQuantity(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQuantity(f"{value!r} is not a quantity")
        return Fraction(value)
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise InvalidQuantity(f"{value!r} is not a Kubernetes quantity (e.g. 256Gi, 100G, 5e9)")
    number = Fraction(match["number"])
    if match["binary"]:
        return number * (1 << (10 * _BINARY_SUFFIXES[match["binary"]]))
    if match["exponent"]:
        return number * Fraction(10) ** int(match["exponent"][1:])
    return number * Fraction(10) ** _DECIMAL_SUFFIXES[match["decimal"] or ""]


def to_gib_rounded_up(value: int | float | str) -> int:
    """Whole GiB needed to hold ``value`` bytes, rounded up (100G is 93.13 GiB, so 94).

    Raises ``InvalidQuantity`` for text that is not a quantity or a negative size.
    """
    size = parse_quantity(value)
    if size < 0:
        raise InvalidQuantity(f"storage size {value!r} is negative")
    return math.ceil(size / GIB)
