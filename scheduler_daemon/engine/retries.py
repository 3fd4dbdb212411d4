"""Retry policies: the backoff of each task's retries, and the attempts a new task gets.

A task's own delays (``retry.base_s`` / ``retry.cap_s`` of its request, stored with it) come
first, then its queue's (``[queues.NAME.retry]``), then ``[retry]``. The delays are resolved
when an attempt fails, from the settings of that moment (a reload applies to the next retry);
``max_attempts`` is resolved when the task is created and stored with it.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler_daemon.domain.backoff import Backoff
from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.settings import Settings


class RetryPolicies:
    def __init__(self, settings: Callable[[], Settings]) -> None:
        self._settings = settings

    def backoff(self, task: ClaimedTask) -> Backoff:
        s = self._settings()
        base, cap = s.retry.base_s, s.retry.cap_s
        queue = s.queues.get(task.queue)
        if queue is not None:
            base = queue.retry.base_s or base
            cap = queue.retry.cap_s or cap
        return Backoff(task.retry_base_s or base, task.retry_cap_s or cap, s.retry.jitter)
