"""Transactional enqueue: schedule tasks on the caller's own connection and transaction.

A service that schedules work while handling a request does it inside that request's
transaction: if the request rolls back, the task never existed and no daemon ever saw it
(its wake-up NOTIFY is only delivered on commit). ::

    async with conn.transaction():
        order_id = await conn.fetchval("INSERT INTO orders ... RETURNING id")
        await enqueue(conn, "webhook", {"url": "https://example.com/hook"}, delay_s=60)

The statements are the store's own (``insert_tasks``), so a task created here is exactly
one created over HTTP. Plain asyncpg connections are fine: no type codec is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from scheduler_daemon.actions.base import (
    ActionRegistry,
    FieldError,
    PayloadInvalid,
    UnknownAction,
    field_path,
)
from scheduler_daemon.api.schemas import CreateTask, storable_json
from scheduler_daemon.domain.backoff import DEFAULT_MAX_ATTEMPTS
from scheduler_daemon.domain.errors import IdempotencyConflict, UnknownDependencies
from scheduler_daemon.domain.models import NewTask
from scheduler_daemon.store.postgres import Connection, insert_tasks, insert_tasks_quietly

__all__ = [
    "IdempotencyConflict",
    "PayloadInvalid",
    "TaskInvalid",
    "UnknownAction",
    "UnknownDependencies",
    "enqueue",
    "enqueue_many",
]


class TaskInvalid(ValueError):
    """An argument of ``enqueue`` that the daemon would not accept; ``errors`` name them."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


_NO_LIMIT = 1 << 62  # the API's size limits are its settings'; a service's own code has none


def _storable(name: str, value: Any) -> str:
    """``value`` as JSON text PostgreSQL stores, or TaskInvalid naming ``name``."""
    try:
        text, problem = storable_json(value, _NO_LIMIT)
    except (TypeError, ValueError) as exc:
        raise TaskInvalid([FieldError(name, f"not JSON: {exc}")]) from None
    if problem:
        raise TaskInvalid([FieldError(name, problem)])
    return text


async def enqueue(
    conn: Connection,
    action: str,
    payload: Mapping[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    delay_s: float | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int | None = None,
    retry: Mapping[str, float] | None = None,
    timeout_s: float = 30.0,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    depends_on: Sequence[uuid.UUID] = (),
    validate: ActionRegistry | None = None,
) -> uuid.UUID:
    """Schedule one task on ``conn``, inside its open transaction if it has one.

    ``run_at`` (timezone-aware) or ``delay_s`` (seconds from the database's now), neither:
    now. The fields follow the rules of ``POST /v1/tasks``; a bad one raises TaskInvalid (a
    ValueError) naming it. With ``validate`` (the registry of the daemon's actions) the
    payload is checked and normalised as the API does: PayloadInvalid, UnknownAction.

    A repeated ``idempotency_key`` with the same arguments returns the original task's id;
    with different ones it raises IdempotencyConflict. An unknown ``depends_on`` id raises
    UnknownDependencies. Nothing is inserted when this raises, and the caller's transaction
    stays usable (the statements ran in a savepoint).
    """
    if run_at is not None and delay_s is not None:
        raise TaskInvalid([FieldError("run_at", "give run_at or delay_s, not both")])
    if isinstance(depends_on, str | uuid.UUID):
        raise TaskInvalid([FieldError("depends_on", "expected a sequence of task ids")])
    body = _parsed(
        {
            "action": action,
            "payload": dict(payload or {}),
            "run_at": run_at,
            "delay_s": delay_s,
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
            "retry": None if retry is None else dict(retry),
            "timeout_s": timeout_s,
            "idempotency_key": idempotency_key,
            "metadata": dict(metadata or {}),
            "depends_on": list(depends_on),
        }
    )
    [task_id] = await enqueue_many(conn, [_admitted(body, validate, timeout_s)])
    return task_id


def _parsed(fields: dict[str, Any]) -> CreateTask:
    """The fields under the rules of ``POST /v1/tasks``; TaskInvalid naming each bad one."""
    try:
        return CreateTask.model_validate(fields)
    except ValidationError as exc:
        raise TaskInvalid(
            [
                FieldError(field_path(e["loc"]) if e["loc"] else "task", e["msg"])
                for e in exc.errors()
            ]
        ) from None


def _admitted(body: CreateTask, validate: ActionRegistry | None, timeout_s: float) -> NewTask:
    """The task to insert: with ``validate``, its action known and its payload normalised."""
    stored = body.payload
    if validate is not None:
        if body.action not in validate:
            known = ", ".join(validate.names())
            raise UnknownAction(f"unknown action {body.action!r}; known: {known}")
        stored = validate.validate(body.action, body.payload)
    payload_json = _storable("payload", stored)
    _storable("metadata", body.metadata)
    return body.new_task(
        stored, max_attempts=DEFAULT_MAX_ATTEMPTS, timeout_s=timeout_s, payload_json=payload_json
    )


async def enqueue_many(conn: Connection, tasks: Sequence[NewTask]) -> list[uuid.UUID]:
    """Schedule tasks all-or-nothing on ``conn`` (inside its open transaction if any); their
    ids in the order given (an idempotent repeat: the original's id).

    The tasks are taken as given (NewTask is already validated); a naive ``run_at`` is
    still refused, since PostgreSQL would read it as UTC. Raises UnknownDependencies or
    IdempotencyConflict (``index`` says which task) and then inserts nothing.
    """
    errors = [
        FieldError(f"tasks[{i}].run_at", "needs a time zone (an aware datetime)")
        for i, t in enumerate(tasks)
        if t.run_at is not None and t.run_at.utcoffset() is None
    ]
    if errors:
        raise TaskInvalid(errors)
    if not any(t.depends_on or t.idempotency_key for t in tasks):
        await insert_tasks_quietly(conn, tasks)  # the ids are the tasks' own
        return [t.id for t in tasks]
    outcomes = await insert_tasks(conn, tasks)
    return [task.id for task, _ in outcomes]
