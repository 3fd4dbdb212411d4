"""Prometheus metrics: one ``Metrics`` per daemon, on its own registry (never the global one),
so that tests can build several side by side.

The engine and the API record into it; gauges that describe the present (executor slots, pool
connections, due tasks) are read when ``/metrics`` is scraped. Every metric is listed with its
labels in the README's Metrics section: the names are a contract.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import AttemptResult, ClaimedTask, Outcome
from scheduler_daemon.logs import get_logger
from scheduler_daemon.stats import Activity

# Attempt durations: a few milliseconds (noop, log) up to the ten-minute timeouts.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# Lag from due to claimed: about a millisecond when idle, minutes in a backlog.
LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
)  # fmt: skip
# HTTP handling: mostly one or two queries, a batch of 1,000 a few hundred milliseconds.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# How long a scrape waits for the due-task count before it reports the previous value.
DUE_QUERY_TIMEOUT_S = 1.0

UNMATCHED_ROUTE = "unmatched"

_log = get_logger("metrics")


def package_version() -> str:
    try:
        return metadata.version("scheduler-daemon")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class Metrics:
    """Every metric of one daemon, on ``self.registry``, and its recent ``activity`` minute by
    minute (for the dashboard), read on ``now`` (the system clock unless given)."""

    def __init__(
        self, version: str | None = None, *, now: Callable[[], datetime] | None = None
    ) -> None:
        self.activity = Activity(now or SystemClock().now)
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks_created = Counter(
            "scheduler_tasks_created",
            "Tasks created through the API (idempotent repeats not counted)",
            ["action", "queue"],
            registry=r,
        )
        self.tasks_claimed = Counter(
            "scheduler_tasks_claimed",
            "Attempts started: tasks claimed by this daemon",
            ["action", "queue"],
            registry=r,
        )
        self.tasks_finished = Counter(
            "scheduler_tasks_finished",
            "Attempts recorded by this daemon, by outcome (succeeded, failed, timed_out, lost)",
            ["action", "queue", "outcome"],
            registry=r,
        )
        self.task_duration = Histogram(
            "scheduler_task_duration_seconds",
            "Duration of recorded attempts",
            ["action"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.task_lag = Histogram(
            "scheduler_task_lag_seconds",
            "Time from a task's run_at to its claim, on the database's clock",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.tasks_due = Gauge(
            "scheduler_tasks_due",
            "Scheduled tasks that are due and not claimed (counted when scraped)",
            registry=r,
        )
        self.tasks_without_worker = Gauge(
            "scheduler_tasks_due_without_worker",
            "Due scheduled tasks whose action no running daemon can run (counted when scraped)",
            ["action"],
            registry=r,
        )
        self.executor_busy = Gauge("scheduler_executor_busy", "Executor slots in use", registry=r)
        self.executor_capacity = Gauge(
            "scheduler_executor_capacity", "Executor slots (executor.concurrency)", registry=r
        )
        self.db_pool_in_use = Gauge(
            "scheduler_db_pool_in_use", "Database pool connections checked out", registry=r
        )
        self.http_requests = Counter(
            "scheduler_http_requests",
            "HTTP requests, by route template and final status",
            ["route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "scheduler_http_request_duration_seconds",
            "HTTP request handling time, by route template",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        # The eventbridge backend.
        self.outbox_published = Counter(
            "scheduler_outbox_published",
            "Wake-ups AWS accepted, by kind (message, schedule, schedule_deleted)",
            ["kind"],
            registry=r,
        )
        self.outbox_errors = Counter(
            "scheduler_outbox_errors",
            "AWS calls of the publisher that failed (retried later), by AWS error code",
            ["code"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "scheduler_outbox_pending",
            "Wake-ups not yet published and schedules not yet deleted (counted when scraped)",
            registry=r,
        )
        self.sqs_messages = Counter(
            "scheduler_sqs_messages",
            "SQS messages received, by what became of them "
            "(claimed, held, stale, malformed, deferred)",
            ["result"],
            registry=r,
        )
        self.tasks_pruned = Counter(
            "scheduler_tasks_pruned",
            "Finished tasks deleted by retention (archived first with retention.archive)",
            registry=r,
        )
        self.config_reloads = Counter(
            "scheduler_config_reloads",
            "SIGHUP config reloads, by result (applied, unchanged, rejected)",
            ["result"],
            registry=r,
        )
        self.alerts = Counter(
            "scheduler_alerts",
            "Alerts by event and what became of them per channel "
            "(sent, suppressed, failed, dropped)",
            ["event", "result"],
            registry=r,
        )
        self.event_loop_lag = Gauge(
            "scheduler_event_loop_lag_seconds",
            "Event-loop lag measured by the watchdog's last check",
            registry=r,
        )
        self.build_info = Gauge(
            "scheduler_build_info", "Always 1; the version is a label", ["version"], registry=r
        )
        self.build_info.labels(version or package_version()).set(1)
        self._count_due: Callable[[], Awaitable[int]] | None = None
        self._count_outbox: Callable[[], Awaitable[int]] | None = None
        self._unrunnable: Callable[[], Awaitable[dict[str, int]]] | None = None
        self.due_timeout_s = DUE_QUERY_TIMEOUT_S

    # -- wiring: where the scrape-time gauges read from ------------------------------------

    def track_slots(self, in_use: Callable[[], float], capacity: Callable[[], float]) -> None:
        self.executor_busy.set_function(in_use)
        self.executor_capacity.set_function(capacity)

    def track_pool(self, in_use: Callable[[], float]) -> None:
        self.db_pool_in_use.set_function(in_use)

    def track_due(self, count_due: Callable[[], Awaitable[int]]) -> None:
        self._count_due = count_due

    def track_outbox(self, count_pending: Callable[[], Awaitable[int]]) -> None:
        self._count_outbox = count_pending

    def track_unrunnable(self, count: Callable[[], Awaitable[dict[str, int]]]) -> None:
        """``count``: due tasks no running daemon can run, by action."""
        self._unrunnable = count

    # -- recording --------------------------------------------------------------------------

    def created(self, tasks: Iterable[tuple[str, str]]) -> None:
        """Count newly created tasks, given as (action, queue) pairs."""
        for (action, queue), n in collections.Counter(tasks).items():
            self.tasks_created.labels(action, queue).inc(n)

    # Counted per label set, a batch at a time: a labels() lookup costs more than the count.

    def claimed(self, tasks: Iterable[ClaimedTask]) -> None:
        lags: list[float | None] = []
        claimed: collections.Counter[tuple[str, str]] = collections.Counter()
        observe = self.task_lag.observe
        for task in tasks:
            claimed[task.action, task.queue] += 1
            lag = None
            if task.claimed_at is not None:
                lag = lag_s(task.run_at, task.claimed_at)
                observe(lag)
            lags.append(lag)
        for (action, queue), n in claimed.items():
            self.tasks_claimed.labels(action, queue).inc(n)
        self.activity.started(lags)

    def finished(self, results: Iterable[AttemptResult]) -> None:
        """Count attempts whose results were written (applied, not fenced out)."""
        finished: collections.Counter[tuple[str, str, str]] = collections.Counter()
        durations: dict[str, Callable[[float], None]] = {}  # action -> its histogram's observe
        completed = 0
        for result in results:
            finished[result.action, result.queue, result.outcome.value] += 1
            observe = durations.get(result.action)
            if observe is None:
                observe = durations[result.action] = self.task_duration.labels(
                    result.action
                ).observe
            observe(result.duration_ms / 1000.0)
            if result.outcome is Outcome.SUCCEEDED:
                completed += 1
        for labels, n in finished.items():
            self.tasks_finished.labels(*labels).inc(n)
        self.activity.finished(completed=completed, failed=finished.total() - completed)

    def lost(self, action: str, queue: str) -> None:
        """An attempt whose lease expired (its daemon died), recorded by the rescuer."""
        self.tasks_finished.labels(action, queue, "lost").inc()
        self.activity.finished(failed=1)

    def pruned(self, count: int) -> None:
        self.tasks_pruned.inc(count)

    def http_request(self, route: str, status: int, duration_s: float) -> None:
        self.http_requests.labels(route, str(status)).inc()
        self.http_duration.labels(route).observe(duration_s)

    # -- scraping ---------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Update the gauges that need a query; on failure or timeout (``due_timeout_s``) keep
        the last values: a scrape never waits long and never fails for the database."""
        for count, gauge in (
            (self._count_due, self.tasks_due),
            (self._count_outbox, self.outbox_pending),
        ):
            if count is None:
                continue
            try:
                async with asyncio.timeout(self.due_timeout_s):
                    value = await count()
            except Exception as exc:
                _log.warning("metrics_refresh_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            gauge.set(value)
        if self._unrunnable is not None:
            try:
                async with asyncio.timeout(self.due_timeout_s):
                    by_action = await self._unrunnable()
            except Exception as exc:
                _log.warning("metrics_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                self.tasks_without_worker.clear()  # an action that is runnable again drops out
                for action, n in by_action.items():
                    self.tasks_without_worker.labels(action).set(n)

    def render(self) -> bytes:
        """The registry in the Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


def lag_s(run_at: datetime, claimed_at: datetime) -> float:
    """Seconds from due to claimed, never negative."""
    return max((claimed_at - run_at).total_seconds(), 0.0)
