"""Storage requests become whole GiB for osDiskSizeGB (never upstream's bytes-as-int32)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from gpu_provisioner.quantity import InvalidQuantity, parse_quantity, to_gib_rounded_up


@pytest.mark.parametrize(
    ("quantity", "gib"),
    [
        ("256Gi", 256),
        ("1Ti", 1024),
        ("0.5Ti", 512),
        ("100G", 94),  # 100e9 bytes is 93.13 GiB: round up so the disk is never too small
        ("1536Mi", 2),
        ("1024Mi", 1),
        ("1073741824", 1),
        (1073741824, 1),
        ("1073741825", 2),
        ("5e9", 5),
        ("2E9", 2),
        ("1.5Gi", 2),
        ("0", 0),
        (0, 0),
        ("1k", 1),
        ("120Gi", 120),  # upstream v0.2.1 sent 0 (int32 wrap) for multiples of 4 GiB
    ],
)
def test_storage_request_is_converted_to_whole_gib_rounded_up(quantity: str | int, gib: int) -> None:
    assert to_gib_rounded_up(quantity) == gib


def test_quantities_are_parsed_exactly() -> None:
    assert parse_quantity("1.5Gi") == Fraction(3, 2) * 2**30
    assert parse_quantity("250m") == Fraction(1, 4)
    assert parse_quantity("3M") == 3_000_000
    assert parse_quantity("+2Ki") == 2048


@pytest.mark.parametrize("bad", ["", "Gi", "12GB", "1.2.3Gi", "ten", "1 Gi x", "1e", "-5Gi", True])
def test_text_that_is_not_a_positive_quantity_is_refused(bad: str | bool) -> None:
    with pytest.raises(InvalidQuantity):
        to_gib_rounded_up(bad)
