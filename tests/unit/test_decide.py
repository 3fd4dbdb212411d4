"""executor.decide(): the next status after an attempt and the delay before a retry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_daemon.domain.backoff import Backoff
from scheduler_daemon.domain.models import Outcome, TaskStatus
from scheduler_daemon.engine.executor import decide
from tests.fakes import claimed_task

BACKOFF = Backoff(base_s=1.0, cap_s=60.0, jitter=True)
FAILURES = [Outcome.FAILED, Outcome.TIMED_OUT, Outcome.LOST]


@pytest.mark.parametrize("retryable", [True, False])
@pytest.mark.parametrize("attempt", [1, 3])
def test_success_completes(attempt: int, retryable: bool) -> None:
    task = claimed_task(attempt=attempt, max_attempts=3)
    assert decide(task, Outcome.SUCCEEDED, retryable, BACKOFF) == (TaskStatus.COMPLETED, None)


@given(
    attempt=st.integers(min_value=1, max_value=99),
    extra=st.integers(min_value=1, max_value=100),
    outcome=st.sampled_from(FAILURES),
)
def test_retryable_failure_with_attempts_left_is_rescheduled(
    attempt: int, extra: int, outcome: Outcome
) -> None:
    task = claimed_task(attempt=attempt, max_attempts=attempt + extra)
    status, delay = decide(task, outcome, True, BACKOFF)
    assert status is TaskStatus.SCHEDULED
    assert delay is not None
    assert 0.0 <= delay <= BACKOFF.ceiling(attempt)


def test_retry_delay_without_jitter_is_the_ceiling_of_this_attempt() -> None:
    backoff = Backoff(base_s=2.0, cap_s=60.0, jitter=False)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0)]:
        task = claimed_task(attempt=attempt, max_attempts=10)
        assert decide(task, Outcome.FAILED, True, backoff) == (TaskStatus.SCHEDULED, ceiling)


@pytest.mark.parametrize("outcome", FAILURES)
@pytest.mark.parametrize("max_attempts", [1, 3, 100])
def test_retryable_failure_on_the_last_attempt_fails(outcome: Outcome, max_attempts: int) -> None:
    task = claimed_task(attempt=max_attempts, max_attempts=max_attempts)
    assert decide(task, outcome, True, BACKOFF) == (TaskStatus.FAILED, None)


def test_attempt_beyond_max_attempts_fails() -> None:
    # max_attempts lowered after the task was claimed: never retry past the limit.
    task = claimed_task(attempt=5, max_attempts=3)
    assert decide(task, Outcome.FAILED, True, BACKOFF) == (TaskStatus.FAILED, None)


@pytest.mark.parametrize("outcome", FAILURES)
@pytest.mark.parametrize("attempt", [1, 2])
def test_non_retryable_failure_fails_at_once(outcome: Outcome, attempt: int) -> None:
    task = claimed_task(attempt=attempt, max_attempts=10)
    assert decide(task, outcome, False, BACKOFF) == (TaskStatus.FAILED, None)


def test_timed_out_is_retried_when_retryable() -> None:
    task = claimed_task(attempt=1, max_attempts=2)
    status, delay = decide(task, Outcome.TIMED_OUT, True, BACKOFF)
    assert status is TaskStatus.SCHEDULED
    assert delay is not None
    assert 0.0 <= delay <= 1.0
    last = claimed_task(attempt=2, max_attempts=2)
    assert decide(last, Outcome.TIMED_OUT, True, BACKOFF) == (TaskStatus.FAILED, None)
