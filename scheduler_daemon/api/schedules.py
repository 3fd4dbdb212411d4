"""Schedule routes: create, list, read, change, delete, pause, resume, preview, occurrences."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ValidationError

from scheduler_daemon.actions.base import FieldError
from scheduler_daemon.api.context import ApiContext, context
from scheduler_daemon.api.problems import Problem, from_validation, invalid
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.schedule_schemas import (
    ListSchedulesQuery,
    Occurrence,
    PreviewQuery,
    ScheduleIn,
    ScheduleList,
    ScheduleOut,
    SchedulePatch,
    SchedulePreview,
    ScheduleTasksQuery,
)
from scheduler_daemon.api.schemas import CreateTask, TaskList
from scheduler_daemon.api.tasks import (
    json_response,
    page_response,
    read_json,
    redacted_headers,
    to_new_task,
)
from scheduler_daemon.domain.describe import describe
from scheduler_daemon.domain.errors import InvalidCursor
from scheduler_daemon.domain.recurrence import (
    Blackout,
    DailyWindow,
    Exclusions,
    Recurrence,
    RuleError,
    next_occurrence,
    preview,
    validate,
)
from scheduler_daemon.domain.schedules import Schedule, TaskTemplate, expand_at
from scheduler_daemon.store.base import ScheduleStore, TaskFilter
from scheduler_daemon.store.schedules import ScheduleNameTaken

SCHEDULE_ID = {"schedule_id": "the schedule's id (a UUID)"}
RULE_FIELDS = ("cron", "interval_s", "preset", "at", "weekday", "day_of_month")


def _store(ctx: ApiContext) -> ScheduleStore:
    assert ctx.schedules is not None, "the schedule store is not configured"
    return ctx.schedules


def _id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["schedule_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(
            404,
            "Schedule not found",
            f"no schedule with id {raw!r}",
            [FieldError("schedule_id", "not a schedule id (a UUID)")],
        ) from None


def _not_found(schedule_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "Schedule not found",
        f"no schedule with id {schedule_id}",
        [FieldError("schedule_id", "no such schedule")],
    )


def _now() -> datetime:
    # Only to validate and preview rules; everything stored is compared on the database clock.
    return datetime.now(UTC)


def _parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise invalid([FieldError("body", "expected a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _recurrence(body: ScheduleIn) -> Recurrence:
    ex = body.exclusions
    return Recurrence(
        cron=body.cron,
        interval_s=body.interval_s,
        preset=body.preset,
        at=body.at,
        weekday=body.weekday,
        day_of_month=body.day_of_month,
        timezone=body.timezone,
        start_at=body.start_at,
        end_at=body.end_at,
        exclusions=Exclusions(
            windows=tuple(Blackout(w.start, w.end) for w in ex.windows),
            daily=tuple(DailyWindow(w.start, w.end) for w in ex.daily),
            dates=tuple(ex.dates),
        ),
        anchor=body.start_at if body.interval_s is not None else None,
    )


def _rule_problem(exc: RuleError) -> Problem:
    """A 422 naming the rule's field; also for EvaluationLimit, a rule too costly to
    evaluate (its next occurrences could not be found within the step bound)."""
    return invalid([FieldError(exc.field, exc.message)])


def _checked(rule: Recurrence, now: datetime) -> Recurrence:
    if rule.interval_s is not None and rule.anchor is None:
        rule = replace(rule, anchor=now)  # an interval with no start counts from now
    try:
        validate(rule, now)
    except RuleError as exc:
        raise _rule_problem(exc) from None
    return rule


def _first(rule: Recurrence, now: datetime) -> datetime | None:
    """The next run of a validated rule; a 422 if even that is too costly to find."""
    try:
        return next_occurrence(rule, now, inclusive=True)
    except RuleError as exc:
        raise _rule_problem(exc) from None


def _template(ctx: ApiContext, body: ScheduleIn) -> TaskTemplate:
    t = body.task
    as_task = CreateTask(
        action=t.action,
        payload=t.payload,
        queue=t.queue,
        priority=t.priority,
        max_attempts=t.max_attempts,
        retry=t.retry,
        timeout_s=t.timeout_s,
        metadata=t.metadata,
    )
    task = to_new_task(ctx, as_task, prefix="task")
    return TaskTemplate(
        action=task.action,
        payload=task.payload,
        queue=task.queue,
        priority=task.priority,
        max_attempts=task.max_attempts,
        retry_base_s=task.retry_base_s,
        retry_cap_s=task.retry_cap_s,
        timeout_s=task.timeout_s,
        metadata=task.metadata,
    )


def build_schedule(
    ctx: ApiContext, body: ScheduleIn, now: datetime, base: Schedule | None = None
) -> Schedule:
    """The schedule a body describes, validated, with its next run (kept from ``base`` when
    the rule did not change, so that a paused schedule still catches up by its policy)."""
    rule = _checked(_recurrence(body), now)
    if base is not None and base.recurrence.interval_s == rule.interval_s and rule.interval_s:
        rule = replace(rule, anchor=base.recurrence.anchor or rule.anchor)
    same_rule = base is not None and base.recurrence == rule
    next_run_at = base.next_run_at if base is not None and same_rule else _first(rule, now)
    schedule = Schedule(
        id=base.id if base is not None else uuid.uuid4(),
        name=body.name,
        recurrence=rule,
        template=_template(ctx, body),
        misfire_policy=body.misfire_policy,
        misfire_grace_s=body.misfire_grace_s,
        max_catchup=body.max_catchup,
        overlap_policy=body.overlap_policy,
        jitter_s=body.jitter_s,
        paused=body.paused,
        metadata=body.metadata,
        next_run_at=next_run_at,
        last_task_id=base.last_task_id if base is not None else None,
        from_task=base.from_task if base is not None else False,
    )
    horizon = ctx.settings().expander.horizon_s
    return replace(schedule, expand_at=expand_at(schedule.overlap_policy, next_run_at, horizon))


def _as_body(s: Schedule) -> dict[str, Any]:
    data = ScheduleOut.of(s).model_dump(mode="json")
    for key in ("id", "next_run_at", "created_at", "updated_at", "description"):
        data.pop(key)
    task = data["task"]
    # The template's delays go back in as its retry policy (max_attempts stays top-level).
    retry = {"base_s": task.pop("retry_base_s"), "cap_s": task.pop("retry_cap_s")}
    task["retry"] = {k: v for k, v in retry.items() if v is not None} or None
    return data


def _patched(current: Schedule, patch: SchedulePatch) -> ScheduleIn:
    data = _as_body(current)
    changes = patch.model_dump(mode="json", exclude_unset=True)
    if any(field in changes for field in RULE_FIELDS):
        for field in RULE_FIELDS:  # a new rule replaces the old one whole
            data[field] = None
    data.update(changes)
    parsed: ScheduleIn = _parse(ScheduleIn, data)
    return parsed


def _name_taken(exc: ScheduleNameTaken) -> Problem:
    return Problem(409, "Schedule name taken", str(exc), [FieldError("name", "already used")])


async def create_schedule(request: web.Request) -> web.Response:
    ctx = context(request)
    body: ScheduleIn = _parse(ScheduleIn, await read_json(request))
    schedule = build_schedule(ctx, body, _now())
    try:
        created, _ = await _store(ctx).create_schedule(schedule)
    except ScheduleNameTaken as exc:
        raise _name_taken(exc) from None
    return json_response(
        ScheduleOut.of(created), status=201, headers={"Location": f"/v1/schedules/{created.id}"}
    )


async def list_schedules(request: web.Request) -> web.Response:
    query: ListSchedulesQuery = _parse(ListSchedulesQuery, dict(request.query))
    try:
        page = await _store(context(request)).list_schedules(
            paused=query.paused, name=query.name, limit=query.limit, cursor=query.cursor
        )
    except InvalidCursor as exc:
        raise invalid([FieldError("cursor", str(exc))]) from None
    return json_response(
        ScheduleList(items=[ScheduleOut.of(s) for s in page.items], next_cursor=page.next_cursor)
    )


async def get_schedule(request: web.Request) -> web.Response:
    schedule_id = _id(request)
    schedule = await _store(context(request)).get_schedule(schedule_id)
    if schedule is None:
        raise _not_found(schedule_id)
    return json_response(ScheduleOut.of(schedule))


async def patch_schedule(request: web.Request) -> web.Response:
    ctx = context(request)
    schedule_id = _id(request)
    patch: SchedulePatch = _parse(SchedulePatch, await read_json(request))
    now = _now()

    def change(current: Schedule) -> Schedule:
        return build_schedule(ctx, _patched(current, patch), now, base=current)

    try:
        updated = await _store(ctx).update_schedule(schedule_id, change)
    except ScheduleNameTaken as exc:
        raise _name_taken(exc) from None
    if updated is None:
        raise _not_found(schedule_id)
    return json_response(ScheduleOut.of(updated))


async def delete_schedule(request: web.Request) -> web.Response:
    schedule_id = _id(request)
    if not await _store(context(request)).delete_schedule(schedule_id):
        raise _not_found(schedule_id)
    return web.Response(status=204)


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    schedule_id = _id(request)
    schedule = await _store(context(request)).set_paused(schedule_id, paused)
    if schedule is None:
        raise _not_found(schedule_id)
    return json_response(ScheduleOut.of(schedule))


async def pause_schedule(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume_schedule(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


def _preview(rule: Recurrence, count: int, now: datetime) -> SchedulePreview:
    zone = ZoneInfo(rule.timezone)
    try:
        times = preview(rule, now, count)
    except RuleError as exc:
        raise _rule_problem(exc) from None
    return SchedulePreview(
        timezone=rule.timezone,
        occurrences=[Occurrence(utc=t, local=t.astimezone(zone)) for t in times],
        description=describe(rule),
    )


async def preview_schedule(request: web.Request) -> web.Response:
    schedule_id = _id(request)
    query: PreviewQuery = _parse(PreviewQuery, dict(request.query))
    schedule = await _store(context(request)).get_schedule(schedule_id)
    if schedule is None:
        raise _not_found(schedule_id)
    return json_response(_preview(schedule.recurrence, query.count, _now()))


async def preview_body(request: web.Request) -> web.Response:
    ctx = context(request)
    data = await read_json(request)
    count_raw = request.query.get("count")
    query: PreviewQuery = _parse(PreviewQuery, {} if count_raw is None else {"count": count_raw})
    body: ScheduleIn = _parse(ScheduleIn, data)
    now = _now()
    schedule = build_schedule(ctx, body, now)
    return json_response(_preview(schedule.recurrence, query.count, now))


async def schedule_tasks(request: web.Request) -> web.Response:
    ctx = context(request)
    schedule_id = _id(request)
    if await _store(ctx).get_schedule(schedule_id) is None:
        raise _not_found(schedule_id)
    query: ScheduleTasksQuery = _parse(ScheduleTasksQuery, dict(request.query))
    try:
        page = await ctx.store.list_tasks(
            TaskFilter(schedule_id=schedule_id), query.limit, query.cursor
        )
    except InvalidCursor as exc:
        raise invalid([FieldError("cursor", str(exc))]) from None
    return page_response(page, redacted_headers(request))


_ONE = Response("the schedule", ScheduleOut)
_ERRORS = (400, 404, 409, 413, 422)

ROUTES = [
    Route(
        "POST",
        "/v1/schedules",
        create_schedule,
        "createSchedule",
        "Create a schedule",
        "schedules",
        "admin",
        {201: Response("created", ScheduleOut)},
        body=ScheduleIn,
        errors=(400, 409, 413, 422),
    ),
    Route(
        "GET",
        "/v1/schedules",
        list_schedules,
        "listSchedules",
        "List schedules, newest first",
        "schedules",
        "read",
        {200: Response("a page of schedules", ScheduleList)},
        query=ListSchedulesQuery,
        errors=(422,),
    ),
    Route(
        "POST",
        "/v1/schedules/preview",
        preview_body,
        "previewScheduleBody",
        "Validate a schedule body and preview its next occurrences, without saving",
        "schedules",
        "read",
        {200: Response("the next occurrences", SchedulePreview)},
        body=ScheduleIn,
        query=PreviewQuery,
        errors=(400, 413, 422),
    ),
    Route(
        "GET",
        "/v1/schedules/{schedule_id}",
        get_schedule,
        "getSchedule",
        "Get a schedule",
        "schedules",
        "read",
        {200: _ONE},
        path_params=SCHEDULE_ID,
        errors=(404,),
    ),
    Route(
        "PATCH",
        "/v1/schedules/{schedule_id}",
        patch_schedule,
        "updateSchedule",
        "Change a schedule",
        "schedules",
        "admin",
        {200: _ONE},
        body=SchedulePatch,
        path_params=SCHEDULE_ID,
        errors=_ERRORS,
    ),
    Route(
        "DELETE",
        "/v1/schedules/{schedule_id}",
        delete_schedule,
        "deleteSchedule",
        "Delete a schedule; its occurrences that have not started are cancelled",
        "schedules",
        "admin",
        {204: Response("deleted")},
        path_params=SCHEDULE_ID,
        errors=(404,),
    ),
    Route(
        "POST",
        "/v1/schedules/{schedule_id}/pause",
        pause_schedule,
        "pauseSchedule",
        "Pause: no new occurrences",
        "schedules",
        "admin",
        {200: _ONE},
        path_params=SCHEDULE_ID,
        errors=(404,),
    ),
    Route(
        "POST",
        "/v1/schedules/{schedule_id}/resume",
        resume_schedule,
        "resumeSchedule",
        "Resume; missed occurrences follow the misfire policy",
        "schedules",
        "admin",
        {200: _ONE},
        path_params=SCHEDULE_ID,
        errors=(404,),
    ),
    Route(
        "GET",
        "/v1/schedules/{schedule_id}/preview",
        preview_schedule,
        "previewSchedule",
        "The next occurrences, in UTC and in the schedule's zone",
        "schedules",
        "read",
        {200: Response("the next occurrences", SchedulePreview)},
        query=PreviewQuery,
        path_params=SCHEDULE_ID,
        errors=(404, 422),
    ),
    Route(
        "GET",
        "/v1/schedules/{schedule_id}/tasks",
        schedule_tasks,
        "listScheduleTasks",
        "The schedule's occurrences (tasks), newest first",
        "schedules",
        "read",
        {200: Response("a page of tasks", TaskList)},
        path_params=SCHEDULE_ID,
        errors=(404, 422),
    ),
]
