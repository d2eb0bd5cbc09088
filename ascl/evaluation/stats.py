"""Rates and means with 95% confidence intervals, and the test for whether two of them differ."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


class Estimate(BaseModel):
    """A rate or mean with its 95% confidence interval; `value` is None when there is no data."""

    value: float | None
    low: float | None
    high: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    def format(self, percent: bool = True, digits: int = 1) -> str:
        """Render as "81.2% [75.0, 86.4] (n=120)", or "n/a (n=0)" without data."""
        if self.value is None or self.low is None or self.high is None:
            return f"n/a (n={self.n})"
        scale, unit = (100.0, "%") if percent else (1.0, "")
        return (f"{self.value * scale:.{digits}f}{unit} "
                f"[{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}] (n={self.n})")


def wilson(successes: int, n: int) -> Estimate:
    """Estimate a rate with the Wilson score interval, which stays inside [0, 1] and behaves at 0 and n."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got successes={successes}, n={n}")
    if n == 0:
        return Estimate(value=None, low=None, high=None, n=0)
    rate = successes / n
    denominator = 1 + Z_95**2 / n
    centre = (rate + Z_95**2 / (2 * n)) / denominator
    margin = Z_95 * math.sqrt(rate * (1 - rate) / n + Z_95**2 / (4 * n * n)) / denominator
    # Rounding leaves the bounds a hair off at 0 and n (1e-18 above 0, say); clamp them around the rate.
    low = 0.0 if successes == 0 else min(rate, max(0.0, centre - margin))
    high = 1.0 if successes == n else max(rate, min(1.0, centre + margin))
    return Estimate(value=rate, low=low, high=high, n=n)


def rate(outcomes: Sequence[bool]) -> Estimate:
    """Estimate the rate of True among `outcomes`."""
    return wilson(sum(bool(outcome) for outcome in outcomes), len(outcomes))


def mean(values: Sequence[float]) -> Estimate:
    """Estimate a mean with a normal-approximation interval (sample standard deviation, z = 1.96)."""
    n = len(values)
    if n == 0:
        return Estimate(value=None, low=None, high=None, n=0)
    average = math.fsum(values) / n
    if n == 1:
        return Estimate(value=average, low=average, high=average, n=1)
    variance = math.fsum((value - average) ** 2 for value in values) / (n - 1)
    margin = Z_95 * math.sqrt(variance / n)
    return Estimate(value=average, low=average - margin, high=average + margin, n=n)


def difference(a: Estimate, b: Estimate) -> tuple[float | None, bool]:
    """Return b - a and whether it exceeds the intervals.

    The difference counts as significant when it is larger than the two
    half-widths combined in quadrature. That is a normal-approximation
    two-sample test at about the 5% level, conservative for rates near 0 or 1.
    """
    if a.value is None or b.value is None or a.half_width is None or b.half_width is None:
        return None, False
    delta = b.value - a.value
    return delta, abs(delta) > math.hypot(a.half_width, b.half_width)


__all__ = ["Estimate", "difference", "mean", "rate", "wilson"]
