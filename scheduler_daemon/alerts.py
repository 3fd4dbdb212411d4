"""Alerts: tell people when something needs them, through a generic JSON webhook or a
Slack-compatible incoming webhook (section ``alerts``).

Events: a task failed for good (the dead-letter state), a task rescued after its lease expired,
a component stalled, a schedule misfired. The engine calls ``Alerter.emit``, which never
blocks and never raises: it deduplicates and puts deliveries on a queue. ``Alerter.run``
delivers them through the webhook SSRF guard, retrying with backoff, each channel on its own
so that one that fails or hangs never holds up another.

Deduplication: per channel, alike alerts (same event, action and queue; the component for
``component_stalled``; the schedule for ``schedule_misfired``) within ``dedupe_window_s`` (or
the channel's ``min_interval_s``) are sent once. The repeats are counted; when the window ends
they go out as one alert carrying ``suppressed: n`` (or the next alike alert carries it), and a
new window starts.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import aiohttp
from yarl import URL

from scheduler_daemon.actions.guard import (
    BlockedTarget,
    GuardedResolver,
    GuardPolicy,
    check_literal,
)
from scheduler_daemon.actions.redact import Redactor
from scheduler_daemon.actions.webhook import classify, retry_after
from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.backoff import Backoff
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import AlertChannel, AlertEvent, AlertsSettings

AlertSink = Callable[["Alert"], None]
AlertResult = Literal["sent", "suppressed", "failed", "dropped"]

ERROR_LIMIT = 1000  # characters of an error an alert carries
CHANNEL_CONCURRENCY = 4  # deliveries in flight at once per channel
RETRY_CAP_S = 60.0  # the longest wait between two delivery attempts
FLUSH_TICK_S = 1.0  # the longest a window's end waits to be noticed
USER_AGENT = "scheduler-daemon"

TITLES: dict[AlertEvent, str] = {
    "task_failed": "Task failed",
    "task_rescued": "Task rescued",
    "component_stalled": "Component stalled",
    "schedule_misfired": "Schedule misfired",
}


@dataclass(frozen=True, slots=True)
class Alert:
    event: AlertEvent
    summary: str
    task_id: uuid.UUID | None = None
    action: str | None = None
    queue: str | None = None
    schedule_id: uuid.UUID | None = None
    component: str | None = None
    error: str | None = None
    attempts: int | None = None
    missed: int | None = None  # schedule_misfired: occurrences later than misfire_grace_s
    skipped: int | None = None  # schedule_misfired: occurrences not run (by a policy)
    occurred_at: datetime | None = None  # set by emit when None

    @property
    def dedupe_key(self) -> tuple[str, ...]:
        if self.event == "component_stalled":
            return (self.event, self.component or "")
        if self.event == "schedule_misfired":
            return (self.event, str(self.schedule_id))
        return (self.event, self.action or "", self.queue or "")

    def fields(self) -> dict[str, Any]:
        """Every field but the event and the summary, as JSON values (None when unset)."""
        return {
            "task_id": None if self.task_id is None else str(self.task_id),
            "action": self.action,
            "queue": self.queue,
            "schedule_id": None if self.schedule_id is None else str(self.schedule_id),
            "component": self.component,
            "error": self.error,
            "attempts": self.attempts,
            "missed": self.missed,
            "skipped": self.skipped,
        }


def ignore(alert: Alert) -> None:
    """The sink of components built without an alerter."""


def _cut(text: str | None, limit: int = ERROR_LIMIT) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the alerts the engine raises ----------------------------------------------------------


def task_failed(
    task_id: uuid.UUID, action: str, queue: str, attempts: int, error: str | None
) -> Alert:
    return Alert(
        "task_failed",
        f"Task {task_id} ({action} on queue {queue}) failed for good after attempt "
        f"{attempts}: {_cut(error, 200) or 'no error recorded'}",
        task_id=task_id,
        action=action,
        queue=queue,
        error=_cut(error),
        attempts=attempts,
    )


def task_rescued(
    task_id: uuid.UUID, action: str, queue: str, attempt: int, owner: str, status: str
) -> Alert:
    return Alert(
        "task_rescued",
        f"Task {task_id} ({action} on queue {queue}) rescued: the lease of attempt {attempt} "
        f"held by {owner} expired; the task is now {status}",
        task_id=task_id,
        action=action,
        queue=queue,
        error=f"lease expired (held by {owner})",
        attempts=attempt,
    )


def component_stalled(component: str, quiet_s: float) -> Alert:
    return Alert(
        "component_stalled",
        f"Component {component} stalled: no progress for {quiet_s:.0f}s",
        component=component,
    )


def schedule_misfired(
    schedule_id: uuid.UUID,
    name: str | None,
    missed: int,
    skipped: int,
    policy: str | None = None,
    action: str | None = None,
    queue: str | None = None,
) -> Alert:
    label = f"Schedule {name} ({schedule_id})" if name else f"Schedule {schedule_id}"
    how = f" (misfire policy {policy})" if policy else ""
    return Alert(
        "schedule_misfired",
        f"{label} missed {missed} occurrence{'s' if missed != 1 else ''}{how}; {skipped} not run",
        action=action,
        queue=queue,
        schedule_id=schedule_id,
        missed=missed,
        skipped=skipped,
    )


# -- payloads ------------------------------------------------------------------------------


def summary_text(alert: Alert, suppressed: int) -> str:
    if suppressed <= 0:
        return alert.summary
    return f"{alert.summary} (and {suppressed} more like it)"


def webhook_payload(alert: Alert, suppressed: int, owner: str) -> dict[str, Any]:
    return {
        "event": alert.event,
        "summary": summary_text(alert, suppressed),
        "occurred_at": None if alert.occurred_at is None else alert.occurred_at.isoformat(),
        **alert.fields(),
        "suppressed": suppressed,
        "daemon": owner,
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


SLACK_TEXT_LIMIT = 3000  # a section's text
SLACK_CONTEXT_LIMIT = 10  # a context block's elements


def slack_payload(alert: Alert, suppressed: int, owner: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications, fallback) and two blocks, a
    section with the summary (and the error) and a context with the fields."""
    text = summary_text(alert, suppressed)
    section = f"*{TITLES[alert.event]}*\n{_slack_escape(text)}"
    if alert.error:
        error = _slack_escape(alert.error.replace("```", "'''"))
        section += f"\n```{error}```"
    if len(section) > SLACK_TEXT_LIMIT:
        section = section[: SLACK_TEXT_LIMIT - 1] + "…"
    context = [
        f"*{name}:* {_slack_escape(str(value))}"
        for name, value in alert.fields().items()
        if value is not None and name != "error"
    ]
    if suppressed:
        context.append(f"*suppressed:* {suppressed}")
    context.append(f"*daemon:* {_slack_escape(owner)}")
    if alert.occurred_at is not None:
        context.append(f"*at:* {alert.occurred_at.isoformat()}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": section}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": t} for t in context[:SLACK_CONTEXT_LIMIT]],
        },
    ]
    return {"text": text, "blocks": blocks}


def payload(kind: str, alert: Alert, suppressed: int, owner: str) -> dict[str, Any]:
    if kind == "slack":
        return slack_payload(alert, suppressed, owner)
    return webhook_payload(alert, suppressed, owner)


# -- the alerter ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    ends_at: float  # monotonic
    suppressed: int = 0
    last: Alert | None = None  # the latest suppressed alert


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert for one channel; ``suppressed``: alike alerts not sent since the last one."""

    channel: AlertChannel
    alert: Alert
    suppressed: int


def _redactor(url: str) -> Redactor:
    """Masks the channel URL (a credential: a Slack hook URL is its own secret) in error
    text: the whole URL, its path and query, its userinfo and host."""
    try:
        parsed = URL(url)
    except ValueError:
        return Redactor([url])
    parts = [url, parsed.raw_host or "", parsed.raw_user or "", parsed.raw_password or ""]
    if len(parsed.raw_path_qs) > 1:
        parts.append(parsed.raw_path_qs)
    return Redactor(parts)


class Alerter:
    def __init__(
        self,
        settings: Callable[[], AlertsSettings],
        owner: str,
        clock: Clock,
        guard: Callable[[], GuardPolicy] = GuardPolicy,
        metrics: Metrics | None = None,
        *,
        retry_base_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._owner = owner
        self._clock = clock
        self._guard = guard
        self._metrics = metrics
        self._backoff = Backoff(retry_base_s, RETRY_CAP_S, jitter=True)
        self._rng = rng
        self._log = get_logger("alerts")
        # What run() delivers; bounded per channel by alerts.queue_size (see _enqueue).
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._windows: dict[tuple[str, tuple[str, ...]], _Window] = {}
        # Per channel: deliveries queued or in flight (bounded by alerts.queue_size).
        self._pending: collections.Counter[str] = collections.Counter()
        self._dropping: set[str] = set()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.counts: collections.Counter[tuple[str, AlertResult]] = collections.Counter()

    # -- the engine's side: never blocks, never raises -------------------------------------

    def emit(self, alert: Alert) -> None:
        try:
            self._emit(alert)
        except Exception as exc:
            self._log.error(
                "alert_emit_failed", alert=alert.event, error=f"{type(exc).__name__}: {exc}"
            )

    def _emit(self, alert: Alert) -> None:
        s = self._settings()
        if not s.channels:
            return
        if alert.occurred_at is None:
            alert = replace(alert, occurred_at=self._clock.now())
        now = self._clock.monotonic()
        key = alert.dedupe_key
        for channel in s.channels:
            if alert.event not in channel.events:
                continue
            wkey = (channel.name, key)
            window = self._windows.get(wkey)
            if window is not None and now < window.ends_at:
                window.suppressed += 1
                window.last = alert
                self._count(alert.event, "suppressed")
                continue
            # No window, or one that ended before its flush: this alert carries its count.
            carried = window.suppressed if window is not None else 0
            self._windows[wkey] = _Window(now + _interval(channel, s))
            self._enqueue(channel, alert, carried)

    def flush(self, *, force: bool = False) -> None:
        """Windows that ended send their suppressed alerts as one (the latest, carrying the
        count) and start again; quiet ones are forgotten. ``force``: every window with
        suppressed alerts, ended or not (at drain)."""
        try:
            self._flush(force)
        except Exception as exc:
            self._log.error("alert_flush_failed", error=f"{type(exc).__name__}: {exc}")

    def _flush(self, force: bool) -> None:
        s = self._settings()
        channels = {c.name: c for c in s.channels}
        now = self._clock.monotonic()
        for wkey, window in list(self._windows.items()):
            ended = now >= window.ends_at
            channel = channels.get(wkey[0])
            if channel is None or window.last is None or window.suppressed == 0:
                if ended or channel is None:
                    del self._windows[wkey]
                continue
            if not (ended or force):
                continue
            self._windows[wkey] = _Window(now + _interval(channel, s))
            self._enqueue(channel, window.last, window.suppressed)

    def _enqueue(self, channel: AlertChannel, alert: Alert, suppressed: int) -> None:
        if self._pending[channel.name] >= self._settings().queue_size:
            self._count(alert.event, "dropped")
            if channel.name not in self._dropping:
                self._dropping.add(channel.name)
                self._log.warning(
                    "alerts_dropped",
                    channel=channel.name,
                    reason="alerts.queue_size deliveries already wait for this channel",
                )
            return
        self._dropping.discard(channel.name)
        self._pending[channel.name] += 1
        self._idle.clear()
        self.queue.put_nowait(Delivery(channel, alert, suppressed))

    def _count(self, event: AlertEvent, result: AlertResult) -> None:
        self.counts[(event, result)] += 1
        if self._metrics is not None:
            self._metrics.alerts.labels(event, result).inc()

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight, all channels."""
        return sum(self._pending.values())

    # -- delivery --------------------------------------------------------------------------

    async def run(self) -> None:
        resolver = GuardedResolver(self._guard)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, resolver=resolver)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": USER_AGENT},
        )
        flusher = asyncio.create_task(self._flush_loop(), name="alerts-flush")
        try:
            while True:
                delivery = await self.queue.get()
                task = asyncio.create_task(self._deliver(session, delivery))
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._done, delivery.channel.name))
        finally:
            flusher.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(flusher, *self._tasks, return_exceptions=True)
            await session.close()

    async def drain(self, timeout_s: float) -> bool:
        """Send what the windows hold and wait (at most ``timeout_s``) for every delivery to
        end; False when some were still pending."""
        self.flush(force=True)
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            self._log.warning("alerts_drain_expired", pending=self.pending)
            return False
        return True

    def _done(self, channel: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pending[channel] -= 1
        if self._pending[channel] <= 0:
            del self._pending[channel]
        if not self._pending:
            self._idle.set()

    async def _flush_loop(self) -> None:
        while True:
            now = self._clock.monotonic()
            ends = [w.ends_at - now for w in self._windows.values()]
            await self._clock.sleep(max(min([FLUSH_TICK_S, *ends]), 0.0))
            self.flush()

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        channel, alert = delivery.channel, delivery.alert
        log = self._log.bind(channel=channel.name, alert=alert.event)  # never the URL
        url = channel.url.get_secret_value()
        redact = _redactor(url)
        try:
            body = json.dumps(payload(channel.kind, alert, delivery.suppressed, self._owner))
        except (TypeError, ValueError) as exc:  # pragma: no cover - fields are plain values
            self._count(alert.event, "failed")
            log.error("alert_failed", error=f"unencodable alert: {exc}")
            return
        slot = self._slots.setdefault(channel.name, asyncio.Semaphore(CHANNEL_CONCURRENCY))
        async with slot:
            attempt = 0
            while True:
                attempt += 1
                s = self._settings()
                error, retryable, wait_s = await self._post(
                    session, url, body.encode(), s.timeout_s, redact
                )
                if error is None:
                    self._count(alert.event, "sent")
                    log.info("alert_sent", attempt=attempt, suppressed=delivery.suppressed)
                    return
                if not retryable or attempt >= s.max_attempts:
                    self._count(alert.event, "failed")
                    log.error("alert_failed", attempts=attempt, error=error)
                    return
                delay = max(
                    self._backoff.delay(attempt, self._rng), min(wait_s or 0.0, RETRY_CAP_S)
                )
                log.warning(
                    "alert_delivery_retry", attempt=attempt, error=error, retry_in_s=round(delay, 3)
                )
                await self._clock.sleep(delay)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        timeout_s: float,
        redact: Redactor,
    ) -> tuple[str | None, bool, float | None]:
        """One attempt: (error or None, retryable, the receiver's Retry-After)."""
        try:
            target = URL(url)
            check_literal(target.host or "", self._guard())
            async with session.post(
                target,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                ok, retryable = classify(resp.status)
                if ok:
                    return None, False, None
                wait = retry_after(resp.headers.get("Retry-After")) if retryable else None
                return f"HTTP {resp.status}", retryable, wait
        except BlockedTarget as exc:
            return redact(str(exc)), False, None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedTarget):
                return redact(str(exc.os_error)), False, None
            return redact(f"{type(exc).__name__}: {exc}"), True, None
        except TimeoutError:
            return f"no answer within {timeout_s:g}s (alerts.timeout_s)", True, None
        except aiohttp.InvalidURL:
            return "invalid channel URL", False, None
        except (aiohttp.ClientError, OSError) as exc:
            return redact(f"{type(exc).__name__}: {exc}"), True, None
        except ValueError:
            return "invalid channel URL", False, None


def _interval(channel: AlertChannel, settings: AlertsSettings) -> float:
    if channel.min_interval_s is not None:
        return channel.min_interval_s
    return settings.dedupe_window_s
