"""The composition root: builds every component from Settings and owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from scheduler_daemon.actions.base import ActionRegistry
from scheduler_daemon.actions.guard import GuardPolicy
from scheduler_daemon.actions.simple import LogAction, NoopAction
from scheduler_daemon.actions.sqs import SqsAction, SqsOptions
from scheduler_daemon.actions.webhook import WebhookAction, WebhookOptions
from scheduler_daemon.alerts import Alerter
from scheduler_daemon.api.app import create_app
from scheduler_daemon.api.context import ApiContext
from scheduler_daemon.clock import Clock, SystemClock
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
from scheduler_daemon.handlers import load_handlers
from scheduler_daemon.health import Health
from scheduler_daemon.logs import configure_logging, get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.reload import Reloader, ReloadOutcome, describe
from scheduler_daemon.settings import Settings, WebhookSettings, load_settings
from scheduler_daemon.store.embedded import start_embedded
from scheduler_daemon.store.listener import NotificationListener
from scheduler_daemon.store.outbox import PostgresOutboxStore
from scheduler_daemon.store.postgres import (
    LazyPool,
    PostgresStore,
    create_pool,
    migrate_database,
)
from scheduler_daemon.store.queues import PostgresQueueStore
from scheduler_daemon.store.retention import PostgresRetentionStore
from scheduler_daemon.store.schedules import PostgresScheduleStore
from scheduler_daemon.store.workers import PostgresWorkerStore

log = get_logger("daemon")

ALERTS_DRAIN_S = 2.0  # how long a stopping daemon waits for its last alerts to go out


def build_actions(
    settings: Settings | None = None, live: Callable[[], Settings] | None = None
) -> ActionRegistry:
    """The built-in actions, plus (given settings) the Python handlers of
    ``handlers.modules`` and of the ``scheduler_daemon.handlers`` entry points. ``live``: the
    settings after reloads (the webhook options follow them)."""
    registry = ActionRegistry()
    webhook_options = None
    if settings is not None:
        webhook_options = _webhook_options(live or (lambda: settings))
        webhook_options()  # a bad webhook.signing_secrets stops the daemon at start
    registry.register(WebhookAction(webhook_options))
    registry.register(
        SqsAction(
            None
            if settings is None
            else SqsOptions(region=settings.aws.region, endpoint_url=settings.aws.endpoint_url)
        )
    )
    registry.register(LogAction(), "message")
    registry.register(NoopAction())
    if settings is not None:
        names = load_handlers(registry, settings.handlers.modules)
        log.info("handlers_loaded", handlers=names)
    return registry


def _webhook_options(settings: Callable[[], Settings]) -> Callable[[], WebhookOptions]:
    """The webhook options of the live settings, rebuilt when a reload replaced them."""
    last: list[tuple[Settings, WebhookOptions]] = []

    def current() -> WebhookOptions:
        s = settings()
        if last and last[0][0] is s:
            return last[0][1]
        w = s.webhook
        try:
            options = WebhookOptions(
                guard=guard_policy(w),
                follow_redirects=w.follow_redirects,
                signing_secrets=[x.get_secret_value() for x in w.signing_secrets],
                redact_headers=s.log.redact_headers,
                max_response_bytes=w.max_response_bytes,
            )
        except ValueError as exc:  # names the key, never the secret
            if not last:
                raise
            log.error(
                "webhook_options_rejected", error=str(exc), kept="the previous webhook options"
            )
            options = last[0][1]
        last[:] = [(s, options)]
        return options

    return current


# Where the AWS SDK finds credentials without a network call: the variables it reads, and the
# shared files. (An instance role, found through the metadata service, needs aws.endpoint_url
# or the eventbridge backend to count.)
_AWS_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def aws_configured(settings: Settings) -> bool:
    """Whether this daemon can reach AWS: the eventbridge backend, an ``aws.endpoint_url``, or
    credentials in the environment or the shared files."""
    if settings.scheduling.backend == "eventbridge" or settings.aws.endpoint_url:
        return True
    if any(os.environ.get(name) for name in _AWS_CREDENTIAL_VARIABLES):
        return True
    home = os.path.expanduser("~")
    return any(
        os.path.exists(os.path.join(home, ".aws", name)) for name in ("credentials", "config")
    )


def runnable_actions(actions: ActionRegistry, settings: Settings) -> list[str]:
    """The actions this daemon claims: its handlers and the built-ins it is configured for
    (``sqs`` only with AWS set up). A task of any other action waits for a daemon that runs
    it."""
    names = set(actions.names())
    if not aws_configured(settings):
        names.discard("sqs")
    return sorted(names)


def guard_policy(w: WebhookSettings) -> GuardPolicy:
    """The SSRF guard of webhooks (and of alert deliveries)."""
    return GuardPolicy(
        allow_private_networks=w.allow_private_networks,
        allow_hosts=frozenset(h.lower() for h in w.allow_hosts),
    )


def default_actions() -> ActionRegistry:
    """The built-in actions only."""
    return build_actions()


def make_owner_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


@dataclass(slots=True)
class Database:
    dsn: str
    close: Callable[[], None]


async def open_database(settings: Settings) -> Database:
    """The configured database, or an embedded one when no URL is set; migrated."""
    if settings.database.url is not None:
        db = Database(settings.database.url.get_secret_value(), lambda: None)
    else:
        embedded = await asyncio.to_thread(start_embedded, settings.database.embedded_dir)
        log.info("embedded_database_started", data_dir=str(embedded.pgdata))
        db = Database(embedded.dsn, embedded.stop)
    applied = await migrate_database(db.dsn)
    log.info("database_migrated", applied=applied)
    return db


class Daemon:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        config_file: str | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.reloader = Reloader(settings, self.clock.now, lambda: load_settings(config_file))
        self.owner = make_owner_id()
        self._stop = asyncio.Event()

    @property
    def settings(self) -> Settings:
        """The live settings (replaced by each applied SIGHUP reload)."""
        return self.reloader.settings

    def reload(self) -> ReloadOutcome:
        """Re-read the config file and the environment (SIGHUP)."""
        outcome = self.reloader.reload()
        if outcome.result == "rejected":
            log.error("config_reload_rejected", error=outcome.error, kept="the previous config")
        else:
            log.info("config_reloaded", **describe(outcome))
        if outcome.restart_required:
            log.warning(
                "config_restart_required",
                keys=outcome.restart_required,
                reason="these keys apply only at start; the running values are kept",
            )
        return outcome

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        settings = self.settings
        # Handlers first: a module that does not import stops the daemon before it touches
        # the database.
        actions = build_actions(settings, live=lambda: self.settings)
        db = await open_database(settings)
        try:
            pool = await create_pool(db.dsn, settings.database.pool_size)
            handler_pool = LazyPool(db.dsn, settings.database.handler_pool_size)
            try:
                store = PostgresStore(pool, runnable_actions(actions, settings))
                await self._serve(db.dsn, store, actions, handler_pool)
            finally:
                await handler_pool.close()
                await pool.close()
        finally:
            await asyncio.to_thread(db.close)
        log.info("daemon_stopped")
        return 0

    async def _serve(
        self, dsn: str, store: PostgresStore, actions: ActionRegistry, handler_pool: LazyPool
    ) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._serve_on(stack, dsn, store, actions, handler_pool)

    async def _serve_on(
        self,
        stack: contextlib.AsyncExitStack,
        dsn: str,
        store: PostgresStore,
        actions: ActionRegistry,
        handler_pool: LazyPool,
    ) -> None:
        s = self.settings
        clock = self.clock
        await actions.start(store.runnable)
        ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
        results: asyncio.Queue[AttemptResult] = asyncio.Queue()
        # Claimed and not yet recorded: the slots, the per-queue counts and the held leases.
        inflight = InFlight(s.executor.concurrency, clock)
        backoff = RetryPolicies(lambda: self.settings).backoff
        metrics = Metrics(now=clock.now)
        # Busy: running attempts plus the slots the SQS pollers have reserved for a receive.
        metrics.track_slots(lambda: inflight.in_use, lambda: inflight.capacity)
        metrics.track_pool(lambda: store.pool.get_size() - store.pool.get_idle_size())
        metrics.track_due(store.count_due)
        workers = PostgresWorkerStore(store.pool)
        metrics.track_unrunnable(workers.unrunnable_by_action)
        # Alerts: channels, windows and the guard follow reloads.
        alerter = Alerter(
            lambda: self.settings.alerts,
            self.owner,
            clock,
            guard=lambda: guard_policy(self.settings.webhook),
            metrics=metrics,
        )

        limiter = QueueLimiter(lambda: self.settings.queues, inflight, clock)
        discovery = Discovery(
            store,
            inflight,
            ready,
            self.owner,
            clock,
            batch_size=lambda: self.settings.discovery.batch_size,
            poll_interval_s=lambda: self.settings.discovery.poll_interval_s,
            lease_s=lambda: self.settings.executor.lease_s,
            metrics=metrics,
            limiter=limiter,
        )
        schedules = PostgresScheduleStore(store.pool)
        expander = Expander(
            schedules,
            clock,
            horizon_s=lambda: self.settings.expander.horizon_s,
            batch_size=lambda: self.settings.expander.batch_size,
            poll_interval_s=lambda: self.settings.expander.poll_interval_s,
            alerts=alerter.emit,
        )
        executor = Executor(
            actions,
            ready,
            results,
            inflight,
            clock,
            backoff,
            handler_pool.transaction,
        )
        aws: EventBridgeBackend | None = None
        if s.scheduling.backend == "eventbridge":
            # The AWS stack (aiobotocore and its service models) loads only with this backend.
            from scheduler_daemon.aws.adapter import connect

            outbox = PostgresOutboxStore(store.pool, store.runnable)
            metrics.track_outbox(outbox.count_pending)
            wakeups = await stack.enter_async_context(connect(s.aws.region, s.aws.endpoint_url))
            aws = eventbridge_backend(
                lambda: self.settings,
                wakeups.queue,
                wakeups.schedules,
                outbox,
                inflight,
                ready,
                self.owner,
                clock,
                metrics,
                limiter,
            )
        listener = NotificationListener(
            dsn,
            discovery.notify if aws is None else aws.publisher.notify,
            clock,
            on_schedules=expander.notify,
        )
        completer = Completer(
            store,
            results,
            inflight,
            self.owner,
            clock,
            metrics,
            on_recorded=None if aws is None else aws.messages.recorded,
            alerts=alerter.emit,
        )
        # Leases are renewed from a thread of their own (its own loop and connection), so
        # that a handler holding this loop cannot make them lapse; the same thread reports a
        # block of this loop while it lasts.
        blocks = LoopBlockDetector(
            asyncio.get_running_loop(), lambda: self.settings.watchdog, clock
        )
        keeper = LeaseKeeper(
            dsn,
            inflight,
            self.owner,
            clock,
            lease_s=lambda: self.settings.executor.lease_s,
            interval_s=lambda: self.settings.executor.heartbeat_interval_s,
        )
        # This daemon's row in workers (the actions it runs) is kept by the keeper's thread
        # too, on its connection: the main loop's pool is left to claims and completions.
        presence = Presence(keeper.connection, self.owner, store.runnable or [], clock)
        keeper.run_also(blocks.run, presence.run)
        keeper.on_stop(presence.leave)
        stack.push_async_callback(keeper.stop)  # whatever ends the daemon, the thread ends
        rescuer = Rescuer(
            store,
            clock,
            interval_s=lambda: max(self.settings.executor.lease_s / 4, 0.5),
            metrics=metrics,
            alerts=alerter.emit,
        )

        pruner = Pruner(
            PostgresRetentionStore(store.pool),
            clock,
            lambda: self.settings.retention,
            metrics=metrics,
        )
        supervisor = Supervisor(clock)
        watchdog = Watchdog(clock, lambda: self.settings.watchdog, alerts=alerter.emit)
        metrics.event_loop_lag.set_function(lambda: watchdog.lag_s)
        self._watch(
            watchdog, inflight, results, discovery, expander, completer, keeper, rescuer, aws
        )
        health = Health(
            store,
            listener.connected.is_set,
            lambda: [*supervisor.unhealthy(), *watchdog.problems(), *keeper.problems()],
        )
        self.reloader.on_result = lambda result: metrics.config_reloads.labels(result).inc()

        def apply(old: Settings, new: Settings) -> None:
            if new.log != old.log:
                configure_logging(new.log)
            if new.executor.concurrency != old.executor.concurrency:
                inflight.resize(new.executor.concurrency)
                executor.resize()

        self.reloader.subscribe(apply)
        app = create_app(
            ApiContext(
                store,
                actions,
                health,
                lambda: self.settings,
                schedules,
                config_loaded_at=lambda: self.reloader.loaded_at,
                queues=PostgresQueueStore(store.pool),
                workers=workers,
            ),
            metrics,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, s.http.host, s.http.port, reuse_address=True)
        await site.start()
        log.info("http_started", host=s.http.host, port=s.http.port)
        if s.http.tokens:
            log.info("auth_enabled", tokens=[f"{t.name}:{t.role}" for t in s.http.tokens])
        else:
            log.warning(
                "auth_disabled",
                reason="no http.tokens configured: requests need no token",
                loopback_only=s.http.loopback,
            )

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            async with supervisor:
                supervisor.start("alerter", alerter.run)
                supervisor.start("listener", listener.run)
                supervisor.start("completer", completer.run)
                supervisor.start("executor", executor.run)
                keeper.start()
                supervisor.start("rescuer", rescuer.run)
                if aws is None:
                    supervisor.start("discovery", discovery.run)
                else:
                    supervisor.start("publisher", aws.publisher.run)
                    supervisor.start("sqs_messages", aws.messages.run)
                    supervisor.start("consumer", aws.consumer.run)
                supervisor.start("expander", expander.run)
                supervisor.start("watchdog", watchdog.run)
                supervisor.start("pruner", pruner.run)
                # Ready once the LISTEN connection is up (or a stop came first).
                await _first(listener.connected.wait(), self._stop.wait())
                health.started = True
                # What start-up made (modules, the app, the components) lives as long as the
                # process: out of the collector's sight, a full collection only walks what
                # tasks made since, and no longer stalls the loop for tens of milliseconds.
                gc.freeze()
                log.info("daemon_started", owner=self.owner, concurrency=s.executor.concurrency)
                await self._stop.wait()

                health.draining = True
                log.info("drain_started", in_flight=len(inflight), grace_s=s.shutdown.grace_s)
                await supervisor.stop("expander")
                await supervisor.stop("discovery" if aws is None else "consumer")
                try:
                    async with asyncio.timeout(s.shutdown.grace_s):
                        await inflight.wait_idle()
                except TimeoutError:
                    log.warning("drain_grace_expired", still_running=inflight.in_use)
                await supervisor.stop("executor")
                try:
                    async with asyncio.timeout(max(s.shutdown.grace_s, 5.0)):
                        await completer.flush()
                except TimeoutError:
                    log.error("drain_flush_expired", unrecorded=results.qsize())
                await supervisor.stop("completer")
                released = await self._release(store, inflight)
                # Nothing is held any more (or the release failed: the leases lapse, and
                # another daemon's rescuer takes the tasks over).
                await keeper.stop()
                if aws is not None:
                    await aws.drained(released, timeout_s=5.0)
                    await supervisor.stop("sqs_messages")
                    await supervisor.stop("publisher")
                # The last alerts (the completer's, what the windows held) get a moment.
                await alerter.drain(timeout_s=ALERTS_DRAIN_S)
                await supervisor.stop("alerter")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await runner.cleanup()
            await actions.close()

    def _watch(
        self,
        watchdog: Watchdog,
        inflight: InFlight,
        results: asyncio.Queue[AttemptResult],
        discovery: Discovery,
        expander: Expander,
        completer: Completer,
        keeper: LeaseKeeper,
        rescuer: Rescuer,
        aws: EventBridgeBackend | None,
    ) -> None:
        """Each loop reports its progress to the watchdog; each may be quiet for its own
        interval, and the ones that wait for slots or results only while there are some."""
        cfg = self.reloader
        has_slots = lambda: inflight.free > 0  # noqa: E731
        if aws is None:
            discovery.report_progress = watchdog.reporter(
                "discovery", lambda: cfg().discovery.poll_interval_s, busy=has_slots
            )
        else:
            aws.publisher.report_progress = watchdog.reporter(
                "publisher", lambda: cfg().discovery.poll_interval_s + 30.0
            )
            aws.consumer.report_progress = watchdog.reporter(
                "consumer", lambda: float(cfg().sqs.wait_time_s), busy=has_slots
            )
        expander.report_progress = watchdog.reporter(
            "expander", lambda: cfg().expander.poll_interval_s
        )
        completer.report_progress = watchdog.reporter("completer", busy=lambda: not results.empty())
        keeper.report_progress = watchdog.reporter(
            "heartbeat", lambda: cfg().executor.heartbeat_interval_s
        )
        rescuer.report_progress = watchdog.reporter(
            "rescuer", lambda: max(cfg().executor.lease_s / 4, 0.5)
        )

    async def _release(self, store: PostgresStore, inflight: InFlight) -> list[uuid.UUID]:
        """Tasks claimed but not finished go back to scheduled, the attempt not counted."""
        held = inflight.snapshot()
        if not held:
            return []
        try:
            released = await store.release(self.owner, held)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Not lost: their leases expire and another daemon's rescuer takes them over.
            log.error("release_failed", error=str(exc), tasks=len(held))
            return []
        for task_id in released:
            log.info("task_released", task_id=str(task_id))
        inflight.release(released)
        return list(released)


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def install_uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    with contextlib.suppress(ImportError):
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None
