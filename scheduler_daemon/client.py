"""An asyncio client for the daemon's HTTP API.

::

    async with SchedulerClient("http://127.0.0.1:8080", token="...") as client:
        task = await client.create_task("webhook", {"url": "https://example.com/hook"}, delay_s=60)
        task = await client.get_task(task.id)
        await client.cancel_task(task.id)

Results are the API's own response models (``Task`` is ``TaskOut``, ``Attempt`` is
``AttemptOut``, ``TaskPage`` is ``TaskList``, ``Schedule`` is ``ScheduleOut``, ``SchedulePage``
is ``ScheduleList``), so they carry the same fields and types as the OpenAPI document
describes. Every error answer becomes a :class:`SchedulerError` subclass that
keeps the problem details (``status``, ``title``, ``detail``, ``errors``); a daemon that cannot
be reached raises :class:`SchedulerUnavailable`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ValidationError

from scheduler_daemon.api.schedule_schemas import ScheduleList, ScheduleOut, SchedulePreview
from scheduler_daemon.api.schemas import (
    AttemptList,
    AttemptOut,
    BatchCreated,
    Health,
    ProblemDetails,
    Readiness,
    TaskList,
    TaskOut,
)
from scheduler_daemon.domain.models import TaskStatus

__all__ = [
    "Attempt",
    "BatchCreated",
    "Conflict",
    "Forbidden",
    "NotFound",
    "ProblemDetails",
    "Schedule",
    "SchedulePage",
    "SchedulePreview",
    "ScheduleRef",
    "ScheduleSpec",
    "SchedulerClient",
    "SchedulerError",
    "SchedulerUnavailable",
    "ServerError",
    "Task",
    "TaskPage",
    "TaskRef",
    "TaskSpec",
    "TaskStatus",
    "Unauthorized",
    "ValidationFailed",
]

Task = TaskOut
Attempt = AttemptOut
TaskPage = TaskList

TaskRef = uuid.UUID | str | TaskOut
"""A task id: a UUID, its string form, or a task as returned by the client."""

Schedule = ScheduleOut
SchedulePage = ScheduleList

ScheduleRef = uuid.UUID | str | ScheduleOut
"""A schedule id: a UUID, its string form, or a schedule as returned by the client."""

_M = TypeVar("_M", bound=BaseModel)
_DETAIL_SNIPPET = 500


# -- errors ----------------------------------------------------------------------------------


class SchedulerError(Exception):
    """The daemon answered with an error (or could not be asked: see SchedulerUnavailable).

    ``status`` is the HTTP status (None when there was no answer), ``title`` and ``detail``
    come from the RFC 9457 problem details, ``errors`` lists ``(field, message)`` pairs such as
    ``("tasks[1].payload.url", "Input should be a valid URL")`` and ``problem`` is the problem
    document as received (empty when the body was not a JSON object).
    """

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str | None = None,
        errors: Sequence[tuple[str, str]] = (),
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors: list[tuple[str, str]] = list(errors)
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.status} {self.title}" if self.status is not None else self.title
        if self.detail:
            head = f"{head}: {self.detail}"
        elif self.errors:
            head = f"{head}: " + "; ".join(f"{f}: {m}" for f, m in self.errors)
        return head

    @property
    def fields(self) -> list[str]:
        """The names of the fields in ``errors``, in order."""
        return [name for name, _ in self.errors]


class ValidationFailed(SchedulerError):
    """400 (malformed JSON), 413 (body too large) or 422 (an invalid field)."""


class Unauthorized(SchedulerError):
    """401: no token, or an unknown one."""


class Forbidden(SchedulerError):
    """403: the token's role does not allow this."""


class NotFound(SchedulerError):
    """404: no such task."""


class Conflict(SchedulerError):
    """409: the task's status does not allow this, or an idempotency key was reused with a
    different request body."""


class ServerError(SchedulerError):
    """5xx."""


class SchedulerUnavailable(SchedulerError):
    """The daemon could not be reached, closed the connection or did not answer in time."""


_BY_STATUS: dict[int, type[SchedulerError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: ValidationFailed,
    422: ValidationFailed,
}


def error_class(status: int) -> type[SchedulerError]:
    """The exception class for an HTTP error status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, SchedulerError)


def error_from_response(status: int, reason: str | None, body: bytes) -> SchedulerError:
    """Build the error for an answer with an error status; the body need not be a problem
    document (a proxy's HTML page, plain text and empty bodies are handled too)."""
    cls = error_class(status)
    text = body.decode("utf-8", errors="replace")
    try:
        data: Any = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        snippet = " ".join(text.split())[:_DETAIL_SNIPPET] or None
        return cls(status, reason or f"HTTP {status}", snippet)
    title = data.get("title")
    detail = data.get("detail")
    errors: list[tuple[str, str]] = []
    raw_errors = data.get("errors")
    if isinstance(raw_errors, list):
        for item in raw_errors:
            if isinstance(item, Mapping):
                errors.append((str(item.get("field", "")), str(item.get("message", ""))))
            elif item is not None:
                errors.append(("", str(item)))
    return cls(
        status,
        str(title) if title else (reason or f"HTTP {status}"),
        str(detail) if detail is not None else None,
        errors,
        data,
    )


# -- request bodies --------------------------------------------------------------------------


def _jsonable(value: Any, name: str) -> Any:
    """``value`` with datetimes as ISO 8601 strings and UUIDs as strings; a naive datetime is
    a ValueError that names where it was (``name``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{name} must be a timezone-aware datetime (got naive {value.isoformat()})"
            )
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return value


def _id_of(task: TaskRef) -> str:
    if isinstance(task, TaskOut):
        return str(task.id)
    if isinstance(task, uuid.UUID):
        return str(task)
    if not task:
        raise ValueError("task id must not be empty")
    return task


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task to create, with the same fields as :meth:`SchedulerClient.create_task`.

    None means "not sent": the daemon's default applies.
    """

    action: str
    payload: Mapping[str, Any] | None = None
    run_at: datetime | None = None
    delay_s: float | None = None
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    retry: Mapping[str, float] | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None
    depends_on: Sequence[TaskRef] | None = None
    metadata: Mapping[str, Any] | None = None
    recurrence: str | None = None

    def to_body(self, prefix: str = "") -> dict[str, Any]:
        """The JSON body of POST /v1/tasks (``prefix`` names the fields in error messages)."""

        def name(key: str) -> str:
            return f"{prefix}.{key}" if prefix else key

        body: dict[str, Any] = {"action": self.action}
        for key in (
            "payload",
            "run_at",
            "delay_s",
            "queue",
            "priority",
            "max_attempts",
            "retry",
            "timeout_s",
            "idempotency_key",
            "metadata",
            "recurrence",
        ):
            value = getattr(self, key)
            if value is not None:
                body[key] = _jsonable(value, name(key))
        if self.depends_on is not None:
            body["depends_on"] = [_id_of(t) for t in self.depends_on]
        return body


def _spec_body(spec: TaskSpec | Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if isinstance(spec, TaskSpec):
        return spec.to_body(prefix)
    if isinstance(spec, Mapping):
        body = _jsonable({k: v for k, v in spec.items() if k != "depends_on"}, prefix)
        assert isinstance(body, dict)
        depends_on = spec.get("depends_on")
        if isinstance(depends_on, list | tuple):
            body["depends_on"] = [_id_of(t) for t in depends_on]
        elif depends_on is not None:
            body["depends_on"] = depends_on
        return body
    raise TypeError(f"{prefix}: expected a TaskSpec or a mapping, got {type(spec).__name__}")


# The optional fields of a schedule body, in the order they are sent.
_SCHEDULE_OPTIONS = (
    "cron",
    "interval_s",
    "preset",
    "at",
    "weekday",
    "day_of_month",
    "timezone",
    "start_at",
    "end_at",
    "paused",
    "exclusions",
    "misfire_policy",
    "misfire_grace_s",
    "max_catchup",
    "overlap_policy",
    "jitter_s",
    "metadata",
)
_SCHEDULE_FIELDS = frozenset({"name", "task", *_SCHEDULE_OPTIONS})


def _schedule_json(value: Any, name: str) -> Any:
    """Like ``_jsonable``, with dates and times of day as ISO 8601 strings too (``at``,
    ``exclusions``); a time of day with a tzinfo is a ValueError (times of day are local to the
    schedule's ``timezone``)."""
    if isinstance(value, datetime):
        return _jsonable(value, name)
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise ValueError(
                f"{name} must be a local time of day without tzinfo (got {value.isoformat()}); "
                "the schedule's timezone applies"
            )
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _schedule_json(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_schedule_json(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return _jsonable(value, name)


def _template_body(task: TaskSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The ``task`` of a schedule body: the task each occurrence creates."""
    if isinstance(task, TaskSpec):
        return task.to_body("task")
    if isinstance(task, Mapping):
        body = _schedule_json(task, "task")
        assert isinstance(body, dict)
        return body
    raise TypeError(f"task: expected a TaskSpec or a mapping, got {type(task).__name__}")


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """One schedule to create or preview, with the same fields as
    :meth:`SchedulerClient.create_schedule`.

    None means "not sent": the daemon's default applies.
    """

    name: str
    task: TaskSpec | Mapping[str, Any]
    cron: str | None = None
    interval_s: float | None = None
    preset: str | None = None
    at: time | str | None = None
    weekday: int | None = None
    day_of_month: int | None = None
    timezone: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool | None = None
    exclusions: Mapping[str, Any] | None = None
    misfire_policy: str | None = None
    misfire_grace_s: float | None = None
    max_catchup: int | None = None
    overlap_policy: str | None = None
    jitter_s: float | None = None
    metadata: Mapping[str, Any] | None = None

    def to_body(self) -> dict[str, Any]:
        """The JSON body of POST /v1/schedules (and POST /v1/schedules/preview)."""
        body: dict[str, Any] = {"name": self.name, "task": _template_body(self.task)}
        for key in _SCHEDULE_OPTIONS:
            value = getattr(self, key)
            if value is not None:
                body[key] = _schedule_json(value, key)
        return body


def _patch_body(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of PATCH /v1/schedules/{id}: exactly the given keys (None is sent as
    null, which clears an optional field such as ``end_at``)."""
    unknown = sorted(set(changes) - _SCHEDULE_FIELDS)
    if unknown:
        raise TypeError(f"update_schedule() got unknown schedule field(s): {', '.join(unknown)}")
    body: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "task" and value is not None:
            body[key] = _template_body(value)
        else:
            body[key] = _schedule_json(value, key)
    return body


# -- the client ------------------------------------------------------------------------------


class SchedulerClient:
    """A client for one daemon's HTTP API (``/v1/tasks``, ``/v1/schedules``, ``/healthz``,
    ``/readyz``).

    ``token`` is sent as ``Authorization: Bearer <token>``; ``timeout`` bounds each request in
    seconds. Use it as an async context manager, or call :meth:`close` when done. The client
    creates and owns its ``aiohttp.ClientSession`` unless ``session`` is given; a given
    session is used as it is and left open.

    Seed 000's ``AwsTasksClient`` maps onto this client as follows: ``createTask()`` is
    :meth:`create_task` (its ``{executeAt, url, method, data}`` is
    ``create_task("webhook", {"url": url, "method": method, "data": data}, run_at=executeAt)``)
    and ``deleteTask()`` is :meth:`cancel_task`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base
        self._token = token
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._closed = False

    def __repr__(self) -> str:
        auth = "token" if self._token else "anonymous"
        return f"SchedulerClient({self.base_url!r}, {auth})"

    async def __aenter__(self) -> Self:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the client created it. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("SchedulerClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- transport -----------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Sequence[tuple[str, str]] | None = None,
    ) -> tuple[int, str | None, bytes]:
        session = self._get_session()
        headers = {"Accept": "application/json, application/problem+json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        url = f"{self.base_url}{path}"
        try:
            async with session.request(
                method, url, data=data, params=params, headers=headers, timeout=self._timeout
            ) as resp:
                return resp.status, resp.reason, await resp.read()
        except aiohttp.InvalidURL:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SchedulerUnavailable(
                None, "Scheduler unavailable", f"{method} {url}: {reason}"
            ) from exc

    async def _call(
        self,
        method: str,
        path: str,
        model: type[_M],
        *,
        body: Any = None,
        params: Sequence[tuple[str, str]] | None = None,
    ) -> _M:
        status, reason, raw = await self._send(method, path, body=body, params=params)
        if not 200 <= status < 300:
            raise error_from_response(status, reason, raw)
        return _parse(model, status, raw, f"{method} {path}")

    async def _call_no_content(self, method: str, path: str) -> None:
        status, reason, raw = await self._send(method, path)
        if not 200 <= status < 300:
            raise error_from_response(status, reason, raw)

    # -- tasks ---------------------------------------------------------------------------

    async def create_task(
        self,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        delay_s: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        retry: Mapping[str, float] | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        depends_on: Sequence[TaskRef] | None = None,
        metadata: Mapping[str, Any] | None = None,
        recurrence: str | None = None,
    ) -> Task:
        """Create a task (``POST /v1/tasks``; seed 000's ``createTask``).

        ``recurrence`` (daily, weekly, monthly or a cron string) makes it repeat from
        ``run_at``: each next occurrence is a new task whose ``parent_task_id`` is this one's.

        ``run_at`` must be timezone-aware; give it or ``delay_s`` (seconds from now), or
        neither to run now. ``retry``: ``{"max_attempts", "base_s", "cap_s"}``, each optional.
        Arguments left None take the daemon's defaults. With
        ``idempotency_key``, repeating the same request returns the task it first created,
        while the same key with a different request raises :class:`Conflict`.
        """
        spec = TaskSpec(
            action=action,
            payload=payload,
            run_at=run_at,
            delay_s=delay_s,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            retry=retry,
            timeout_s=timeout_s,
            idempotency_key=idempotency_key,
            depends_on=depends_on,
            metadata=metadata,
            recurrence=recurrence,
        )
        return await self._call("POST", "/v1/tasks", TaskOut, body=spec.to_body())

    async def create_tasks(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> list[Task]:
        """Create up to 1,000 tasks at once, all or none (``POST /v1/tasks/batch``).

        Each item is a :class:`TaskSpec` or a mapping with the fields of a ``POST /v1/tasks``
        body. The tasks come back in the order given; an invalid item raises
        :class:`ValidationFailed` with fields named like ``tasks[1].payload.url``.
        """
        bodies = [_spec_body(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
        result = await self._call("POST", "/v1/tasks/batch", BatchCreated, body={"tasks": bodies})
        return result.items

    async def get_task(self, task_id: TaskRef) -> Task:
        """The task (``GET /v1/tasks/{id}``); :class:`NotFound` if there is none."""
        return await self._call("GET", _task_path(task_id), TaskOut)

    async def list_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        action: str | None = None,
        queue: str | None = None,
        schedule_id: uuid.UUID | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        run_after: datetime | None = None,
        run_before: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first (``GET /v1/tasks``).

        ``status`` is one status or several (any of them matches). The time filters must be
        timezone-aware: ``*_after`` is inclusive, ``*_before`` exclusive. Pass the page's
        ``next_cursor`` as ``cursor`` for the next page; it is None on the last one.
        """
        params = _list_params(
            status=status,
            action=action,
            queue=queue,
            schedule_id=schedule_id,
            created_after=created_after,
            created_before=created_before,
            run_after=run_after,
            run_before=run_before,
            limit=limit,
            cursor=cursor,
        )
        return await self._call("GET", "/v1/tasks", TaskList, params=params)

    async def iter_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        action: str | None = None,
        queue: str | None = None,
        schedule_id: uuid.UUID | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        run_after: datetime | None = None,
        run_before: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Task]:
        """Every matching task, newest first, fetching pages of ``limit`` as it goes."""
        statuses = [status] if isinstance(status, str) else None if status is None else [*status]
        while True:
            page = await self.list_tasks(
                status=statuses,
                action=action,
                queue=queue,
                schedule_id=schedule_id,
                created_after=created_after,
                created_before=created_before,
                run_after=run_after,
                run_before=run_before,
                limit=limit,
                cursor=cursor,
            )
            for task in page.items:
                yield task
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def list_attempts(self, task_id: TaskRef) -> list[Attempt]:
        """The task's attempts in order (``GET /v1/tasks/{id}/attempts``)."""
        result = await self._call("GET", f"{_task_path(task_id)}/attempts", AttemptList)
        return result.items

    async def cancel_task(self, task_id: TaskRef) -> Task:
        """Cancel a task that has not started (``DELETE /v1/tasks/{id}``; seed 000's
        ``deleteTask``). :class:`Conflict` if it has started or finished."""
        return await self._call("DELETE", _task_path(task_id), TaskOut)

    async def run_task(self, task_id: TaskRef) -> Task:
        """Make a scheduled task due now (``POST /v1/tasks/{id}/run``); :class:`Conflict`
        unless it is scheduled."""
        return await self._call("POST", f"{_task_path(task_id)}/run", TaskOut)

    async def retry_task(self, task_id: TaskRef) -> Task:
        """Re-queue a failed or cancelled task with a fresh series of attempts
        (``POST /v1/tasks/{id}/retry``); :class:`Conflict` in any other status."""
        return await self._call("POST", f"{_task_path(task_id)}/retry", TaskOut)

    # -- schedules -----------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        *,
        task: TaskSpec | Mapping[str, Any],
        cron: str | None = None,
        interval_s: float | None = None,
        preset: str | None = None,
        at: time | str | None = None,
        weekday: int | None = None,
        day_of_month: int | None = None,
        timezone: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        paused: bool | None = None,
        exclusions: Mapping[str, Any] | None = None,
        misfire_policy: str | None = None,
        misfire_grace_s: float | None = None,
        max_catchup: int | None = None,
        overlap_policy: str | None = None,
        jitter_s: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Schedule:
        """Create a schedule (``POST /v1/schedules``); needs the ``admin`` role.

        ``task`` is the task each occurrence creates: a mapping (or a :class:`TaskSpec`) with
        ``action``, ``payload``, ``queue``, ``priority``, ``max_attempts``, ``timeout_s`` and
        ``metadata``. Give exactly one rule: ``cron`` (5 fields, or 6 with seconds first),
        ``interval_s``, or ``preset`` (``hourly``, ``daily``, ``weekly``, ``monthly``, with
        ``at`` as a ``datetime.time`` or ``"HH:MM"``, ``weekday`` 0 = Monday and
        ``day_of_month``). ``timezone`` is an IANA zone (default UTC); ``start_at`` and
        ``end_at`` must be timezone-aware. ``exclusions`` is a mapping with ``windows``
        (``{"start": datetime, "end": datetime}``), ``daily`` (local ``{"start": time, "end":
        time}``) and ``dates`` (local dates). Arguments left None take the daemon's defaults.
        :class:`Conflict` if the name is taken; :class:`ValidationFailed` names the field of an
        invalid rule (``cron``, ``timezone``, ...).
        """
        spec = ScheduleSpec(
            name=name,
            task=task,
            cron=cron,
            interval_s=interval_s,
            preset=preset,
            at=at,
            weekday=weekday,
            day_of_month=day_of_month,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            paused=paused,
            exclusions=exclusions,
            misfire_policy=misfire_policy,
            misfire_grace_s=misfire_grace_s,
            max_catchup=max_catchup,
            overlap_policy=overlap_policy,
            jitter_s=jitter_s,
            metadata=metadata,
        )
        return await self._call("POST", "/v1/schedules", ScheduleOut, body=spec.to_body())

    async def get_schedule(self, schedule_id: ScheduleRef) -> Schedule:
        """The schedule (``GET /v1/schedules/{id}``); :class:`NotFound` if there is none."""
        return await self._call("GET", _schedule_path(schedule_id), ScheduleOut)

    async def list_schedules(
        self,
        *,
        paused: bool | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> SchedulePage:
        """One page of schedules, newest first (``GET /v1/schedules``).

        ``paused`` keeps only paused (True) or active (False) ones; ``name`` is a name prefix.
        Pass the page's ``next_cursor`` as ``cursor`` for the next page; it is None on the
        last one.
        """
        params: list[tuple[str, str]] = []
        if paused is not None:
            params.append(("paused", "true" if paused else "false"))
        for key, text in (("name", name), ("cursor", cursor)):
            if text is not None:
                params.append((key, text))
        if limit is not None:
            params.append(("limit", str(limit)))
        return await self._call("GET", "/v1/schedules", ScheduleList, params=params)

    async def iter_schedules(
        self,
        *,
        paused: bool | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Schedule]:
        """Every matching schedule, newest first, fetching pages of ``limit`` as it goes."""
        while True:
            page = await self.list_schedules(paused=paused, name=name, limit=limit, cursor=cursor)
            for schedule in page.items:
                yield schedule
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def update_schedule(self, schedule_id: ScheduleRef, **changes: Any) -> Schedule:
        """Change a schedule (``PATCH /v1/schedules/{id}``); needs the ``admin`` role.

        Only the keyword arguments given are sent, with the names and value types of
        :meth:`create_schedule` (None is sent as null: it clears an optional field such as
        ``end_at``). Setting any rule field (``cron``, ``interval_s``, ``preset``, ``at``,
        ``weekday``, ``day_of_month``) replaces the whole rule, and ``task`` replaces the
        whole template. An unknown keyword is a TypeError, raised before anything is sent.
        """
        body = _patch_body(changes)
        return await self._call("PATCH", _schedule_path(schedule_id), ScheduleOut, body=body)

    async def delete_schedule(self, schedule_id: ScheduleRef) -> None:
        """Delete a schedule (``DELETE /v1/schedules/{id}``); its occurrences that have not
        started are cancelled. Needs the ``admin`` role; :class:`NotFound` if there is none."""
        await self._call_no_content("DELETE", _schedule_path(schedule_id))

    async def pause_schedule(self, schedule_id: ScheduleRef) -> Schedule:
        """Pause (``POST /v1/schedules/{id}/pause``): no new occurrences, and those made ahead
        that have not started are taken back. Needs the ``admin`` role."""
        return await self._call("POST", f"{_schedule_path(schedule_id)}/pause", ScheduleOut)

    async def resume_schedule(self, schedule_id: ScheduleRef) -> Schedule:
        """Resume (``POST /v1/schedules/{id}/resume``); occurrences missed while paused follow
        the schedule's misfire policy. Needs the ``admin`` role."""
        return await self._call("POST", f"{_schedule_path(schedule_id)}/resume", ScheduleOut)

    async def preview_schedule(self, schedule_id: ScheduleRef, count: int = 5) -> SchedulePreview:
        """The schedule's next ``count`` occurrences, in UTC and in its zone
        (``GET /v1/schedules/{id}/preview``)."""
        return await self._call(
            "GET",
            f"{_schedule_path(schedule_id)}/preview",
            SchedulePreview,
            params=[("count", str(count))],
        )

    async def preview_schedule_body(
        self,
        name: str,
        *,
        task: TaskSpec | Mapping[str, Any],
        cron: str | None = None,
        interval_s: float | None = None,
        preset: str | None = None,
        at: time | str | None = None,
        weekday: int | None = None,
        day_of_month: int | None = None,
        timezone: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        paused: bool | None = None,
        exclusions: Mapping[str, Any] | None = None,
        misfire_policy: str | None = None,
        misfire_grace_s: float | None = None,
        max_catchup: int | None = None,
        overlap_policy: str | None = None,
        jitter_s: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        count: int = 5,
    ) -> SchedulePreview:
        """Validate a schedule and preview its next ``count`` occurrences without saving it
        (``POST /v1/schedules/preview``); the arguments are those of :meth:`create_schedule`,
        and the errors too (but a taken name is no conflict here)."""
        spec = ScheduleSpec(
            name=name,
            task=task,
            cron=cron,
            interval_s=interval_s,
            preset=preset,
            at=at,
            weekday=weekday,
            day_of_month=day_of_month,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            paused=paused,
            exclusions=exclusions,
            misfire_policy=misfire_policy,
            misfire_grace_s=misfire_grace_s,
            max_catchup=max_catchup,
            overlap_policy=overlap_policy,
            jitter_s=jitter_s,
            metadata=metadata,
        )
        return await self._call(
            "POST",
            "/v1/schedules/preview",
            SchedulePreview,
            body=spec.to_body(),
            params=[("count", str(count))],
        )

    async def schedule_tasks(
        self, schedule_id: ScheduleRef, *, limit: int | None = None, cursor: str | None = None
    ) -> TaskPage:
        """One page of the schedule's occurrences (tasks), newest first
        (``GET /v1/schedules/{id}/tasks``); pass ``next_cursor`` as ``cursor`` for the next."""
        params: list[tuple[str, str]] = []
        if limit is not None:
            params.append(("limit", str(limit)))
        if cursor is not None:
            params.append(("cursor", cursor))
        return await self._call(
            "GET", f"{_schedule_path(schedule_id)}/tasks", TaskList, params=params
        )

    # -- health --------------------------------------------------------------------------

    async def health(self) -> bool:
        """Liveness (``GET /healthz``): True when the daemon answers ok. An unreachable
        daemon, or any other answer, is False rather than an exception."""
        try:
            status, _, raw = await self._send("GET", "/healthz")
        except SchedulerUnavailable:
            return False
        if status != 200:
            return False
        try:
            return Health.model_validate_json(raw).status == "ok"
        except ValidationError:
            return False

    async def ready(self) -> tuple[bool, list[str]]:
        """Readiness (``GET /readyz``): ``(True, [])``, or ``(False, reasons)`` while the
        daemon drains, its database is down or a component stalled. An unreachable daemon is
        ``(False, [why])`` rather than an exception."""
        try:
            status, reason, raw = await self._send("GET", "/readyz")
        except SchedulerUnavailable as exc:
            return False, [exc.detail or exc.title]
        try:
            readiness = Readiness.model_validate_json(raw)
        except ValidationError:
            return False, [f"HTTP {status} {reason or ''}".rstrip()]
        if status == 200 and readiness.status == "ready":
            return True, []
        return False, list(readiness.reasons or [f"HTTP {status}"])


def _task_path(task_id: TaskRef) -> str:
    return f"/v1/tasks/{quote(_id_of(task_id), safe='')}"


def _schedule_path(schedule_id: ScheduleRef) -> str:
    if isinstance(schedule_id, ScheduleOut):
        text = str(schedule_id.id)
    elif isinstance(schedule_id, uuid.UUID):
        text = str(schedule_id)
    elif not schedule_id:
        raise ValueError("schedule id must not be empty")
    else:
        text = schedule_id
    return f"/v1/schedules/{quote(text, safe='')}"


def _time_param(value: datetime, name: str) -> str:
    text = _jsonable(value, name)
    assert isinstance(text, str)
    return text


def _list_params(
    *,
    status: str | Iterable[str] | None,
    action: str | None,
    queue: str | None,
    schedule_id: uuid.UUID | str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    run_after: datetime | None,
    run_before: datetime | None,
    limit: int | None,
    cursor: str | None,
) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        params.extend(("status", str(s)) for s in statuses)
    for key, text in (("action", action), ("queue", queue), ("cursor", cursor)):
        if text is not None:
            params.append((key, text))
    if schedule_id is not None:
        params.append(("schedule_id", str(schedule_id)))
    for key, when in (
        ("created_after", created_after),
        ("created_before", created_before),
        ("run_after", run_after),
        ("run_before", run_before),
    ):
        if when is not None:
            params.append((key, _time_param(when, key)))
    if limit is not None:
        params.append(("limit", str(limit)))
    return params


def _parse(model: type[_M], status: int, raw: bytes, what: str) -> _M:
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        snippet = " ".join(raw.decode("utf-8", errors="replace").split())[:_DETAIL_SNIPPET]
        raise SchedulerError(
            status,
            "Unexpected response",
            f"{what}: the answer is not a {model.__name__}: {exc.__class__.__name__}: {snippet}",
        ) from exc
