"""The one binomial interval every benchmark reports (numpy-free, torch-free: any bench script imports it)."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of `successes` in `n` trials; (0, 1) when n is 0.

    Wilson rather than the normal approximation because our cells sit at 0/50 and 50/50, where
    p ± z·sqrt(p(1-p)/n) collapses to a zero-width interval."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
