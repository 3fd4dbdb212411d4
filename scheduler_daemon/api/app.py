"""create_app: the aiohttp application and its routes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ValidationError

from scheduler_daemon.actions.base import ActionRegistry, FieldError, PayloadInvalid, UnknownAction
from scheduler_daemon.api.problems import Problem, from_validation, invalid, problem_middleware
from scheduler_daemon.api.schemas import AttemptList, AttemptOut, CreateTask, TaskList, TaskOut
from scheduler_daemon.domain.models import NewTask, TaskStatus
from scheduler_daemon.store.base import TaskFilter, TaskStore
from scheduler_daemon.store.postgres import InvalidCursor

MAX_LIST_LIMIT = 500
DEFAULT_LIST_LIMIT = 50


class Readiness(Protocol):
    async def problems(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    max_attempts: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ApiContext:
    store: TaskStore
    actions: ActionRegistry
    readiness: Readiness
    defaults: Callable[[], TaskDefaults]


CONTEXT = web.AppKey("context", ApiContext)


def _json(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=model.model_dump_json(),
        content_type="application/json",
        headers=headers,
    )


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise Problem(
            400,
            "Malformed JSON",
            "the request body is empty",
            [FieldError("body", "expected a JSON object")],
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400, "Malformed JSON", str(exc), [FieldError("body", "not valid JSON")]
        ) from None


def _task_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["task_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(
            404,
            "Task not found",
            f"no task with id {raw!r}",
            [FieldError("id", "not a task id (a UUID)")],
        ) from None


def _ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


async def create_task(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    data = await _body(request)
    if not isinstance(data, dict):
        raise invalid([FieldError("body", "expected a JSON object")])
    header_key = request.headers.get("Idempotency-Key")
    if header_key and "idempotency_key" not in data:
        data["idempotency_key"] = header_key
    try:
        body = CreateTask.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None
    try:
        payload = ctx.actions.validate(body.action, body.payload)
    except UnknownAction:
        known = ", ".join(ctx.actions.names())
        raise invalid([FieldError("action", f"unknown action; known: {known}")]) from None
    except PayloadInvalid as exc:
        raise invalid(exc.errors) from None
    defaults = ctx.defaults()
    new = NewTask(
        action=body.action,
        payload=payload,
        run_at=body.run_at,
        delay_s=body.delay_s,
        queue=body.queue,
        priority=body.priority,
        max_attempts=body.max_attempts or defaults.max_attempts,
        timeout_s=body.timeout_s or defaults.timeout_s,
        idempotency_key=body.idempotency_key,
        metadata=body.metadata,
    )
    task, created = await ctx.store.create_task(new)
    return _json(
        TaskOut.of(task),
        status=201 if created else 200,
        headers={"Location": f"/v1/tasks/{task.id}"},
    )


def _statuses(request: web.Request) -> tuple[TaskStatus, ...]:
    out: list[TaskStatus] = []
    for raw in request.query.getall("status", []):
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(TaskStatus(part))
            except ValueError:
                allowed = ", ".join(s.value for s in TaskStatus)
                raise invalid(
                    [FieldError("status", f"unknown status {part!r}; one of {allowed}")]
                ) from None
    return tuple(out)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIST_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise invalid([FieldError("limit", "must be an integer")]) from None
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise invalid([FieldError("limit", f"must be between 1 and {MAX_LIST_LIMIT}")])
    return value


async def list_tasks(request: web.Request) -> web.Response:
    flt = TaskFilter(statuses=_statuses(request), action=request.query.get("action") or None)
    try:
        page = await _ctx(request).store.list_tasks(
            flt, _limit(request), request.query.get("cursor") or None
        )
    except InvalidCursor as exc:
        raise invalid([FieldError("cursor", str(exc))]) from None
    return _json(TaskList(items=[TaskOut.of(t) for t in page.items], next_cursor=page.next_cursor))


async def get_task(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    task = await _ctx(request).store.get_task(task_id)
    if task is None:
        raise Problem(404, "Task not found", f"no task with id {task_id}")
    return _json(TaskOut.of(task))


async def list_attempts(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    store = _ctx(request).store
    if await store.get_task(task_id) is None:
        raise Problem(404, "Task not found", f"no task with id {task_id}")
    attempts = await store.list_attempts(task_id)
    return _json(AttemptList(items=[AttemptOut.of(a) for a in attempts]))


async def cancel_task(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    store = _ctx(request).store
    cancelled = await store.cancel_task(task_id)
    if cancelled is not None:
        return _json(TaskOut.of(cancelled))
    task = await store.get_task(task_id)
    if task is None:
        raise Problem(404, "Task not found", f"no task with id {task_id}")
    raise Problem(
        409,
        "Task cannot be cancelled",
        f"task is {task.status.value}; only waiting or scheduled tasks can be cancelled",
        status_of_task=task.status.value,
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = await _ctx(request).readiness.problems()
    if problems:
        return web.json_response({"status": "unavailable", "reasons": problems}, status=503)
    return web.json_response({"status": "ready"})


def create_app(ctx: ApiContext, body_limit_bytes: int) -> web.Application:
    app = web.Application(client_max_size=body_limit_bytes, middlewares=[problem_middleware])
    app[CONTEXT] = ctx
    app.router.add_post("/v1/tasks", create_task)
    app.router.add_get("/v1/tasks", list_tasks)
    app.router.add_get("/v1/tasks/{task_id}", get_task)
    app.router.add_delete("/v1/tasks/{task_id}", cancel_task)
    app.router.add_get("/v1/tasks/{task_id}/attempts", list_attempts)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
