"""The referee of float sums: what sum, avg and the variance family mean for a group's values, computed exactly in
rationals, and the error bounds functions.py and moments.py promise for the finite ones. Tests hold Tally's
answers to it, and DuckDB's beside them.

A group is described by what it `holds` now (its non-null values) and what its float sums have `taken_in` over
their life: every finite value lifted, a retracted one twice (added, then negated). A fresh fold has taken in
exactly what it holds.
"""
from __future__ import annotations

import math
from fractions import Fraction

U = Fraction(1, 2**53)  # the unit roundoff of float64
ETA = Fraction(1, 2**1075)  # the most a rounding that underflows into the subnormals loses
FUNCTIONS = ("sum", "avg", "var_samp", "var_pop", "stddev_samp", "stddev_pop")


def gamma(k: int) -> Fraction:
    return k * U / (1 - k * U)


def too_few(function: str, n: int) -> bool:
    """SQL's NULL: no values, or fewer than 2 for a sample variance."""
    return n < (2 if function.endswith("_samp") else 1)


def non_finite_outcome(function: str, holds: list[float]) -> float | None:
    """The non-finite answer the values force, None when they are all finite. IEEE addition for sum and avg;
    any non-finite value makes a variance NaN (DuckDB, PostgreSQL)."""
    others = [x for x in holds if not math.isfinite(x)]
    if not others:
        return None
    if function not in ("sum", "avg"):
        return math.nan
    if any(math.isnan(x) for x in others) or (math.inf in others and -math.inf in others):
        return math.nan
    return math.inf if math.inf in others else -math.inf


def assert_same_float(got: float | None, want: float | None, message) -> None:
    """Equal as SQL results: NULL only to NULL, NaN only to NaN, infinities exactly; finite values exactly."""
    if want is None or got is None:
        assert got is None and want is None, message
    elif math.isnan(want):
        assert got is not None and math.isnan(got), message
    else:
        assert got == want, message


def bound(function: str, holds: list[float], taken_in: list[float], got: float) -> Fraction:
    """The most the finite answer `got` may be off the exact one (functions.py, moments.py)."""
    m, n = len(taken_in), len(holds)
    total = sum(map(Fraction, holds))
    d_sum = gamma(m - 1) * sum(abs(Fraction(t)) for t in taken_in) if m > 1 else Fraction(0)
    if function == "sum":
        return d_sum
    if function == "avg":
        return (1 + U) * d_sum / n + U * abs(total) / n + ETA
    squares = sum(Fraction(x) ** 2 for x in holds)
    d_squares = gamma(m) * sum(Fraction(t) ** 2 for t in taken_in) + m * 2 * ETA
    d = n - 1 if function.endswith("_samp") else n
    spread = abs(total) + d_sum
    d_variance = (d_squares + (2 * abs(total) + d_sum) * d_sum / n
                  + gamma(4) * (squares + d_squares + spread * spread / n)) / d + 8 * ETA
    if function.startswith("var"):
        return d_variance
    root_up = Fraction(math.sqrt(float(d_variance))) * (1 + 4 * U)  # a rational at least sqrt(d_variance)
    return root_up + U * Fraction(got) / (1 - U)


def exact(function: str, holds: list[float]) -> Fraction:
    """The exact answer over finite values; for a standard deviation, its square (the variance)."""
    n, total = len(holds), sum(map(Fraction, holds))
    if function == "sum":
        return total
    if function == "avg":
        return total / n
    centered = sum(Fraction(x) ** 2 for x in holds) - total * total / n
    return centered / (n - 1 if function.endswith("_samp") else n)


def within(function: str, got: float, holds: list[float], taken_in: list[float], times: int = 1) -> bool:
    """Whether `got` is within `times` the bound of the exact answer."""
    allowed, want = times * bound(function, holds, taken_in, got), exact(function, holds)
    if function.startswith("stddev"):  # |got - sqrt(want)| <= allowed, without an irrational square root
        return got >= 0 and max(Fraction(got) - allowed, Fraction(0)) ** 2 <= want <= (Fraction(got) + allowed) ** 2
    return abs(Fraction(got) - want) <= allowed


def assert_answer(function: str, got: float | None, holds: list[float], taken_in: list[float]) -> None:
    """`got` is the SQL answer over `holds`: NULL and non-finite outcomes exactly, finite ones within the bound."""
    message = (function, got, holds, taken_in)
    if too_few(function, len(holds)):
        assert got is None, message
        return
    forced = non_finite_outcome(function, holds)
    if forced is not None:
        assert_same_float(got, forced, message)
    else:
        assert got is not None and math.isfinite(got) and within(function, got, holds, taken_in), message
