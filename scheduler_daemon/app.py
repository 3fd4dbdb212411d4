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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from aiohttp import web

from scheduler_daemon.actions.base import ActionRegistry
from scheduler_daemon.actions.guard import GuardPolicy
from scheduler_daemon.actions.simple import LogAction, NoopAction
from scheduler_daemon.actions.sqs import SqsAction, SqsOptions
from scheduler_daemon.actions.webhook import WebhookAction, WebhookOptions
from scheduler_daemon.api.app import create_app
from scheduler_daemon.api.context import ApiContext
from scheduler_daemon.clock import Clock, SystemClock
from scheduler_daemon.domain.models import AttemptResult
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.lifecycle import Loop, Step, Stoppable, drain, start, stop_loop
from scheduler_daemon.handlers import load_handlers
from scheduler_daemon.logs import configure_logging, get_logger
from scheduler_daemon.reload import Reloader, ReloadOutcome, describe
from scheduler_daemon.settings import Settings, WebhookSettings, load_settings
from scheduler_daemon.store.embedded import start_embedded
from scheduler_daemon.store.postgres import (
    LazyPool,
    PostgresStore,
    create_pool,
    migrate_database,
)
from scheduler_daemon.store.queues import PostgresQueueStore
from scheduler_daemon.wiring import Components, Inputs, build

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
        await actions.start(store.runnable)
        inputs = Inputs(
            self.reloader,
            self.owner,
            self.clock,
            dsn,
            store,
            actions,
            handler_pool,
            guard=lambda: guard_policy(self.settings.webhook),
        )
        c = await build(inputs, stack)
        self._follow_reloads(c)
        runner = await self._start_http(c, store, actions)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            async with c.core.supervisor:
                c.recording.keeper.start()  # its own thread, renewing what discovery claims
                start(c.core.supervisor, loops(c))
                await self._until_stopped(c)
                await drain(self._drain_steps(c, store))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await runner.cleanup()
            await actions.close()

    def _follow_reloads(self, c: Components) -> None:
        """What a reload changes beyond what the components read through ``live``."""
        metrics, inflight, executor = c.core.metrics, c.core.inflight, c.claiming.executor
        self.reloader.on_result = lambda result: metrics.config_reloads.labels(result).inc()

        def apply(old: Settings, new: Settings) -> None:
            if new.log != old.log:
                configure_logging(new.log)
            if new.executor.concurrency != old.executor.concurrency:
                inflight.resize(new.executor.concurrency)
                executor.resize()

        self.reloader.subscribe(apply)

    async def _start_http(
        self, c: Components, store: PostgresStore, actions: ActionRegistry
    ) -> web.AppRunner:
        s = self.settings
        app = create_app(
            ApiContext(
                store,
                actions,
                c.health,
                lambda: self.settings,
                c.core.schedules,
                config_loaded_at=lambda: self.reloader.loaded_at,
                queues=PostgresQueueStore(store.pool),
                workers=c.core.workers,
            ),
            c.core.metrics,
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
        return runner

    async def _until_stopped(self, c: Components) -> None:
        """Ready once the LISTEN connection is up (or a stop came first); then serve until a
        stop is asked for."""
        await _first(c.recording.listener.connected.wait(), self._stop.wait())
        c.health.started = True
        # What start-up made (modules, the app, the components) lives as long as the process:
        # out of the collector's sight, a full collection only walks what tasks made since,
        # and no longer stalls the loop for tens of milliseconds.
        gc.freeze()
        concurrency = self.settings.executor.concurrency
        log.info("daemon_started", owner=self.owner, concurrency=concurrency)
        await self._stop.wait()
        c.health.draining = True
        grace_s = self.settings.shutdown.grace_s
        log.info("drain_started", in_flight=len(c.core.inflight), grace_s=grace_s)

    def _drain_steps(self, c: Components, store: PostgresStore) -> list[Step]:
        released: list[uuid.UUID] = []

        async def release() -> None:
            released.extend(await self._release(store, c.core.inflight))

        return drain_steps(
            DrainParts(
                c.core.supervisor,
                c.core.inflight,
                c.recording.completer,
                c.core.results,
                c.recording.keeper,
                c.core.alerter,
                c.claiming.aws,
            ),
            grace_s=lambda: self.settings.shutdown.grace_s,
            release=release,
            released=released,
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


# -- the lifecycle tables -------------------------------------------------------------------


def loops(c: Components) -> list[Loop]:
    """The supervised loops, in the order they start: those that record before those that
    claim, so that nothing claimed waits for a loop not yet running."""
    aws = c.claiming.aws
    claiming = (
        [Loop("discovery", c.claiming.discovery.run)]
        if aws is None
        else [
            Loop("publisher", aws.publisher.run),
            Loop("sqs_messages", aws.messages.run),
            Loop("consumer", aws.consumer.run),
        ]
    )
    return [
        Loop("alerter", c.core.alerter.run),
        Loop("listener", c.recording.listener.run),
        Loop("completer", c.recording.completer.run),
        Loop("executor", c.claiming.executor.run),
        Loop("rescuer", c.recording.rescuer.run),
        *claiming,
        Loop("expander", c.claiming.expander.run),
        Loop("watchdog", c.watchdog.run),
        Loop("pruner", c.recording.pruner.run),
    ]


class _Ledger(Protocol):
    @property
    def in_use(self) -> int: ...

    async def wait_idle(self) -> None: ...


class _Flushable(Protocol):
    async def flush(self) -> None: ...


class _Keeper(Protocol):
    async def stop(self) -> None: ...


class _Alerts(Protocol):
    async def drain(self, timeout_s: float) -> bool: ...


class _Backend(Protocol):
    async def drained(self, released: list[uuid.UUID], timeout_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class DrainParts:
    """What the drain acts on."""

    supervisor: Stoppable
    inflight: _Ledger
    completer: _Flushable
    results: asyncio.Queue[AttemptResult]
    keeper: _Keeper
    alerter: _Alerts
    aws: _Backend | None


def drain_steps(
    p: DrainParts,
    grace_s: Callable[[], float],
    release: Callable[[], Awaitable[None]],
    released: list[uuid.UUID],
) -> list[Step]:
    """The drain, in order: stop claiming, wait until the attempts end (within the grace),
    record their results, put back what is still held, stop renewing, hand the SQS backend
    its last work, send the last alerts."""

    def stop(name: str) -> Step:
        return stop_loop(p.supervisor, name)

    steps = [
        stop("expander"),
        stop("discovery" if p.aws is None else "consumer"),
        Step(
            "wait idle",
            p.inflight.wait_idle,
            timeout_s=grace_s,
            expired=lambda: log.warning("drain_grace_expired", still_running=p.inflight.in_use),
        ),
        stop("executor"),
        Step(
            "flush completer",
            p.completer.flush,
            timeout_s=lambda: max(grace_s(), 5.0),
            expired=lambda: log.error("drain_flush_expired", unrecorded=p.results.qsize()),
        ),
        stop("completer"),
        # Nothing is held after it (or the release failed: the leases lapse, and another
        # daemon's rescuer takes the tasks over).
        Step("release leases", release),
        Step("stop heartbeat", p.keeper.stop),
    ]
    if p.aws is not None:
        aws = p.aws
        steps += [
            Step("hand back wake-ups", lambda: aws.drained(released, timeout_s=5.0)),
            stop("sqs_messages"),
            stop("publisher"),
        ]
    # The last alerts (the completer's, what the windows held) get a moment.
    return [
        *steps,
        Step("send last alerts", lambda: p.alerter.drain(timeout_s=ALERTS_DRAIN_S)),
        stop("alerter"),
    ]


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
