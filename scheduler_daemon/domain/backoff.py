"""Retry delays: capped exponential backoff, jittered within the top of each step.

The delay after failed attempt ``n`` lies in ``[ceiling(n) * (1 - JITTER_SPREAD), ceiling(n)]``
with ``ceiling(n) = min(cap_s, base_s * 2**(n-1))``. The spread keeps retries of many tasks
that failed together apart, while the lower bound keeps the whole schedule's span known: the
defaults are chosen so that a receiver that is down for an hour loses nothing, and that a task
keeps being retried for about a day (the table in the README's "Retries" section).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# Each jittered delay is at least this fraction below its ceiling at most.
JITTER_SPREAD = 0.2

# The default retry policy: 10 s doubling to a 2 h cap, 22 attempts. Jittered, the 21 delays add
# up to 19.9-24.8 h, and the first hour of a receiver's outage is outlasted by the 9th retry.
DEFAULT_RETRY_BASE_S = 10.0
DEFAULT_RETRY_CAP_S = 7200.0
DEFAULT_MAX_ATTEMPTS = 22
MAX_RETRY_BASE_S = 86_400.0
MAX_RETRY_CAP_S = 7 * 86_400.0


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

    def floor(self, attempt: int) -> float:
        """The smallest delay after failed attempt number ``attempt``."""
        top = self.ceiling(attempt)
        return top * (1.0 - JITTER_SPREAD) if self.jitter else top

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        top = self.ceiling(attempt)
        if not self.jitter:
            return top
        return (rng or random).uniform(self.floor(attempt), top)

    def schedule(self, max_attempts: int) -> list[tuple[float, float]]:
        """(floor, ceiling) of the delay after each failed attempt but the last: the retry
        schedule of a task with ``max_attempts`` attempts."""
        return [(self.floor(n), self.ceiling(n)) for n in range(1, max_attempts)]
