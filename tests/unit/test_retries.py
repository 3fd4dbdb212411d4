"""Retry policies: the default schedule's span, and which policy a task's retries follow."""

from __future__ import annotations

import pytest

from scheduler_daemon.domain.backoff import Backoff
from scheduler_daemon.domain.models import Outcome, TaskStatus
from scheduler_daemon.engine.executor import decide
from scheduler_daemon.engine.retries import RetryPolicies
from scheduler_daemon.settings import QueueLimits, QueueRetry, RetrySettings, Settings
from tests.fakes import claimed_task

HOUR = 3600.0


def _default_schedule() -> list[tuple[float, float]]:
    r = RetrySettings()
    return Backoff(r.base_s, r.cap_s, r.jitter).schedule(r.max_attempts)


def test_default_retries_outlast_an_hour_long_outage_early() -> None:
    # Whatever the jitter draws, the retries reach past the first hour of an outage, and do so
    # well before the task runs out of attempts.
    schedule = _default_schedule()
    reached = [sum(floor for floor, _ in schedule[:n]) for n in range(1, len(schedule) + 1)]
    first_past_hour = next(n for n, total in enumerate(reached, start=1) if total >= HOUR)
    assert first_past_hour <= 10
    assert len(schedule) - first_past_hour >= 10


def test_default_retries_go_on_for_about_a_day() -> None:
    schedule = _default_schedule()
    shortest = sum(floor for floor, _ in schedule)
    longest = sum(ceiling for _, ceiling in schedule)
    assert 18 * HOUR <= shortest <= longest <= 26 * HOUR
    # No single wait is longer than the cap (two hours), so a recovered receiver is not left
    # waiting for half a day.
    assert max(ceiling for _, ceiling in schedule) <= 2 * HOUR


def _settings(**queues: QueueLimits) -> Settings:
    return Settings(retry=RetrySettings(base_s=1.0, cap_s=100.0, jitter=False), queues=queues)


def test_a_task_follows_its_own_delays_then_its_queue_then_the_default() -> None:
    settings = _settings(mail=QueueLimits(retry=QueueRetry(base_s=5.0, cap_s=50.0)))
    policies = RetryPolicies(lambda: settings)
    default = claimed_task(queue="other")
    assert policies.backoff(default) == Backoff(1.0, 100.0, jitter=False)
    in_mail = claimed_task(queue="mail")
    assert policies.backoff(in_mail) == Backoff(5.0, 50.0, jitter=False)
    own = claimed_task(queue="mail", retry_base_s=2.0)
    assert policies.backoff(own) == Backoff(2.0, 50.0, jitter=False)
    both = claimed_task(queue="mail", retry_base_s=2.0, retry_cap_s=7.0)
    assert policies.backoff(both) == Backoff(2.0, 7.0, jitter=False)


def test_policies_follow_reloaded_settings() -> None:
    current = [_settings()]
    policies = RetryPolicies(lambda: current[0])
    task = claimed_task(queue="mail")
    assert policies.backoff(task).base_s == 1.0
    current[0] = _settings(mail=QueueLimits(retry=QueueRetry(base_s=9.0)))
    assert policies.backoff(task) == Backoff(9.0, 100.0, jitter=False)


def test_new_tasks_get_their_queue_max_attempts_else_the_default() -> None:
    settings = _settings(mail=QueueLimits(retry=QueueRetry(max_attempts=4)))
    assert settings.max_attempts("mail") == 4
    assert settings.max_attempts("other") == settings.retry.max_attempts


@pytest.mark.parametrize(("asked", "expected"), [(30.0, 30.0), (3600.0, 3600.0), (0.5, 8.0)])
def test_a_requested_retry_delay_is_the_earliest_the_next_attempt_comes(
    asked: float, expected: float
) -> None:
    # The backoff's delay after attempt 4 is 8 s (no jitter): a shorter request waits for it.
    task = claimed_task(attempt=4, max_attempts=5)
    backoff = Backoff(1.0, 100.0, jitter=False)
    status, delay = decide(task, Outcome.FAILED, True, backoff, retry_after_s=asked)
    assert (status, delay) == (TaskStatus.SCHEDULED, expected)
