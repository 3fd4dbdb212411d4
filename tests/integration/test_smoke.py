from __future__ import annotations

from scheduler_daemon.domain.models import NewTask, TaskStatus
from scheduler_daemon.store.postgres import PostgresStore


async def test_create_and_claim(store: PostgresStore) -> None:
    task, created = await store.create_task(NewTask(action="noop", payload={}))
    assert created
    assert task.status is TaskStatus.SCHEDULED
    claimed = await store.claim("me", 10, 30.0)
    assert [c.id for c in claimed] == [task.id]
