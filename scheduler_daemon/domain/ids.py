"""Task ids: UUIDv7 (RFC 9562), time-ordered.

A task's row is reached by its id at every step of its life (the claim, the completion, the
attempt row keyed by task and number). Random (v4) ids put each new task's index entries on a
random leaf of ``tasks_pkey`` and ``task_attempts_pkey``: once those indexes outgrow memory,
every step of every task reads and dirties a page of its own, and each page first dirtied after
a checkpoint is written to the WAL whole. Ids that start with their creation time keep the
entries of the tasks in flight together on the indexes' right edge, however long the history.
"""

from __future__ import annotations

import os
import time
import uuid

_RAND_A_BITS = 12
_RAND_B_BITS = 62


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix time in milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> (80 - _RAND_A_BITS)
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
