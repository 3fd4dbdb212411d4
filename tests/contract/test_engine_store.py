"""What the engine relies on of a store, held by the in-memory store and by PostgreSQL alike:
claim order and limits, exclusions, fencing by (owner, attempt), retries, releases, rescues."""

from __future__ import annotations

import uuid
from datetime import timedelta

from scheduler_daemon.domain.models import (
    AttemptResult,
    ClaimedTask,
    NewTask,
    Outcome,
    TaskStatus,
)
from tests.contract.conftest import ContractStore

LATER_S = 600.0


def _new(
    priority: int = 0, queue: str = "default", delay_s: float | None = None, max_attempts: int = 3
) -> NewTask:
    return NewTask(
        action="log",
        payload={},
        priority=priority,
        queue=queue,
        delay_s=delay_s,
        max_attempts=max_attempts,
    )


def _succeeded(task: ClaimedTask) -> AttemptResult:
    return AttemptResult(task.id, task.attempt, Outcome.SUCCEEDED, TaskStatus.COMPLETED)


async def _status(store: ContractStore, task_id: uuid.UUID) -> TaskStatus:
    task = await store.get_task(task_id)
    assert task is not None
    return task.status


async def test_claims_take_due_tasks_by_priority_then_run_at(engine_store: ContractStore) -> None:
    low, _ = await engine_store.create_task(_new(priority=0))
    high, _ = await engine_store.create_task(_new(priority=5))
    await engine_store.create_task(_new(priority=9, delay_s=LATER_S))  # not due
    low2, _ = await engine_store.create_task(_new(priority=0))
    claimed = await engine_store.claim("a", 10, 30.0)
    assert [t.id for t in claimed] == [high.id, low.id, low2.id]
    assert all(t.attempt == 1 for t in claimed)
    running = await engine_store.get_task(high.id)
    assert running is not None
    assert running.status is TaskStatus.RUNNING
    assert running.lease_owner == "a"
    assert running.lease_expires_at is not None


async def test_a_claim_takes_at_most_its_limit_and_never_a_held_task(
    engine_store: ContractStore,
) -> None:
    for _ in range(5):
        await engine_store.create_task(_new())
    first = await engine_store.claim("a", 3, 30.0)
    second = await engine_store.claim("b", 10, 30.0)
    assert len(first) == 3
    assert len(second) == 2
    assert not {t.id for t in first} & {t.id for t in second}
    assert await engine_store.claim("c", 10, 30.0) == []


async def test_excluded_queues_are_left_and_a_queue_claim_takes_only_its_queue(
    engine_store: ContractStore,
) -> None:
    mail, _ = await engine_store.create_task(_new(queue="mail"))
    other, _ = await engine_store.create_task(_new(queue="other"))
    assert [t.id for t in await engine_store.claim("a", 10, 30.0, exclude=["mail"])] == [other.id]
    assert [t.id for t in await engine_store.claim_queue("a", "mail", 10, 30.0, None)] == [mail.id]


async def test_a_global_queue_limit_counts_running_tasks(engine_store: ContractStore) -> None:
    for _ in range(3):
        await engine_store.create_task(_new(queue="mail"))
    assert len(await engine_store.claim_queue("a", "mail", 10, 30.0, 2)) == 2
    assert await engine_store.claim_queue("b", "mail", 10, 30.0, 2) == []


async def test_next_due_in_says_how_long_until_the_earliest_task(
    engine_store: ContractStore,
) -> None:
    assert await engine_store.next_due_in() is None
    await engine_store.create_task(_new(delay_s=LATER_S))
    wait = await engine_store.next_due_in()
    assert wait is not None
    assert 0 < wait <= LATER_S
    await engine_store.create_task(_new())
    now = await engine_store.next_due_in()
    assert now is not None
    assert now <= 0


async def test_a_completion_records_the_attempt_once(engine_store: ContractStore) -> None:
    created, _ = await engine_store.create_task(_new())
    [task] = await engine_store.claim("a", 1, 30.0)
    assert await engine_store.complete("a", [_succeeded(task)]) == {created.id}
    assert await engine_store.complete("a", [_succeeded(task)]) == set()  # already recorded
    done = await engine_store.get_task(created.id)
    assert done is not None
    assert done.status is TaskStatus.COMPLETED
    assert done.finished_at is not None
    assert done.lease_owner is None
    attempts = await engine_store.list_attempts(created.id)
    assert [(a.number, a.outcome, a.worker) for a in attempts] == [(1, Outcome.SUCCEEDED, "a")]


async def test_a_completion_by_another_owner_or_attempt_is_fenced_out(
    engine_store: ContractStore,
) -> None:
    created, _ = await engine_store.create_task(_new())
    [task] = await engine_store.claim("a", 1, 30.0)
    assert await engine_store.complete("b", [_succeeded(task)]) == set()
    stale = AttemptResult(task.id, task.attempt + 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED)
    assert await engine_store.complete("a", [stale]) == set()
    assert await _status(engine_store, created.id) is TaskStatus.RUNNING
    assert await engine_store.list_attempts(created.id) == []


async def test_a_failed_attempt_with_a_retry_waits_out_its_delay(
    engine_store: ContractStore,
) -> None:
    created, _ = await engine_store.create_task(_new())
    [task] = await engine_store.claim("a", 1, 30.0)
    retry = AttemptResult(
        task.id, 1, Outcome.FAILED, TaskStatus.SCHEDULED, retry_in_s=LATER_S, error="boom"
    )
    assert await engine_store.complete("a", [retry]) == {created.id}
    again = await engine_store.get_task(created.id)
    assert again is not None
    assert (again.status, again.attempts, again.last_error) == (TaskStatus.SCHEDULED, 1, "boom")
    assert await engine_store.claim("a", 1, 30.0) == []
    [attempt] = await engine_store.list_attempts(created.id)
    assert (attempt.outcome, attempt.error) == (Outcome.FAILED, "boom")


async def test_renewals_keep_only_leases_the_owner_holds_for_that_attempt(
    engine_store: ContractStore,
) -> None:
    await engine_store.create_task(_new())
    await engine_store.create_task(_new())
    [mine] = await engine_store.claim("a", 1, 30.0)
    [theirs] = await engine_store.claim("b", 1, 30.0)
    held = [(mine.id, mine.attempt), (theirs.id, theirs.attempt), (mine.id, mine.attempt + 1)]
    before = await engine_store.get_task(mine.id)
    assert await engine_store.renew_leases("a", held, 600.0) == {(mine.id, mine.attempt)}
    after = await engine_store.get_task(mine.id)
    assert before is not None
    assert after is not None
    assert before.lease_expires_at is not None
    assert after.lease_expires_at is not None
    assert after.lease_expires_at - before.lease_expires_at > timedelta(seconds=500)


async def test_a_release_puts_the_task_back_without_counting_the_attempt(
    engine_store: ContractStore,
) -> None:
    created, _ = await engine_store.create_task(_new())
    [task] = await engine_store.claim("a", 1, 30.0)
    assert await engine_store.release("b", [(task.id, task.attempt)]) == set()
    assert await engine_store.release("a", [(task.id, task.attempt)]) == {created.id}
    back = await engine_store.get_task(created.id)
    assert back is not None
    assert (back.status, back.attempts) == (TaskStatus.SCHEDULED, 0)
    assert await engine_store.list_attempts(created.id) == []
    [again] = await engine_store.claim("b", 1, 30.0)
    assert again.attempt == 1


async def test_an_expired_lease_is_rescued_as_a_lost_attempt(engine_store: ContractStore) -> None:
    created, _ = await engine_store.create_task(_new(max_attempts=2))
    await engine_store.create_task(_new())
    [gone] = await engine_store.claim("a", 1, -1.0)  # a lease that is already over
    await engine_store.claim("b", 1, 30.0)  # a live one, left alone
    [rescued] = await engine_store.rescue_expired(10)
    assert (rescued.task_id, rescued.status, rescued.attempt, rescued.owner) == (
        created.id,
        TaskStatus.SCHEDULED,
        1,
        "a",
    )
    [lost] = await engine_store.list_attempts(created.id)
    assert (lost.number, lost.outcome) == (1, Outcome.LOST)
    assert await engine_store.complete("a", [_succeeded(gone)]) == set()  # fenced out
    [second] = await engine_store.claim("c", 1, -1.0)
    assert second.attempt == 2
    [final] = await engine_store.rescue_expired(10)
    assert final.status is TaskStatus.FAILED  # its attempts are used up
    failed = await engine_store.get_task(created.id)
    assert failed is not None
    assert failed.status is TaskStatus.FAILED
    assert failed.last_error is not None
    assert "lease expired" in failed.last_error
