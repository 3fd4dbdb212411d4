"""The contract suite runs every test against the in-memory store and against PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Protocol

import pytest

from scheduler_daemon.domain.models import Attempt, NewTask, Task
from scheduler_daemon.store.base import EngineStore
from tests.memory_store import MemoryStore


class ContractStore(EngineStore, Protocol):
    """The engine's store port, plus the reads the tests look through."""

    async def create_task(self, task: NewTask) -> tuple[Task, bool]: ...

    async def get_task(self, task_id: uuid.UUID) -> Task | None: ...

    async def list_attempts(self, task_id: uuid.UUID) -> list[Attempt]: ...


@pytest.fixture(params=["memory", "postgres"])
def engine_store(request: pytest.FixtureRequest) -> ContractStore:
    if request.param == "memory":
        return MemoryStore()
    store: ContractStore = request.getfixturevalue("store")  # a fresh database of its own
    return store
