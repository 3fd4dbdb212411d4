"""Retry delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float
    cap_s: float
    jitter: bool = True

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        exponent = max(attempt - 1, 0)
        try:
            grown = math.ldexp(self.base_s, exponent)  # base * 2**exponent, exactly
        except OverflowError:
            return self.cap_s
        return min(self.cap_s, grown)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        top = self.ceiling(attempt)
        if not self.jitter:
            return top
        return (rng or random).uniform(0.0, top)
