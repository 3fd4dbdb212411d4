"""plan_expansion: the horizon, misfire and overlap policies, jitter and chaining (no I/O)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest

from scheduler_daemon.domain.recurrence import Recurrence
from scheduler_daemon.domain.schedules import (
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    TaskTemplate,
    plan_expansion,
    recurrence_from_json,
    rule_to_json,
    template_from_json,
    template_to_json,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def schedule(
    rule: Recurrence,
    next_run_at: datetime | None,
    *,
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE,
    overlap: OverlapPolicy = OverlapPolicy.ALLOW,
    max_catchup: int = 100,
    jitter_s: float = 0.0,
) -> Schedule:
    return Schedule(
        id=uuid.uuid4(),
        name="s",
        recurrence=rule,
        template=TaskTemplate("noop", {"k": 1}, queue="q", priority=3),
        misfire_policy=misfire,
        overlap_policy=overlap,
        max_catchup=max_catchup,
        jitter_s=jitter_s,
        next_run_at=next_run_at,
        last_task_id=uuid.uuid4(),
    )


EVERY_MINUTE = Recurrence(cron="* * * * *")


def _at(value: datetime | None) -> datetime:
    assert value is not None
    return value


def test_allow_makes_every_occurrence_within_the_horizon() -> None:
    s = schedule(EVERY_MINUTE, NOW)
    plan = plan_expansion(s, now=NOW, horizon_s=150)
    assert [t.scheduled_for for t in plan.tasks] == [
        NOW,
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=2),
    ]
    assert all(t.run_at == t.scheduled_for for t in plan.tasks)
    assert plan.next_run_at == NOW + timedelta(minutes=3)
    assert plan.expand_at == NOW + timedelta(minutes=3) - timedelta(seconds=150)
    task = plan.tasks[0]
    assert (task.action, task.payload, task.queue, task.priority) == ("noop", {"k": 1}, "q", 3)
    assert task.schedule_id == s.id
    # Each occurrence points at the one before; the first at the schedule's last task.
    assert plan.tasks[0].parent_task_id == s.last_task_id
    assert plan.tasks[1].parent_task_id == plan.tasks[0].id
    assert plan.last_task_id == plan.tasks[-1].id


def test_nothing_due_yet_makes_nothing() -> None:
    later = NOW + timedelta(hours=1)
    plan = plan_expansion(schedule(EVERY_MINUTE, later), now=NOW, horizon_s=60)
    assert plan.tasks == []
    assert plan.next_run_at == later


@pytest.mark.parametrize(
    ("policy", "caught_up"),
    [(MisfirePolicy.SKIP, 0), (MisfirePolicy.RUN_ONCE, 1), (MisfirePolicy.RUN_ALL, 9)],
)
def test_misfire_policies(policy: MisfirePolicy, caught_up: int) -> None:
    # The daemon was down for ten minutes: nine occurrences are more than 60 s late (the one a
    # minute ago is just within misfire_grace_s).
    s = schedule(EVERY_MINUTE, NOW - timedelta(minutes=10), misfire=policy)
    plan = plan_expansion(s, now=NOW, horizon_s=30)
    late = [t for t in plan.tasks if _at(t.scheduled_for) < NOW - timedelta(seconds=60)]
    assert len(late) == caught_up
    assert plan.missed == 9
    assert all(t.run_at == NOW for t in late)  # catch-up runs are due now
    if policy is MisfirePolicy.RUN_ONCE:
        assert late[0].scheduled_for == NOW - timedelta(minutes=2)  # the newest missed one
    # Within the grace period an occurrence is on time, not missed.
    on_time = [t.scheduled_for for t in plan.tasks if t not in late]
    assert on_time == [NOW - timedelta(minutes=1), NOW]


def test_run_all_is_capped_by_max_catchup_keeping_the_newest() -> None:
    s = schedule(
        EVERY_MINUTE, NOW - timedelta(minutes=30), misfire=MisfirePolicy.RUN_ALL, max_catchup=3
    )
    plan = plan_expansion(s, now=NOW, horizon_s=0)
    late = sorted(
        _at(t.scheduled_for)
        for t in plan.tasks
        if t.run_at == NOW and _at(t.scheduled_for) < NOW - timedelta(seconds=60)
    )
    assert late == [NOW - timedelta(minutes=m) for m in (4, 3, 2)]
    assert plan.skipped == 29 - 3


def test_long_outage_is_not_walked_one_by_one() -> None:
    every_second = Recurrence(interval_s=1, anchor=NOW - timedelta(days=30))
    s = schedule(every_second, NOW - timedelta(days=30), misfire=MisfirePolicy.RUN_ONCE)
    plan = plan_expansion(s, now=NOW, horizon_s=1)
    assert plan.tasks  # the catch-up run and the on-time ones
    assert plan.next_run_at is not None
    assert plan.next_run_at > NOW


@pytest.mark.parametrize("overlap", [OverlapPolicy.SKIP, OverlapPolicy.CANCEL_PREVIOUS])
def test_overlap_policies_make_one_occurrence_at_its_time(overlap: OverlapPolicy) -> None:
    s = schedule(EVERY_MINUTE, NOW - timedelta(minutes=1), overlap=overlap)
    idle = plan_expansion(s, now=NOW, horizon_s=300, busy=False)
    # Two are due (a minute ago, and now): the newest stands for both, none made ahead.
    assert [t.scheduled_for for t in idle.tasks] == [NOW]
    assert idle.skipped == 1
    assert idle.expand_at == idle.next_run_at  # looked at exactly when due, not ahead
    assert not idle.cancel_previous
    busy = plan_expansion(s, now=NOW, horizon_s=300, busy=True)
    if overlap is OverlapPolicy.SKIP:
        assert busy.tasks == []
        assert busy.skipped == 2
    else:
        assert len(busy.tasks) == 1
        assert busy.cancel_previous


def test_jitter_delays_within_bounds() -> None:
    s = schedule(EVERY_MINUTE, NOW, jitter_s=20)
    plan = plan_expansion(s, now=NOW, horizon_s=600, rng=random.Random(7))
    delays = [(_at(t.run_at) - _at(t.scheduled_for)).total_seconds() for t in plan.tasks]
    assert all(0 <= d <= 20 for d in delays)
    assert len(set(delays)) > 1


def test_ended_rule_has_no_next_run() -> None:
    rule = Recurrence(cron="* * * * *", end_at=NOW + timedelta(minutes=1))
    plan = plan_expansion(schedule(rule, NOW), now=NOW, horizon_s=600)
    assert [t.scheduled_for for t in plan.tasks] == [NOW, NOW + timedelta(minutes=1)]
    assert plan.next_run_at is None
    assert plan.expand_at is None


def test_json_round_trip() -> None:
    rule = Recurrence(
        preset="weekly",
        weekday=0,
        at=time(9, 0),
        timezone="Europe/Oslo",
        start_at=NOW,
    )
    back = recurrence_from_json(rule_to_json(rule), rule.timezone, rule.start_at, None, {})
    assert back == rule
    template = TaskTemplate("webhook", {"url": "https://x"}, max_attempts=5)
    assert template_from_json(template_to_json(template)) == template
