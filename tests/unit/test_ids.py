"""Task ids are UUIDv7: version and variant right, ordered by creation time, random within it."""

from __future__ import annotations

import uuid

from scheduler_daemon.domain.ids import uuid7
from scheduler_daemon.domain.models import NewTask


def test_an_id_is_a_version_7_uuid_carrying_its_millisecond() -> None:
    u = uuid7(unix_ms=1_767_225_600_123)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == 1_767_225_600_123


def test_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    earlier = [uuid7(unix_ms=1_000 + i) for i in range(200)]
    assert sorted(earlier) == earlier
    assert len({uuid7(unix_ms=5) for _ in range(1000)}) == 1000  # random within a millisecond


def test_new_tasks_get_time_ordered_ids() -> None:
    first, second = NewTask(action="noop", payload={}), NewTask(action="noop", payload={})
    assert first.id.version == 7
    assert first.id.int >> 80 <= second.id.int >> 80
