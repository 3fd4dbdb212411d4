"""The daemon's drain, walked with fakes: its steps in their order, with and without the SQS
backend, and the release still reached when the attempts outlast the grace."""

from __future__ import annotations

import asyncio
import uuid

from scheduler_daemon.app import DrainParts, drain_steps
from scheduler_daemon.domain.models import AttemptResult
from scheduler_daemon.engine.lifecycle import drain


class Journal:
    """Every fake writes what was done to it here, in order."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.idle = asyncio.Event()
        self.idle.set()

    async def stop(self, name: str) -> None:  # the supervisor
        self.done.append(f"stop {name}")

    @property
    def in_use(self) -> int:
        return 0 if self.idle.is_set() else 1

    async def wait_idle(self) -> None:
        await self.idle.wait()
        self.done.append("idle")

    async def flush(self) -> None:
        self.done.append("flush")

    async def drain(self, timeout_s: float) -> bool:
        self.done.append("last alerts")
        return True

    async def drained(self, released: list[uuid.UUID], timeout_s: float) -> None:
        self.done.append(f"hand back {len(released)}")


class Keeper:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def stop(self) -> None:
        self.journal.done.append("stop heartbeat")


async def _walk(journal: Journal, *, aws: bool, grace_s: float = 30.0) -> list[str]:
    released: list[uuid.UUID] = []

    async def release() -> None:
        released.append(uuid.uuid4())
        journal.done.append("release")

    parts = DrainParts(
        journal,
        journal,
        journal,
        asyncio.Queue[AttemptResult](),
        Keeper(journal),
        journal,
        journal if aws else None,
    )
    await drain(drain_steps(parts, lambda: grace_s, release, released))
    return journal.done


async def test_the_drain_stops_claiming_then_records_then_releases() -> None:
    assert await _walk(Journal(), aws=False) == [
        "stop expander",
        "stop discovery",
        "idle",
        "stop executor",
        "flush",
        "stop completer",
        "release",
        "stop heartbeat",
        "last alerts",
        "stop alerter",
    ]


async def test_with_the_sqs_backend_the_consumer_stops_first_and_gets_the_released_back() -> None:
    assert await _walk(Journal(), aws=True) == [
        "stop expander",
        "stop consumer",
        "idle",
        "stop executor",
        "flush",
        "stop completer",
        "release",
        "stop heartbeat",
        "hand back 1",
        "stop sqs_messages",
        "stop publisher",
        "last alerts",
        "stop alerter",
    ]


async def test_attempts_outlasting_the_grace_are_still_recorded_and_released() -> None:
    journal = Journal()
    journal.idle.clear()  # an attempt that never ends
    done = await _walk(journal, aws=False, grace_s=0.0)
    assert "idle" not in done
    assert done[done.index("stop discovery") + 1 :] == [
        "stop executor",
        "flush",
        "stop completer",
        "release",
        "stop heartbeat",
        "last alerts",
        "stop alerter",
    ]
