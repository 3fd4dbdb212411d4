"""The per-minute activity ring on a fake clock: minute rollover, the 60-minute window, bounded
lag samples and their percentiles, and how ``Metrics`` feeds it."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_daemon.domain.models import AttemptResult, ClaimedTask, Outcome, TaskStatus
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.stats import Activity, MinuteActivity, percentile
from tests.fakes import FakeClock

START = datetime(2025, 3, 1, 12, 0, 20, tzinfo=UTC)  # 20 s into the minute


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=START)


def _minute(clock: FakeClock) -> datetime:
    return clock.now().replace(second=0, microsecond=0)


def _last(activity: Activity) -> MinuteActivity:
    return activity.minutes()[-1]


def test_an_empty_window_is_sixty_zero_minutes_ending_now(clock: FakeClock) -> None:
    minutes = Activity(clock.now).minutes()
    assert len(minutes) == 60
    assert minutes[-1].start == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert minutes[0].start == datetime(2025, 3, 1, 11, 1, tzinfo=UTC)
    assert [m.start for m in minutes] == sorted(m.start for m in minutes)
    assert all(b.start - a.start == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
    assert all(
        (m.completed, m.failed, m.started, m.lag_p50_s, m.lag_p99_s) == (0, 0, 0, None, None)
        for m in minutes
    )
    assert all(m.start.tzinfo is UTC for m in minutes)


def test_counts_add_up_within_a_minute_and_roll_over_to_the_next(clock: FakeClock) -> None:
    activity = Activity(clock.now)
    activity.finished(completed=3)
    activity.finished(completed=1, failed=2)
    clock.jump(39.9)  # 12:00:59.9: still the same minute
    activity.finished(failed=1)
    assert (_last(activity).completed, _last(activity).failed) == (4, 3)

    clock.jump(0.1)  # 12:01:00: a new minute
    activity.finished(completed=5)
    minutes = activity.minutes()
    assert minutes[-1].start == datetime(2025, 3, 1, 12, 1, tzinfo=UTC)
    assert (minutes[-1].completed, minutes[-1].failed) == (5, 0)
    assert minutes[-2].start == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert (minutes[-2].completed, minutes[-2].failed) == (4, 3)


def test_a_minute_leaves_the_window_after_an_hour(clock: FakeClock) -> None:
    activity = Activity(clock.now)
    activity.finished(completed=7)
    activity.started([0.5])
    clock.jump(59 * 60)  # 12:59:20: 12:00 is the oldest minute shown
    oldest = activity.minutes()[0]
    assert oldest.start == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert (oldest.completed, oldest.lag_p50_s) == (7, 0.5)

    clock.jump(60)  # 13:00:20: 12:00 is gone, and 13:00 reuses its slot
    minutes = activity.minutes()
    assert minutes[0].start == datetime(2025, 3, 1, 12, 1, tzinfo=UTC)
    assert sum(m.completed for m in minutes) == 0
    activity.finished(completed=1)
    assert _last(activity).completed == 1  # a fresh minute, not 7 + 1
    assert _last(activity).lag_p50_s is None


def test_a_long_idle_gap_shows_only_zeros(clock: FakeClock) -> None:
    activity = Activity(clock.now)
    activity.finished(completed=2, failed=1)
    clock.jump(3 * 3600 + 17)
    assert all((m.completed, m.failed) == (0, 0) for m in activity.minutes())
    assert _last(activity).start == _minute(clock)


def test_lag_percentiles_per_minute(clock: FakeClock) -> None:
    activity = Activity(clock.now)
    activity.started(float(v) for v in range(100, 0, -1))  # 1..100, in any order
    now = _last(activity)
    assert (now.lag_p50_s, now.lag_p99_s) == (50.0, 99.0)

    clock.jump(60)
    activity.started([0.25])
    minutes = activity.minutes()
    assert (minutes[-1].lag_p50_s, minutes[-1].lag_p99_s) == (0.25, 0.25)
    assert (minutes[-2].lag_p50_s, minutes[-2].lag_p99_s) == (50.0, 99.0)  # kept apart


def test_starts_without_a_known_lag_are_counted_not_sampled(clock: FakeClock) -> None:
    activity = Activity(clock.now)
    activity.started([])
    activity.started([None, None])
    activity.finished(completed=1)
    now = _last(activity)
    assert (now.started, now.completed, now.lag_p50_s, now.lag_p99_s) == (2, 1, None, None)
    assert activity.samples_held() == 0


def test_samples_stay_bounded_and_uniform_at_any_rate(clock: FakeClock) -> None:
    activity = Activity(clock.now, max_samples=1024, rng=random.Random(7))
    for _ in range(20):  # 200,000 claims in one minute, in batches
        activity.started(float(v) for v in range(10_000))
    assert activity.samples_held() == 1024
    now = _last(activity)
    assert now.started == 200_000
    assert now.lag_p50_s is not None
    assert now.lag_p99_s is not None
    # A uniform sample of 0..9999: the median near 5000, p99 near 9900. Keeping only the
    # first 1024 lags would give 511 and 1013.
    assert 4500 <= now.lag_p50_s <= 5500
    assert 9700 <= now.lag_p99_s <= 9999
    for _ in range(90):  # every minute of the window full: bounded by 60 * 1024
        clock.jump(60)
        activity.started(float(v) for v in range(2000))
    assert activity.samples_held() == 60 * 1024


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1.0], 50) == 1.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 99) == 2.0
    assert percentile([float(v) for v in range(1, 11)], 99) == 10.0
    assert percentile([float(v) for v in range(1, 11)], 50) == 5.0


def test_bad_sizes_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Activity(clock.now, minutes=0)
    with pytest.raises(ValueError, match="at least 1"):
        Activity(clock.now, max_samples=0)


def _claimed(run_at: datetime, claimed_at: datetime | None) -> ClaimedTask:
    return ClaimedTask(
        id=uuid.uuid4(),
        action="noop",
        payload={},
        attempt=1,
        max_attempts=3,
        timeout_s=30.0,
        run_at=run_at,
        claimed_at=claimed_at,
    )


def _result(outcome: Outcome, next_status: TaskStatus) -> AttemptResult:
    return AttemptResult(uuid.uuid4(), 1, outcome, next_status, action="noop")


def test_metrics_feed_the_activity(clock: FakeClock) -> None:
    metrics = Metrics(version="t", now=clock.now)
    due = datetime(2025, 3, 1, 11, 59, tzinfo=UTC)
    metrics.claimed(
        [
            _claimed(due, due + timedelta(seconds=2)),
            _claimed(due, due + timedelta(seconds=4)),
            _claimed(due, due - timedelta(seconds=1)),  # claimed "before" due: lag 0
            _claimed(due, None),  # no claim time known: counted, no lag
        ]
    )
    metrics.finished(
        [
            _result(Outcome.SUCCEEDED, TaskStatus.COMPLETED),
            _result(Outcome.SUCCEEDED, TaskStatus.COMPLETED),
            _result(Outcome.FAILED, TaskStatus.SCHEDULED),  # a retry follows: still a failure
            _result(Outcome.TIMED_OUT, TaskStatus.FAILED),
        ]
    )
    metrics.lost("noop", "default")
    now = _last(metrics.activity)
    assert (now.completed, now.failed, now.started) == (2, 3, 4)
    assert (now.lag_p50_s, now.lag_p99_s) == (2.0, 4.0)
    assert metrics.activity.samples_held() == 3
