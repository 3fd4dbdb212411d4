"""A development stand-in for EventBridge Scheduler's firing of one-time ``at()`` schedules.

moto stores schedules but never runs them. ``EventBridgeEmulator`` polls the schedule groups on
a (moto) endpoint and, when an enabled ``at(yyyy-mm-ddThh:mm:ss)`` schedule is due, sends its
``Target.Input`` to its SQS target, then honours ``ActionAfterCompletion`` (``DELETE`` deletes
the schedule; ``NONE`` keeps it, and the emulator remembers that it fired). Only SQS targets are
supported. It is for local endpoints only: never point it at real AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler_daemon.aws.clients import (
    AWS_ERRORS,
    error_code,
    queue_url_from_arn,
    scheduler_client,
    sqs_client,
)
from scheduler_daemon.logs import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_scheduler import EventBridgeSchedulerClient
    from types_aiobotocore_scheduler.type_defs import (
        GetScheduleOutputTypeDef,
        ScheduleSummaryTypeDef,
    )
    from types_aiobotocore_sqs import SQSClient

log = get_logger("emulator")

_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)")
_PAGE_SIZE = 100  # ListSchedules' and ListScheduleGroups' maximum

# A schedule version: its ARN and LastModificationDate (every update changes the latter).
_Key = tuple[str, datetime | None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Plan:
    """What one schedule version does, read once with GetSchedule."""

    group: str
    name: str
    due_at: datetime  # the at() time in UTC
    start: datetime | None
    end: datetime | None
    target_arn: str
    body: str
    message_group_id: str | None
    delete_after: bool
    fired: bool = False


class EventBridgeEmulator:
    """Fires due one-time schedules of ``groups`` (None: every group) into their SQS targets.

    Use as ``async with EventBridgeEmulator(...) as emulator:`` (which opens the AWS clients),
    then ``await emulator.tick()`` for one pass or ``await emulator.run()`` to poll every
    ``interval_s`` until cancelled. ``early_s`` delivers that many seconds before the at() time
    (EventBridge fires anywhere within the minute); ``now`` returns the current time, tz-aware.
    """

    def __init__(
        self,
        region: str,
        endpoint_url: str,
        groups: Sequence[str] | None = None,
        *,
        interval_s: float = 1.0,
        early_s: float = 0.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not endpoint_url:
            raise ValueError("the emulator needs a local endpoint URL; it never runs against AWS")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        if early_s < 0:
            raise ValueError(f"early_s must not be negative, got {early_s}")
        self.region = region
        self.endpoint_url = endpoint_url
        self.groups: tuple[str, ...] | None = None if groups is None else tuple(groups)
        self.interval_s = interval_s
        self.early_s = early_s
        self.delivered_total = 0
        self._now = now
        self._plans: dict[_Key, _Plan] = {}
        self._ignored: set[_Key] = set()  # versions that will never fire (reason logged once)
        self._stack: contextlib.AsyncExitStack | None = None
        self._scheduler: EventBridgeSchedulerClient | None = None
        self._sqs: SQSClient | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            self._scheduler = await stack.enter_async_context(
                scheduler_client(self.region, self.endpoint_url)
            )
            self._sqs = await stack.enter_async_context(sqs_client(self.region, self.endpoint_url))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._scheduler = self._sqs = None
        if stack is not None:
            await stack.aclose()

    def _clients(self) -> tuple[EventBridgeSchedulerClient, SQSClient]:
        if self._scheduler is None or self._sqs is None:
            raise RuntimeError("use the emulator as 'async with EventBridgeEmulator(...)'")
        return self._scheduler, self._sqs

    # -- polling ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every ``interval_s`` until cancelled; a failed pass is logged, never raised."""
        log.info(
            "emulator_started",
            endpoint_url=self.endpoint_url,
            groups=list(self.groups) if self.groups is not None else "all",
            interval_s=self.interval_s,
            early_s=self.early_s,
        )
        try:
            while True:
                try:
                    await self.tick()
                except AWS_ERRORS as exc:
                    log.warning("emulator_tick_failed", error=str(exc), code=error_code(exc))
                except Exception:
                    log.exception("emulator_tick_crashed")
                await asyncio.sleep(self.interval_s)
        finally:
            log.info("emulator_stopped", delivered_total=self.delivered_total)

    async def tick(self) -> list[str]:
        """One pass over the groups: deliver every due schedule; return the names delivered.

        Listing the groups may raise (an AWS error); a failure with one group or schedule is
        logged and that one is tried again next tick.
        """
        scheduler, _ = self._clients()
        groups = self.groups if self.groups is not None else await self._all_groups()
        delivered: list[str] = []
        seen: set[_Key] = set()
        complete = True
        for group in groups:
            try:
                summaries = await self._list_schedules(group)
            except AWS_ERRORS as exc:
                complete = False
                log.warning(
                    "emulator_list_failed", group=group, error=str(exc), code=error_code(exc)
                )
                continue
            for summary in summaries:
                if summary.get("State") != "ENABLED" or "Name" not in summary:
                    continue
                key: _Key = (summary.get("Arn", ""), summary.get("LastModificationDate"))
                seen.add(key)
                try:
                    if await self._process(scheduler, group, summary["Name"], key):
                        delivered.append(summary["Name"])
                except AWS_ERRORS as exc:
                    log.warning(
                        "emulator_schedule_failed",
                        group=group,
                        schedule=summary["Name"],
                        error=str(exc),
                        code=error_code(exc),
                    )
        if complete:  # forget schedule versions that are gone (deleted, updated, disabled)
            self._plans = {k: v for k, v in self._plans.items() if k in seen}
            self._ignored &= seen
        return delivered

    async def _all_groups(self) -> list[str]:
        scheduler, _ = self._clients()
        names: list[str] = []
        token: str | None = None
        while True:
            if token:
                page = await scheduler.list_schedule_groups(MaxResults=_PAGE_SIZE, NextToken=token)
            else:
                page = await scheduler.list_schedule_groups(MaxResults=_PAGE_SIZE)
            names.extend(g["Name"] for g in page.get("ScheduleGroups", []) if "Name" in g)
            token = page.get("NextToken")
            if not token:
                return names

    async def _list_schedules(self, group: str) -> list[ScheduleSummaryTypeDef]:
        scheduler, _ = self._clients()
        summaries: list[ScheduleSummaryTypeDef] = []
        token: str | None = None
        while True:
            if token:
                page = await scheduler.list_schedules(
                    GroupName=group, MaxResults=_PAGE_SIZE, NextToken=token
                )
            else:
                page = await scheduler.list_schedules(GroupName=group, MaxResults=_PAGE_SIZE)
            summaries.extend(page.get("Schedules", []))
            token = page.get("NextToken")
            if not token:
                return summaries

    # -- one schedule ----------------------------------------------------------------------

    async def _process(
        self, scheduler: EventBridgeSchedulerClient, group: str, name: str, key: _Key
    ) -> bool:
        """Deliver this schedule version if due and not delivered yet; True when delivered."""
        if key in self._ignored:
            return False
        plan = self._plans.get(key)
        if plan is None:
            detail = await scheduler.get_schedule(GroupName=group, Name=name)
            plan = self._plan(detail, key)
            if plan is None:
                self._ignored.add(key)
                return False
            self._plans[key] = plan
        if plan.fired:  # delivered before; only a DELETE that failed may be left to do
            if plan.delete_after:
                await self._delete(scheduler, plan)
            return False
        now = self._now()
        if plan.due_at - timedelta(seconds=self.early_s) > now:
            return False
        if plan.start is not None and now < plan.start:
            return False
        if plan.end is not None and now > plan.end:
            log.warning(
                "emulator_schedule_expired", group=group, schedule=name, end=plan.end.isoformat()
            )
            self._ignored.add(key)
            return False
        if not await self._deliver(plan):
            return False
        plan.fired = True
        self.delivered_total += 1
        log.info(
            "schedule_delivered",
            group=group,
            schedule=name,
            due_at=plan.due_at.isoformat(),
            ahead_s=round((plan.due_at - now).total_seconds(), 3),
        )
        if plan.delete_after:
            try:
                await self._delete(scheduler, plan)
            except AWS_ERRORS as exc:  # delivered all the same; the delete is retried next tick
                log.warning(
                    "emulator_delete_failed",
                    group=group,
                    schedule=name,
                    error=str(exc),
                    code=error_code(exc),
                )
        return True

    def _plan(self, detail: GetScheduleOutputTypeDef, key: _Key) -> _Plan | None:
        """The schedule as a plan, or None (reason logged) when the emulator won't fire it."""
        group, name = detail.get("GroupName", "default"), detail.get("Name", "")
        if detail.get("State") != "ENABLED":
            return None
        expression = detail.get("ScheduleExpression", "")
        match = _AT.fullmatch(expression)
        if match is None:
            log.debug("emulator_not_one_time", group=group, schedule=name, expression=expression)
            return None
        tz_name = detail.get("ScheduleExpressionTimezone") or "UTC"
        try:
            tz = ZoneInfo(tz_name)
            local = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")  # noqa: DTZ007
        except (ZoneInfoNotFoundError, ValueError) as exc:
            log.warning("emulator_bad_expression", group=group, schedule=name, error=str(exc))
            return None
        target = detail.get("Target")
        if not target:
            log.warning("emulator_no_target", group=group, schedule=name)
            return None
        target_arn = target.get("Arn", "")
        try:
            queue_url_from_arn(target_arn, self.endpoint_url)
        except ValueError:
            log.warning(
                "emulator_unsupported_target", group=group, schedule=name, target=target_arn
            )
            return None
        return _Plan(
            group=group,
            name=name,
            due_at=local.replace(tzinfo=tz).astimezone(UTC),
            start=detail.get("StartDate"),
            end=detail.get("EndDate"),
            target_arn=target_arn,
            body=target.get("Input", "{}"),
            message_group_id=target.get("SqsParameters", {}).get("MessageGroupId"),
            delete_after=detail.get("ActionAfterCompletion") == "DELETE",
        )

    async def _deliver(self, plan: _Plan) -> bool:
        _, sqs = self._clients()
        queue_url = queue_url_from_arn(plan.target_arn, self.endpoint_url)
        try:
            if plan.message_group_id is not None:
                await sqs.send_message(
                    QueueUrl=queue_url, MessageBody=plan.body, MessageGroupId=plan.message_group_id
                )
            else:
                await sqs.send_message(QueueUrl=queue_url, MessageBody=plan.body)
        except AWS_ERRORS as exc:
            log.warning(
                "emulator_delivery_failed",
                group=plan.group,
                schedule=plan.name,
                queue_url=queue_url,
                error=str(exc),
                code=error_code(exc),
            )
            return False
        return True

    async def _delete(self, scheduler: EventBridgeSchedulerClient, plan: _Plan) -> None:
        try:
            await scheduler.delete_schedule(GroupName=plan.group, Name=plan.name)
        except AWS_ERRORS as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
        plan.delete_after = False


async def run_until_signalled(emulator: EventBridgeEmulator) -> int:
    """Run ``emulator`` until SIGINT or SIGTERM; 0 once it stopped."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with emulator:
            runner = asyncio.create_task(emulator.run(), name="eventbridge-emulator")
            stopper = asyncio.create_task(stop.wait(), name="eventbridge-emulator-stop")
            await asyncio.wait((runner, stopper), return_when=asyncio.FIRST_COMPLETED)
            for task in (runner, stopper):
                task.cancel()
            for task in (runner, stopper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0
