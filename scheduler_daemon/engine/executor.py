"""The executor pool: N workers run claimed tasks, each attempt under its own timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from scheduler_daemon.actions.base import (
    ActionContext,
    ActionRegistry,
    ActionResult,
    Fail,
    Retry,
    TransactionFactory,
    UnknownAction,
)
from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.backoff import Backoff
from scheduler_daemon.domain.models import AttemptResult, ClaimedTask, Outcome, TaskStatus
from scheduler_daemon.engine.inflight import Held, InFlight
from scheduler_daemon.engine.watchdog import attempt_task_name
from scheduler_daemon.logs import enabled, get_logger

ERROR_LIMIT = 8192
OUTPUT_LIMIT = 8192


def storable_text(text: str | None, limit: int) -> str | None:
    """Text PostgreSQL can store (no NUL characters), cut to ``limit`` characters."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\\0")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decide(
    task: ClaimedTask,
    outcome: Outcome,
    retryable: bool,
    backoff: Backoff,
    retry_after_s: float | None = None,
) -> tuple[TaskStatus, float | None]:
    """The task's next status after an attempt, and the delay before a retry: the backoff's,
    or later when the action asked for a later time (a webhook's Retry-After, a handler's
    ``Retry(after=...)``; each capped where it is read). A requested delay is when the next
    attempt may come at the earliest: a target that keeps asking for one second does not use up
    the attempts meant to outlast its outage."""
    if outcome is Outcome.SUCCEEDED:
        return TaskStatus.COMPLETED, None
    if retryable and task.series_attempt < task.max_attempts:
        delay = backoff.delay(task.series_attempt)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return TaskStatus.SCHEDULED, delay
    return TaskStatus.FAILED, None


def admit(
    claimed: Sequence[ClaimedTask],
    inflight: InFlight,
    ready: asyncio.Queue[ClaimedTask],
    log: Any,  # a structlog logger
    *,
    reserved: bool = False,
) -> None:
    """Hand claimed tasks to the executor: admitted to the in-flight ledger (a slot each, or
    with ``reserved`` the slots reserved for them; counted in their queue; their leases kept
    by the heartbeat), queued for a worker."""
    inflight.admit(claimed, reserved=reserved)
    debug = enabled("debug")  # once per batch: a filtered-out call still costs a logger
    for task in claimed:
        ready.put_nowait(task)
        if debug:
            log.debug("task_claimed", task_id=str(task.id), attempt=task.attempt)


class _TaskLog:
    """``ctx.log``: the executor's logger bound to the attempt, bound when first used (most
    handlers never log, and binding costs more than the rest of a no-op attempt)."""

    __slots__ = ("_base", "_bound", "_task")

    def __init__(self, base: Any, task: ClaimedTask) -> None:
        self._base = base
        self._task = task
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._bound is None:
            t = self._task
            self._bound = self._base.bind(task_id=str(t.id), attempt=t.attempt, action=t.action)
        return getattr(self._bound, name)


class Executor:
    def __init__(
        self,
        actions: ActionRegistry,
        ready: asyncio.Queue[ClaimedTask],
        results: asyncio.Queue[AttemptResult],
        inflight: InFlight,
        clock: Clock,
        backoff: Callable[[ClaimedTask], Backoff],
        transaction: TransactionFactory,
    ) -> None:
        self._transaction = transaction
        self._actions = actions
        self._ready = ready
        self._results = results
        self._inflight = inflight
        self._clock = clock
        self._backoff = backoff
        self._log = get_logger("executor")
        self._group: asyncio.TaskGroup | None = None
        self._workers = 0

    async def run(self) -> None:
        """Run workers for every slot; the pool grows and shrinks with the ledger's capacity."""
        self._workers = 0
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self.resize()
        finally:
            self._group = None

    def resize(self) -> None:
        """Start workers up to the ledger's capacity at once; extra workers stop after their
        current task (``executor.concurrency`` lowered by a reload)."""
        group = self._group
        if group is None:
            return
        while self._workers < self._inflight.capacity:
            self._workers += 1
            group.create_task(self._worker())

    @property
    def workers(self) -> int:
        return self._workers

    async def _worker(self) -> None:
        while True:
            if self._workers > self._inflight.capacity:
                self._workers -= 1
                return
            task = await self._ready.get()
            try:
                result = await self._attempt(task)
                if result is not None:
                    self._results.put_nowait(result)
            finally:
                self._inflight.finish(task)

    async def _attempt(self, task: ClaimedTask) -> AttemptResult | None:
        """Run one attempt; None when the lease was lost meanwhile (nothing is recorded).

        The attempt runs as a task of its own, so that a lost lease (``InFlight.abort``)
        or the timeout can cancel it without cancelling this worker. The timeout is a timer
        on the loop that cancels the attempt's task, not an ``asyncio.timeout`` block: the same
        effect for the handler (a ``CancelledError`` where it waits), at a third of the cost.
        """
        # Named after the attempt: a report of a blocked event loop names what holds it.
        running = asyncio.create_task(
            self._execute(task), name=attempt_task_name(task.id, task.attempt, task.action)
        )
        held = self._inflight.attach(task.id, running)
        if held is None:  # aborted before it started
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            return None
        timer = asyncio.get_running_loop().call_later(task.timeout_s, _expire, held)
        try:
            started = self._clock.monotonic()
            try:
                outcome, action_result = await running
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the worker itself is stopping: leave the task held for release
                if not held.timed_out or held.lost:
                    self._log.warning(
                        "attempt_abandoned",
                        task_id=str(task.id),
                        attempt=task.attempt,
                        reason="lease lost",
                    )
                    return None
                error = f"timed out after {task.timeout_s:g}s"
                outcome, action_result = (
                    Outcome.TIMED_OUT,
                    ActionResult.failure(error, retryable=True),
                )
            duration_ms = (self._clock.monotonic() - started) * 1000.0
        finally:
            timer.cancel()
            self._inflight.detach(task.id)
        return self._result(task, outcome, action_result, duration_ms)

    def _result(
        self, task: ClaimedTask, outcome: Outcome, action_result: ActionResult, duration_ms: float
    ) -> AttemptResult:
        """The attempt's result for the completer, with what happens to the task next."""
        if outcome is Outcome.SUCCEEDED:  # no retry to plan
            next_status, retry_in = TaskStatus.COMPLETED, None
        else:
            next_status, retry_in = decide(
                task,
                outcome,
                action_result.retryable,
                self._backoff(task),
                action_result.retry_after_s,
            )
        return AttemptResult(
            task_id=task.id,
            attempt=task.attempt,
            outcome=outcome,
            next_status=next_status,
            retry_in_s=retry_in,
            error=storable_text(action_result.error, ERROR_LIMIT),
            output=storable_text(action_result.output, OUTPUT_LIMIT),
            result=action_result.result,
            duration_ms=duration_ms,
            action=task.action,
            queue=task.queue,
        )

    async def _execute(self, task: ClaimedTask) -> tuple[Outcome, ActionResult]:
        try:
            action = self._actions.get(task.action)
            payload = self._actions.parse(task.action, task.payload)
        except (UnknownAction, ValidationError) as exc:
            # Written by another program, or by an older version: retrying cannot help.
            error = f"cannot run action {task.action!r}: {exc}"
            return Outcome.FAILED, ActionResult.failure(error, retryable=False)
        log = _TaskLog(self._log, task)
        ctx = ActionContext(
            task_id=task.id,
            attempt=task.series_attempt,  # 1..max_attempts, also after a manual retry
            max_attempts=task.max_attempts,
            action=task.action,
            log=log,
            _transaction=self._transaction,
        )
        try:
            result = await action.run(payload, ctx)
        except Retry as retry:
            return Outcome.FAILED, ActionResult.failure(
                retry.reason, retryable=True, retry_after_s=retry.after_s
            )
        except Fail as fail:
            return Outcome.FAILED, ActionResult.failure(fail.reason, retryable=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler's bug must not take the worker down
            log.exception("action_crashed")
            return Outcome.FAILED, ActionResult.failure(
                f"{type(exc).__name__}: {exc}", retryable=True
            )
        return (Outcome.SUCCEEDED if result.ok else Outcome.FAILED), result


def _expire(held: Held) -> None:
    """The attempt's timeout: mark it, then cancel the attempt's task."""
    running = held.running
    if running is not None and not running.done():
        held.timed_out = True
        running.cancel()
