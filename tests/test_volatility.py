"""analyzers.volatility: which value changes look like two draws of a volatile value."""

from __future__ import annotations

import json

import pytest

from analyzers.volatility import looks_volatile


def j(value: object) -> str:
    return json.dumps(value)


@pytest.mark.parametrize(("old", "new"), [
    ("2026-12-07T14:22:22.123456+00:00", "2026-12-07T14:22:22.125001+00:00"),
    ("2026-12-07T14:22:22Z", "2026-12-07T14:22:23Z"),
    ("Mon, 07 Dec 2026 14:22:22 GMT", "Mon, 07 Dec 2026 14:22:23 GMT"),
    ("0b8f5e0e-1d2c-4c1a-9a0e-2f1e3d4c5b6a", "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"),
    ("req-7f3a9c1e2b4d", "req-01b2e9d8c7f6"),
    ("dGhpc0lzQVRva2VuMTIzNA", "YW5vdGhlclRva2VuOTg3Ng"),
    (1765117342, 1765117343),
    (1765117342123, 1765117342999),
    ("1765117342", "1765117350"),
])
def test_volatile_pairs(old: object, new: object) -> None:
    assert looks_volatile(j(old), j(new))


@pytest.mark.parametrize(("old", "new"), [
    (12.345, 12.35),  # a rounded total
    (20, 21),  # a price
    ("shipped", "delivered"),  # a status word
    ("SKU-000123", "SKU-000124"),  # an id that differs by one character: not random
    ("2026-12-07T14:22:22Z", 1765117342),  # not the same shape
    (1765117342, 1765217342),  # epochs more than a day apart
    (True, False),
    (None, "x"),
    ("2026-12-07", "2026-12-08"),  # a date, not a date-time: a business value
])
def test_not_volatile_pairs(old: object, new: object) -> None:
    assert not looks_volatile(j(old), j(new))


def test_cut_or_missing_values_are_not_volatile() -> None:
    assert not looks_volatile('"2026-12-07T14:22:22…', '"2026-12-07T14:22:23…')
    assert not looks_volatile(None, '"x"')
