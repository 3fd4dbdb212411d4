"""Dead letters: tasks that failed for good. List them, re-queue them, or discard them."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scheduler_daemon.actions.base import FieldError
from scheduler_daemon.api.context import context
from scheduler_daemon.api.problems import from_validation, invalid
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.schemas import NAME_PATTERN, TaskList
from scheduler_daemon.api.tasks import json_response, page_response, read_json, redacted_headers
from scheduler_daemon.domain.errors import InvalidCursor
from scheduler_daemon.domain.models import TaskStatus
from scheduler_daemon.store.base import TaskFilter

MAX_SELECTION = 10_000


class DeadLetterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN)
    queue: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN)
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


class DeadLetterSelection(BaseModel):
    """Which failed tasks: ``ids``, or every one matching ``action`` and/or ``queue``
    (``all: true`` for every failed task); at most 10,000 a call."""

    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=MAX_SELECTION)
    action: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN)
    queue: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN)
    all: bool = False

    @model_validator(mode="after")
    def _something(self) -> DeadLetterSelection:
        if self.ids is None and self.action is None and self.queue is None and not self.all:
            raise ValueError("give ids, a filter (action, queue), or all: true")
        return self


class DeadLetterResult(BaseModel):
    count: int
    ids: list[uuid.UUID]


async def list_dead_letters(request: web.Request) -> web.Response:
    try:
        query = DeadLetterQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise from_validation(exc) from None
    flt = TaskFilter(statuses=(TaskStatus.FAILED,), action=query.action, queue=query.queue)
    try:
        page = await context(request).store.list_tasks(flt, query.limit, query.cursor)
    except InvalidCursor as exc:
        raise invalid([FieldError("cursor", str(exc))]) from None
    return page_response(page, redacted_headers(request))


async def _selection(request: web.Request) -> DeadLetterSelection:
    data: Any = await read_json(request)
    try:
        return DeadLetterSelection.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def retry_dead_letters(request: web.Request) -> web.Response:
    sel = await _selection(request)
    ids = await context(request).store.retry_dead_letters(
        sel.ids, sel.action, sel.queue, MAX_SELECTION
    )
    return json_response(DeadLetterResult(count=len(ids), ids=ids))


async def discard_dead_letters(request: web.Request) -> web.Response:
    sel = await _selection(request)
    ids = await context(request).store.discard_dead_letters(
        sel.ids, sel.action, sel.queue, MAX_SELECTION
    )
    return json_response(DeadLetterResult(count=len(ids), ids=ids))


_DONE = Response("what was done", DeadLetterResult)

ROUTES = [
    Route(
        "GET",
        "/v1/dead-letters",
        list_dead_letters,
        "listDeadLetters",
        "Failed tasks (attempts used up, or a failure not worth retrying), newest first",
        "dead-letters",
        "read",
        {200: Response("a page of failed tasks, each with its last_error", TaskList)},
        query=DeadLetterQuery,
        errors=(422,),
    ),
    Route(
        "POST",
        "/v1/dead-letters/retry",
        retry_dead_letters,
        "retryDeadLetters",
        "Re-queue failed tasks, each as a new attempt series",
        "dead-letters",
        "admin",
        {200: _DONE},
        body=DeadLetterSelection,
        errors=(400, 413, 422),
    ),
    Route(
        "DELETE",
        "/v1/dead-letters",
        discard_dead_letters,
        "discardDeadLetters",
        "Delete failed tasks and their attempts",
        "dead-letters",
        "admin",
        {200: _DONE},
        body=DeadLetterSelection,
        errors=(400, 413, 422),
    ),
]
