"""What the demo seeds, machine-readable: the differences the orders service is built to show
against the monolith, and the volatile fields that differ on every call on BOTH sides.

The report's tests use this as the answer key: every SEEDED_DIFFERENCES entry must appear in the
verdict, and no VOLATILE_* entry may appear as a real difference (the secondary monolith cancels
it as noise). services.py reads its knobs from here, so the key and the behaviour cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DifferenceKind = Literal["renamed_field", "numeric_rounding", "array_order", "latency", "error_rate"]

ORDERS_DETAIL = "/api/orders/{id}"
ORDERS_LIST = "/api/orders"

# Knobs of the candidate (the extracted orders service), shared with services.py.
CANDIDATE_EXTRA_LATENCY_MS = 20.0  # added to every GET /api/orders/{id}
CANDIDATE_LATENCY_JITTER_MS = 5.0  # uniform ± jitter on top, so the shift is not a constant
CANDIDATE_ERROR_RATE = 0.02  # share of GET /api/orders answered 500
MONOLITH_TOTAL_DECIMALS = 3
CANDIDATE_TOTAL_DECIMALS = 2

# The data set: orders 1..ORDER_COUNT, products 1..PRODUCT_COUNT, users 1..USER_COUNT.
ORDER_COUNT = 500
PRODUCT_COUNT = 60
USER_COUNT = 120
ORDERS_PAGE_SIZE = 10


@dataclass(frozen=True)
class SeededDifference:
    """One difference the candidate is built to have.

    `pointers` are RFC 6901 pointer templates into the JSON response body ("*" = any array index),
    as the primary (monolith) has them; `candidate_pointers` as the candidate has them when the
    field moved (a rename), else empty. Latency and error-rate entries carry no pointers.
    """

    name: str
    kind: DifferenceKind
    method: str
    endpoint: str
    pointers: tuple[str, ...]
    candidate_pointers: tuple[str, ...]
    description: str

    def covers(self, pointer_template: str) -> bool:
        """Whether a difference at `pointer_template` (either side's) is this seeded one. Shadow's
        engine reports a reordered array once, at the array; other engines report it element by
        element (/items/*/sku ...), so a difference at or below a seeded pointer counts."""
        return any(_at_or_below(pointer_template, p) for p in (*self.pointers, *self.candidate_pointers))


def _at_or_below(pointer: str, ancestor: str) -> bool:
    return pointer == ancestor or pointer.startswith(ancestor + "/")


SEEDED_DIFFERENCES: tuple[SeededDifference, ...] = (
    SeededDifference(
        "customer-id-renamed", "renamed_field", "GET", ORDERS_DETAIL,
        ("/customer_id",), ("/customerId",),
        "the orders service renamed customer_id to customerId"),
    SeededDifference(
        "customer-id-renamed-in-list", "renamed_field", "GET", ORDERS_LIST,
        ("/orders/*/customer_id",), ("/orders/*/customerId",),
        "the orders service renamed customer_id to customerId in the list too"),
    SeededDifference(
        "total-rounded", "numeric_rounding", "GET", ORDERS_DETAIL,
        ("/total",), (),
        f"total has {CANDIDATE_TOTAL_DECIMALS} decimals instead of {MONOLITH_TOTAL_DECIMALS} "
        "(19.999 becomes 20.0); equal whenever the third decimal is 0"),
    SeededDifference(
        "total-rounded-in-list", "numeric_rounding", "GET", ORDERS_LIST,
        ("/orders/*/total",), (),
        f"total has {CANDIDATE_TOTAL_DECIMALS} decimals instead of {MONOLITH_TOTAL_DECIMALS} in the list"),
    SeededDifference(
        "items-reordered", "array_order", "GET", ORDERS_DETAIL,
        ("/items",), (),
        "line items come sorted by sku instead of by line number (same elements, other order)"),
    SeededDifference(
        "items-reordered-in-list", "array_order", "GET", ORDERS_LIST,
        ("/orders/*/items",), (),
        "line items come sorted by sku instead of by line number in the list"),
    SeededDifference(
        "detail-slower", "latency", "GET", ORDERS_DETAIL, (), (),
        f"the orders service answers order details about {CANDIDATE_EXTRA_LATENCY_MS:.0f} ms slower"),
    SeededDifference(
        "list-errors", "error_rate", "GET", ORDERS_LIST, (), (),
        f"the orders service answers about {CANDIDATE_ERROR_RATE:.0%} of order lists with a 500 "
        "(those pairs show one status difference, 200 → 500, judged by the 5xx guardrail)"),
)

# Volatile: different on every call from every instance, monolith and service alike.
VOLATILE_BODY_FIELDS: tuple[str, ...] = ("/generated_at", "/request_id")
VOLATILE_HEADERS: tuple[str, ...] = ("x-request-id", "date")  # lower-case names
# Headers that differ between primary and candidate only as a consequence of the seeded body
# differences (a renamed key changes the length): not seeded themselves, not volatile either.
DERIVED_HEADERS: tuple[str, ...] = ("content-length",)

# Endpoints the demo mirrors (the /api/orders router). Everything else is served by the monolith only.
MIRRORED_ENDPOINTS: tuple[str, ...] = (ORDERS_LIST, ORDERS_DETAIL)


def is_volatile_body_field(pointer_template: str) -> bool:
    return any(_at_or_below(pointer_template, p) for p in VOLATILE_BODY_FIELDS)


@dataclass(frozen=True)
class SeedCheck:
    """How an analysis's per-field differences compare with the answer key."""

    missing: tuple[SeededDifference, ...]  # body seeds no real difference matched
    volatile_as_real: tuple[tuple[str, str], ...]  # (endpoint, pointer template) of volatile fields not noise

    @property
    def ok(self) -> bool:
        return not self.missing and not self.volatile_as_real


def check_diff_fields(fields: Iterable[tuple[str, str, bool]]) -> SeedCheck:
    """Check (endpoint, pointer_template, noise) rows — e.g. a report's diff fields — against the
    key: every body seed must match a real (non-noise) row of its endpoint, and no volatile field
    may be real. Latency and error-rate seeds are judged by the verdict's metrics, not here."""
    rows = list(fields)
    real = [(endpoint, pointer) for endpoint, pointer, noise in rows if not noise]
    missing = tuple(
        d for d in SEEDED_DIFFERENCES
        if d.pointers and not any(endpoint == d.endpoint and d.covers(pointer) for endpoint, pointer in real))
    volatile = tuple((endpoint, pointer) for endpoint, pointer in real if is_volatile_body_field(pointer))
    return SeedCheck(missing, volatile)


def seeded_for(endpoint: str) -> tuple[SeededDifference, ...]:
    return tuple(d for d in SEEDED_DIFFERENCES if d.endpoint == endpoint)
