"""The daemon's components, built from the settings: what exists, and what feeds what.

``build`` makes every component once, in four groups (the core, claiming, recording,
watching); ``app.py`` starts them from its lifecycle tables and follows reloads. A component
reads its settings section through ``live`` (the settings after each applied reload), so a
reload reaches the next pass of every loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_daemon.actions.base import ActionRegistry
from scheduler_daemon.actions.guard import GuardPolicy
from scheduler_daemon.alerts import Alerter
from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.models import AttemptResult, ClaimedTask
from scheduler_daemon.engine.completer import Completer
from scheduler_daemon.engine.discovery import Discovery
from scheduler_daemon.engine.eventbridge import EventBridgeBackend, eventbridge_backend
from scheduler_daemon.engine.executor import Executor
from scheduler_daemon.engine.expander import Expander
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.lease_keeper import LeaseKeeper
from scheduler_daemon.engine.leases import Rescuer
from scheduler_daemon.engine.limits import QueueLimiter
from scheduler_daemon.engine.presence import Presence
from scheduler_daemon.engine.pruner import Pruner
from scheduler_daemon.engine.retries import RetryPolicies
from scheduler_daemon.engine.supervisor import Supervisor
from scheduler_daemon.engine.watchdog import LoopBlockDetector, Watchdog
from scheduler_daemon.health import Health
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.listener import NotificationListener
from scheduler_daemon.store.outbox import PostgresOutboxStore
from scheduler_daemon.store.postgres import LazyPool, PostgresStore
from scheduler_daemon.store.retention import PostgresRetentionStore
from scheduler_daemon.store.schedules import PostgresScheduleStore
from scheduler_daemon.store.workers import PostgresWorkerStore


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the components are built from."""

    live: Callable[[], Settings]  # the settings after each applied reload
    owner: str
    clock: Clock
    dsn: str
    store: PostgresStore
    actions: ActionRegistry
    handler_pool: LazyPool
    guard: Callable[[], GuardPolicy]  # the SSRF guard of alert deliveries


@dataclass(frozen=True, slots=True)
class Core:
    inflight: InFlight  # claimed and not yet recorded: slots, per-queue counts, held leases
    ready: asyncio.Queue[ClaimedTask]  # discovery (or the SQS consumer) -> executor
    results: asyncio.Queue[AttemptResult]  # executor -> completer
    metrics: Metrics
    workers: PostgresWorkerStore
    schedules: PostgresScheduleStore
    alerter: Alerter
    limiter: QueueLimiter
    supervisor: Supervisor


@dataclass(frozen=True, slots=True)
class Claiming:
    discovery: Discovery
    expander: Expander
    executor: Executor
    aws: EventBridgeBackend | None  # the eventbridge backend's loops, in discovery's place


@dataclass(frozen=True, slots=True)
class Recording:
    listener: NotificationListener
    completer: Completer
    keeper: LeaseKeeper
    rescuer: Rescuer
    pruner: Pruner


@dataclass(frozen=True, slots=True)
class Components:
    core: Core
    claiming: Claiming
    recording: Recording
    watchdog: Watchdog
    health: Health


async def build(i: Inputs, stack: contextlib.AsyncExitStack) -> Components:
    """Every component, wired; ``stack`` closes what outlives a failed start (AWS clients,
    the lease keeper's thread)."""
    core = _core(i)
    claiming = await _claiming(i, core, stack)
    recording = _recording(i, core, claiming, stack)
    watchdog, health = _watching(i, core, claiming, recording)
    return Components(core, claiming, recording, watchdog, health)


def _core(i: Inputs) -> Core:
    """The in-flight ledger, the queues between the loops, metrics, alerts, the supervisor."""
    s, clock = i.live(), i.clock
    inflight = InFlight(s.executor.concurrency, clock)
    metrics = Metrics(now=clock.now)
    # Busy: running attempts plus the slots the SQS pollers have reserved for a receive.
    metrics.track_slots(lambda: inflight.in_use, lambda: inflight.capacity)
    pool = i.store.pool
    metrics.track_pool(lambda: pool.get_size() - pool.get_idle_size())
    metrics.track_due(i.store.count_due)
    workers = PostgresWorkerStore(pool)
    metrics.track_unrunnable(workers.unrunnable_by_action)
    # Alerts: channels, windows and the guard follow reloads.
    alerter = Alerter(lambda: i.live().alerts, i.owner, clock, guard=i.guard, metrics=metrics)
    return Core(
        inflight=inflight,
        ready=asyncio.Queue(),
        results=asyncio.Queue(),
        metrics=metrics,
        workers=workers,
        schedules=PostgresScheduleStore(pool),
        alerter=alerter,
        limiter=QueueLimiter(lambda: i.live().queues, inflight, clock),
        supervisor=Supervisor(clock),
    )


async def _claiming(i: Inputs, c: Core, stack: contextlib.AsyncExitStack) -> Claiming:
    """Discovery (or, with the eventbridge backend, the SQS consumer), the executor, the
    expander."""
    live, clock = i.live, i.clock
    discovery = Discovery(
        i.store,
        c.inflight,
        c.ready,
        i.owner,
        clock,
        batch_size=lambda: live().discovery.batch_size,
        poll_interval_s=lambda: live().discovery.poll_interval_s,
        lease_s=lambda: live().executor.lease_s,
        metrics=c.metrics,
        limiter=c.limiter,
    )
    expander = Expander(
        c.schedules,
        clock,
        horizon_s=lambda: live().expander.horizon_s,
        batch_size=lambda: live().expander.batch_size,
        poll_interval_s=lambda: live().expander.poll_interval_s,
        alerts=c.alerter.emit,
    )
    backoff = RetryPolicies(live).backoff
    executor = Executor(
        i.actions, c.ready, c.results, c.inflight, clock, backoff, i.handler_pool.transaction
    )
    s = live()
    aws = None
    if s.scheduling.backend == "eventbridge":
        # The AWS stack (aiobotocore and its service models) loads only with this backend.
        from scheduler_daemon.aws.adapter import connect

        outbox = PostgresOutboxStore(i.store.pool, i.store.runnable)
        c.metrics.track_outbox(outbox.count_pending)
        wakeups = await stack.enter_async_context(connect(s.aws.region, s.aws.endpoint_url))
        aws = eventbridge_backend(
            live,
            wakeups.queue,
            wakeups.schedules,
            outbox,
            c.inflight,
            c.ready,
            i.owner,
            clock,
            c.metrics,
            c.limiter,
        )
    return Claiming(discovery, expander, executor, aws)


def _recording(
    i: Inputs, c: Core, claiming: Claiming, stack: contextlib.AsyncExitStack
) -> Recording:
    """The listener, the completer, the lease keeper (with presence and the loop-block
    detector on its thread), the rescuer, the pruner."""
    live, clock = i.live, i.clock
    aws = claiming.aws
    listener = NotificationListener(
        i.dsn,
        claiming.discovery.notify if aws is None else aws.publisher.notify,
        clock,
        on_schedules=claiming.expander.notify,
    )
    completer = Completer(
        i.store,
        c.results,
        c.inflight,
        i.owner,
        clock,
        c.metrics,
        on_recorded=None if aws is None else aws.messages.recorded,
        alerts=c.alerter.emit,
    )
    # Leases are renewed from a thread of their own (its own loop and connection), so that a
    # handler holding this loop cannot make them lapse; the same thread reports a block of
    # this loop while it lasts, and keeps this daemon's row in workers on its connection.
    keeper = LeaseKeeper(
        i.dsn,
        c.inflight,
        i.owner,
        clock,
        lease_s=lambda: live().executor.lease_s,
        interval_s=lambda: live().executor.heartbeat_interval_s,
    )
    blocks = LoopBlockDetector(asyncio.get_running_loop(), lambda: live().watchdog, clock)
    presence = Presence(keeper.connection, i.owner, i.store.runnable or [], clock)
    keeper.run_also(blocks.run, presence.run)
    keeper.on_stop(presence.leave)
    stack.push_async_callback(keeper.stop)  # whatever ends the daemon, the thread ends
    rescuer = Rescuer(
        i.store,
        clock,
        interval_s=lambda: max(live().executor.lease_s / 4, 0.5),
        metrics=c.metrics,
        alerts=c.alerter.emit,
    )
    pruner = Pruner(
        PostgresRetentionStore(i.store.pool), clock, lambda: live().retention, metrics=c.metrics
    )
    return Recording(listener, completer, keeper, rescuer, pruner)


def _watching(
    i: Inputs, c: Core, claiming: Claiming, recording: Recording
) -> tuple[Watchdog, Health]:
    """The watchdog, each loop's progress reporter, and the health the probes read."""
    live, aws, r = i.live, claiming.aws, recording
    watchdog = Watchdog(i.clock, lambda: live().watchdog, alerts=c.alerter.emit)
    c.metrics.event_loop_lag.set_function(lambda: watchdog.lag_s)
    # Each loop may be quiet for its own interval; the ones that wait for slots or results
    # only while there are some.
    has_slots = lambda: c.inflight.free > 0  # noqa: E731
    if aws is None:
        claiming.discovery.report_progress = watchdog.reporter(
            "discovery", lambda: live().discovery.poll_interval_s, busy=has_slots
        )
    else:
        aws.publisher.report_progress = watchdog.reporter(
            "publisher", lambda: live().discovery.poll_interval_s + 30.0
        )
        aws.consumer.report_progress = watchdog.reporter(
            "consumer", lambda: float(live().sqs.wait_time_s), busy=has_slots
        )
    claiming.expander.report_progress = watchdog.reporter(
        "expander", lambda: live().expander.poll_interval_s
    )
    r.completer.report_progress = watchdog.reporter("completer", busy=lambda: not c.results.empty())
    r.keeper.report_progress = watchdog.reporter(
        "heartbeat", lambda: live().executor.heartbeat_interval_s
    )
    r.rescuer.report_progress = watchdog.reporter(
        "rescuer", lambda: max(live().executor.lease_s / 4, 0.5)
    )
    health = Health(
        i.store,
        r.listener.connected.is_set,
        lambda: [*c.supervisor.unhealthy(), *watchdog.problems(), *r.keeper.problems()],
    )
    return watchdog, health
