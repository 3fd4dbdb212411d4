"""Task routes: create (one or a batch), list, read, attempts, cancel, run now, retry."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from scheduler_daemon.actions.base import (
    FieldError,
    PayloadInvalid,
    UnknownAction,
    field_errors,
    field_path,
)
from scheduler_daemon.actions.redact import REDACTED
from scheduler_daemon.actions.webhook import DEFAULT_REDACT_HEADERS
from scheduler_daemon.api.context import ApiContext, context
from scheduler_daemon.api.metrics import count_created
from scheduler_daemon.api.problems import Handler, Problem, from_validation, invalid
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.schemas import (
    MAX_BATCH,
    AttemptList,
    AttemptOut,
    BatchCreated,
    CreateTask,
    CreateTaskBatch,
    ListTasksQuery,
    TaskList,
    TaskOut,
    storable_json,
)
from scheduler_daemon.domain.errors import IdempotencyConflict, InvalidCursor, UnknownDependencies
from scheduler_daemon.domain.models import NewTask, Page, Task, TaskStatus
from scheduler_daemon.domain.recurrence import RuleError, for_task, next_occurrence, validate
from scheduler_daemon.domain.schedules import OverlapPolicy, Schedule, TaskTemplate, expand_at
from scheduler_daemon.store.base import TaskFilter, TaskStore

METADATA_LIMIT_BYTES = 16_384
TASK_ID = {"task_id": "the task's id (a UUID)"}


# Tasks go out straight from the domain dataclass, serialised by pydantic-core: the same JSON
# as TaskOut (which describes it in the OpenAPI document) without building a model per task.
_TASK_JSON = TypeAdapter(Task)
_TASKS_JSON = TypeAdapter(list[Task])
_HIDDEN = {"request_hash"}


# Payload fields the API never shows again once stored (a webhook's own signing secret).
_SECRET_FIELDS = ("signing_secret",)


def _shown(task: Task, redact_headers: Collection[str]) -> Task:
    """The task as the API shows it: its secrets masked (stored as they are). Masked: the
    payload's signing secret, and a webhook's header values whose names are in
    ``redact_headers`` (lower case; log.redact_headers)."""
    payload = task.payload
    masked: dict[str, Any] | None = None
    if any(k in payload for k in _SECRET_FIELDS):
        masked = {k: (REDACTED if k in _SECRET_FIELDS else v) for k, v in payload.items()}
    headers = payload.get("headers")
    if (
        task.action == "webhook"
        and isinstance(headers, dict)
        and any(isinstance(k, str) and k.lower() in redact_headers for k in headers)
    ):
        masked = dict(masked if masked is not None else payload)
        masked["headers"] = {
            k: (REDACTED if isinstance(k, str) and k.lower() in redact_headers else v)
            for k, v in headers.items()
        }
    return task if masked is None else dataclasses.replace(task, payload=masked)


def redacted_headers(request: web.Request) -> frozenset[str]:
    """The header names whose values the API masks (log.redact_headers), in lower case."""
    return frozenset(h.lower() for h in context(request).settings().log.redact_headers)


def task_json(task: Task, redact_headers: Collection[str] = DEFAULT_REDACT_HEADERS) -> bytes:
    return _TASK_JSON.dump_json(_shown(task, redact_headers), exclude=_HIDDEN)


def tasks_json(
    tasks: list[Task], redact_headers: Collection[str] = DEFAULT_REDACT_HEADERS
) -> bytes:
    shown = [_shown(t, redact_headers) for t in tasks]
    return _TASKS_JSON.dump_json(shown, exclude={"__all__": _HIDDEN})


def page_response(
    page: Page, redact_headers: Collection[str] = DEFAULT_REDACT_HEADERS
) -> web.Response:
    """A page of tasks: ``{"items": [...], "next_cursor": ...}`` (TaskList)."""
    cursor = json.dumps(page.next_cursor).encode()
    items = tasks_json(page.items, redact_headers)
    body = b'{"items":' + items + b',"next_cursor":' + cursor + b"}"
    return web.Response(body=body, content_type="application/json")


def task_response(
    task: Task,
    status: int = 200,
    headers: dict[str, str] | None = None,
    redact_headers: Collection[str] = DEFAULT_REDACT_HEADERS,
) -> web.Response:
    return web.Response(
        status=status,
        body=task_json(task, redact_headers),
        content_type="application/json",
        headers=headers,
    )


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=model.model_dump_json(),
        content_type="application/json",
        headers=headers,
    )


async def read_json(request: web.Request) -> Any:
    raw = await request.read()  # over http.body_limit_bytes: 413 before any parsing
    if not raw:
        raise Problem(
            400,
            "Malformed JSON",
            "the request body is empty",
            [FieldError("body", "expected a JSON object")],
        )
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400, "Malformed JSON", str(exc), [FieldError("body", "not valid JSON")]
        ) from None


def task_id_of(request: web.Request) -> uuid.UUID:
    raw = request.match_info["task_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(
            404,
            "Task not found",
            f"no task with id {raw!r}",
            [FieldError("task_id", "not a task id (a UUID)")],
        ) from None


def not_found(task_id: uuid.UUID) -> Problem:
    return Problem(
        404, "Task not found", f"no task with id {task_id}", [FieldError("task_id", "no such task")]
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def to_new_task(ctx: ApiContext, body: CreateTask, prefix: str = "") -> NewTask:
    """Validate what the model alone cannot (the action's payload, sizes) and build the task."""

    def field(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if body.action not in ctx.actions:
        known = ", ".join(ctx.actions.names())
        raise invalid([FieldError(field("action"), f"unknown action; known: {known}")])
    try:
        payload = ctx.actions.validate(body.action, body.payload)
    except UnknownAction:  # pragma: no cover - checked above
        raise invalid([FieldError(field("action"), "unknown action")]) from None
    except PayloadInvalid as exc:
        raise invalid(
            [
                FieldError(f"{prefix}.{e.field}" if prefix else e.field, e.message)
                for e in exc.errors
            ]
        ) from None
    settings = ctx.settings()
    limit = settings.http.payload_limit_bytes
    payload_json, problem = storable_json(payload, limit)
    if problem:
        raise invalid([FieldError(field("payload"), problem)])
    if body.metadata:
        _, problem = storable_json(body.metadata, METADATA_LIMIT_BYTES)
        if problem:
            raise invalid([FieldError(field("metadata"), problem)])
    return body.new_task(
        payload,
        max_attempts=settings.max_attempts(body.queue),
        timeout_s=settings.executor.default_timeout_s,
        payload_json=payload_json,
    )


async def _create(
    ctx: ApiContext, tasks: list[NewTask], prefix: str | None
) -> list[tuple[Task, bool]]:
    def field(index: int, name: str) -> str:
        return f"{prefix}[{index}].{name}" if prefix is not None else name

    try:
        return await ctx.store.create_tasks(tasks)
    except UnknownDependencies as exc:
        raise invalid([FieldError(field(exc.index, "depends_on"), str(exc))]) from None
    except IdempotencyConflict as exc:
        raise Problem(
            409,
            "Idempotency key reused",
            f"{exc}; the original task was left as it is",
            [
                FieldError(
                    field(exc.index, "idempotency_key"), "used before with a different request body"
                )
            ],
        ) from None


async def create_task(request: web.Request) -> web.Response:
    ctx = context(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise invalid([FieldError("body", "expected a JSON object")])
    header_key = request.headers.get("Idempotency-Key")
    if header_key and "idempotency_key" not in data:
        data["idempotency_key"] = header_key
    try:
        body = CreateTask.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None
    new = to_new_task(ctx, body)
    if body.recurrence is not None:
        return await _create_recurring(ctx, request, body, new)
    [(task, created)] = await _create(ctx, [new], None)
    count_created(request, [(task, created)])
    return task_response(
        task,
        status=201 if created else 200,
        headers={"Location": f"/v1/tasks/{task.id}"},
        redact_headers=redacted_headers(request),
    )


async def _create_recurring(
    ctx: ApiContext, request: web.Request, body: CreateTask, new: NewTask
) -> web.Response:
    """Seed 001's recurring task: the task is the first occurrence of a schedule of its own."""
    if new.idempotency_key is not None or new.depends_on:
        raise invalid(
            [FieldError("recurrence", "cannot be combined with idempotency_key or depends_on")]
        )
    assert ctx.schedules is not None
    now = datetime.now(UTC)
    run_at = new.run_at or now + timedelta(seconds=new.delay_s or 0.0)
    try:
        rule = for_task(body.recurrence or "", run_at)
        validate(rule, now)
    except RuleError as exc:
        raise invalid([FieldError("recurrence", exc.message)]) from None
    schedule_id = uuid.uuid4()
    first = replace(new, run_at=run_at, delay_s=None, schedule_id=schedule_id, scheduled_for=run_at)
    next_run_at = next_occurrence(rule, run_at)
    schedule = Schedule(
        id=schedule_id,
        name=f"task-{first.id}",
        recurrence=rule,
        template=TaskTemplate(
            action=new.action,
            payload=new.payload,
            queue=new.queue,
            priority=new.priority,
            max_attempts=new.max_attempts,
            retry_base_s=new.retry_base_s,
            retry_cap_s=new.retry_cap_s,
            timeout_s=new.timeout_s,
            metadata=new.metadata,
        ),
        next_run_at=next_run_at,
        expand_at=expand_at(OverlapPolicy.ALLOW, next_run_at, ctx.settings().expander.horizon_s),
        last_task_id=first.id,
        from_task=True,
    )
    _, task = await ctx.schedules.create_schedule(schedule, first_task=first)
    assert task is not None
    count_created(request, [(task, True)])
    return task_response(
        task,
        status=201,
        headers={"Location": f"/v1/tasks/{task.id}"},
        redact_headers=redacted_headers(request),
    )


class _BatchEnvelope(BaseModel):
    """CreateTaskBatch with its items left raw, to validate them one by one."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


async def create_batch(request: web.Request) -> web.Response:
    ctx = context(request)
    data = await read_json(request)
    try:
        envelope = _BatchEnvelope.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None
    # Each item on its own, so that every bad item is reported, not just the first.
    tasks: list[NewTask] = []
    errors: list[FieldError] = []
    for index, item in enumerate(envelope.tasks):
        prefix = field_path(("tasks", index))
        try:
            body = CreateTask.model_validate(item)
            if body.recurrence is not None:
                errors.append(
                    FieldError(f"{prefix}.recurrence", "only POST /v1/tasks takes recurrence")
                )
                continue
            tasks.append(to_new_task(ctx, body, prefix))
        except ValidationError as exc:
            errors.extend(field_errors(exc, prefix))
        except Problem as problem:
            errors.extend(problem.errors)
    if errors:
        raise invalid(errors)
    outcomes = await _create(ctx, tasks, "tasks")
    count_created(request, outcomes)
    created = sum(1 for _, new in outcomes if new)
    items = tasks_json([t for t, _ in outcomes], redacted_headers(request))
    return web.Response(
        status=201 if created else 200,
        body=b'{"items":' + items + b',"created":%d}' % created,
        content_type="application/json",
    )


def _query(request: web.Request) -> ListTasksQuery:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values if key == "status" else values[-1]
    try:
        return ListTasksQuery.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def list_tasks(request: web.Request) -> web.Response:
    query = _query(request)
    flt = TaskFilter(
        statuses=tuple(query.status),
        action=query.action,
        queue=query.queue,
        schedule_id=query.schedule_id,
        created_after=query.created_after,
        created_before=query.created_before,
        run_after=query.run_after,
        run_before=query.run_before,
        search=query.q,
    )
    try:
        page = await context(request).store.list_tasks(flt, query.limit, query.cursor)
    except InvalidCursor as exc:
        raise invalid([FieldError("cursor", str(exc))]) from None
    return page_response(page, redacted_headers(request))


_WAITING_TO_RUN = frozenset({TaskStatus.SCHEDULED, TaskStatus.WAITING})


async def get_task(request: web.Request) -> web.Response:
    ctx = context(request)
    task_id = task_id_of(request)
    task = await ctx.store.get_task(task_id)
    if task is None:
        raise not_found(task_id)
    if (
        task.status in _WAITING_TO_RUN
        and ctx.workers is not None
        and task.action not in await ctx.workers.live_actions()
    ):
        task = dataclasses.replace(task, no_capable_worker=True)
    return task_response(task, redact_headers=redacted_headers(request))


async def list_attempts(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    store = context(request).store
    if await store.get_task(task_id) is None:
        raise not_found(task_id)
    attempts = await store.list_attempts(task_id)
    return json_response(AttemptList(items=[AttemptOut.of(a) for a in attempts]))


async def _conflict(request: web.Request, task_id: uuid.UUID, what: str, allowed: str) -> Problem:
    task = await context(request).store.get_task(task_id)
    if task is None:
        return not_found(task_id)
    return Problem(
        409,
        f"Task cannot be {what}",
        f"task is {task.status.value}; only {allowed} tasks can be {what}",
        [FieldError("status", f"is {task.status.value}")],
    )


def _transition(
    change: Callable[[TaskStore, uuid.UUID], Awaitable[Task | None]], what: str, allowed: str
) -> Handler:
    """A route that moves a task to another state, or answers 409 naming its status."""

    async def handle(request: web.Request) -> web.Response:
        task_id = task_id_of(request)
        task = await change(context(request).store, task_id)
        if task is None:
            raise await _conflict(request, task_id, what, allowed)
        return task_response(task, redact_headers=redacted_headers(request))

    return handle


cancel_task = _transition(
    lambda store, task_id: store.cancel_task(task_id), "cancelled", "waiting or scheduled"
)
run_task = _transition(lambda store, task_id: store.run_now(task_id), "run now", "scheduled")
retry_task = _transition(
    lambda store, task_id: store.retry_task(task_id), "retried", "failed or cancelled"
)


_TASK = Response("the task", TaskOut)

ROUTES = [
    Route(
        "POST",
        "/v1/tasks",
        create_task,
        "createTask",
        "Create a task",
        "tasks",
        "write",
        {
            201: Response("created", TaskOut),
            200: Response("an idempotent repeat: the original task", TaskOut),
        },
        body=CreateTask,
        errors=(400, 409, 413, 422),
        headers={"Idempotency-Key": "same as idempotency_key in the body"},
    ),
    Route(
        "POST",
        "/v1/tasks/batch",
        create_batch,
        "createTasks",
        "Create up to 1,000 tasks, all or none",
        "tasks",
        "write",
        {
            201: Response("created", BatchCreated),
            200: Response("all were idempotent repeats", BatchCreated),
        },
        body=CreateTaskBatch,
        errors=(400, 409, 413, 422),
    ),
    Route(
        "GET",
        "/v1/tasks",
        list_tasks,
        "listTasks",
        "List tasks, newest first",
        "tasks",
        "read",
        {200: Response("a page of tasks", TaskList)},
        query=ListTasksQuery,
        errors=(422,),
    ),
    Route(
        "GET",
        "/v1/tasks/{task_id}",
        get_task,
        "getTask",
        "Get a task",
        "tasks",
        "read",
        {200: _TASK},
        path_params=TASK_ID,
        errors=(404,),
    ),
    Route(
        "DELETE",
        "/v1/tasks/{task_id}",
        cancel_task,
        "cancelTask",
        "Cancel a task that has not started",
        "tasks",
        "write",
        {200: Response("the cancelled task", TaskOut)},
        path_params=TASK_ID,
        errors=(404, 409),
    ),
    Route(
        "GET",
        "/v1/tasks/{task_id}/attempts",
        list_attempts,
        "listAttempts",
        "The task's attempts, in order",
        "tasks",
        "read",
        {200: Response("the attempts", AttemptList)},
        path_params=TASK_ID,
        errors=(404,),
    ),
    Route(
        "POST",
        "/v1/tasks/{task_id}/run",
        run_task,
        "runTask",
        "Run a scheduled task now",
        "tasks",
        "write",
        {200: _TASK},
        path_params=TASK_ID,
        errors=(404, 409),
    ),
    Route(
        "POST",
        "/v1/tasks/{task_id}/retry",
        retry_task,
        "retryTask",
        "Re-queue a failed or cancelled task as a new attempt series",
        "tasks",
        "write",
        {200: _TASK},
        path_params=TASK_ID,
        errors=(404, 409),
    ),
]
