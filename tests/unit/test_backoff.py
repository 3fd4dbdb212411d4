"""Backoff: capped exponential ceiling, jitter within the top of each step, reproducible with a
seeded rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_daemon.domain.backoff import JITTER_SPREAD, Backoff

attempts = st.integers(min_value=1, max_value=10_000)
# Realistic ranges: base from 1 ms to 1 min, cap up to a year (settings bound neither above).
bases = st.floats(min_value=0.001, max_value=60.0, allow_nan=False, allow_infinity=False)
caps = st.floats(min_value=0.001, max_value=365 * 24 * 3600.0, allow_nan=False)


def expected_ceiling(base: float, cap: float, attempt: int) -> float:
    """min(cap, base * 2^(attempt-1)) computed without overflowing."""
    exponent = attempt - 1
    if exponent > 1000:  # base * 2^1000 exceeds any cap considered here
        return cap
    return min(cap, base * 2.0**exponent)


def test_ceiling_doubles_from_base() -> None:
    b = Backoff(base_s=1.0, cap_s=300.0, jitter=False)
    assert [b.ceiling(n) for n in range(1, 11)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0
    ]  # fmt: skip


def test_ceiling_of_attempt_zero_or_less_is_base() -> None:
    b = Backoff(base_s=0.5, cap_s=10.0)
    assert b.ceiling(0) == 0.5
    assert b.ceiling(-3) == 0.5


@given(attempt=attempts, base=bases, cap=caps)
def test_ceiling_is_capped_exponential(attempt: int, base: float, cap: float) -> None:
    b = Backoff(base_s=base, cap_s=cap)
    ceiling = b.ceiling(attempt)
    assert ceiling == pytest.approx(expected_ceiling(base, cap, attempt))
    assert ceiling <= cap
    assert isinstance(ceiling, float)


@given(attempt=attempts, base=bases, cap=caps)
def test_ceiling_never_decreases(attempt: int, base: float, cap: float) -> None:
    b = Backoff(base_s=base, cap_s=cap)
    assert b.ceiling(attempt) <= b.ceiling(attempt + 1)


@given(attempt=attempts, base=bases, cap=caps, seed=st.integers(0, 2**32))
def test_jittered_delay_is_within_floor_and_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    b = Backoff(base_s=base, cap_s=cap, jitter=True)
    delay = b.delay(attempt, random.Random(seed))
    assert b.ceiling(attempt) * (1 - JITTER_SPREAD) <= b.floor(attempt) + 1e-12
    assert b.floor(attempt) <= delay <= b.ceiling(attempt)


@given(attempt=attempts, base=bases, cap=caps)
def test_delay_without_jitter_is_the_ceiling(attempt: int, base: float, cap: float) -> None:
    b = Backoff(base_s=base, cap_s=cap, jitter=False)
    assert b.delay(attempt) == b.ceiling(attempt)
    assert b.delay(attempt, random.Random(1)) == b.ceiling(attempt)


def test_jitter_without_rng_stays_in_range() -> None:
    b = Backoff(base_s=2.0, cap_s=60.0)
    delays = [b.delay(4) for _ in range(200)]
    assert all(16.0 * (1 - JITTER_SPREAD) <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 1  # it is actually random


def test_seeded_rng_gives_reproducible_delays() -> None:
    b = Backoff(base_s=1.0, cap_s=300.0)
    first = [b.delay(n, random.Random(42)) for n in range(1, 20)]
    second = [b.delay(n, random.Random(42)) for n in range(1, 20)]
    assert first == second
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert [b.delay(5, rng_a) for _ in range(10)] == [b.delay(5, rng_b) for _ in range(10)]
    assert b.delay(5, random.Random(7)) != b.delay(5, random.Random(8))


def test_jitter_spreads_over_the_top_of_the_step() -> None:
    b = Backoff(base_s=1.0, cap_s=100.0)
    rng = random.Random(0)
    delays = [b.delay(8, rng) for _ in range(2000)]  # ceiling 100, floor 80
    assert 80.0 <= min(delays) < 82.0
    assert 98.0 < max(delays) <= 100.0


def test_schedule_lists_the_delay_after_every_attempt_but_the_last() -> None:
    b = Backoff(base_s=10.0, cap_s=60.0)
    assert b.schedule(5) == [(8.0, 10.0), (16.0, 20.0), (32.0, 40.0), (48.0, 60.0)]
    assert b.schedule(1) == []


@pytest.mark.parametrize("attempt", [61, 62, 63, 1024, 1025, 10_000, 10**9, 10**30])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    b = Backoff(base_s=1.0, cap_s=300.0)
    assert b.ceiling(attempt) == 300.0
    assert 240.0 <= b.delay(attempt, random.Random(3)) <= 300.0
    assert Backoff(1.0, 300.0, jitter=False).delay(attempt) == 300.0


def test_overflow_guard_keeps_doubling_when_cap_is_far() -> None:
    b = Backoff(base_s=1e-9, cap_s=1e12, jitter=False)
    # 1e-9 * 2^61 is about 2.3e9, far below the cap.
    assert b.ceiling(62) == pytest.approx(1e-9 * 2.0**61)
