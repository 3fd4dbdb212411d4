"""Alerts without I/O: deduplication windows on a fake clock, the bounded queue, payload shapes,
settings, and the engine's hooks (completer, rescuer, watchdog)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from scheduler_daemon.alerts import (
    Alert,
    Alerter,
    Delivery,
    component_stalled,
    schedule_misfired,
    slack_payload,
    task_failed,
    webhook_payload,
)
from scheduler_daemon.domain.models import AttemptResult, Outcome, TaskStatus
from scheduler_daemon.engine.completer import Completer
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.leases import Rescuer
from scheduler_daemon.engine.watchdog import Watchdog
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import AlertsSettings, Settings, WatchdogSettings, masked
from scheduler_daemon.store.base import Rescued
from tests.fakes import FakeClock, FakeEngineStore

HOOK = "https://hooks.example.com/services/T000/B000/secret-part"


def alerts_settings(**overrides: Any) -> AlertsSettings:
    channels = overrides.pop("channels", [{"name": "ops", "kind": "webhook", "url": HOOK}])
    return AlertsSettings(channels=channels, **overrides)


def make(settings: AlertsSettings) -> tuple[Alerter, FakeClock]:
    clock = FakeClock()
    return Alerter(lambda: settings, "host/1/abc", clock), clock


def taken(alerter: Alerter) -> list[Delivery]:
    """Every delivery queued so far (taken off the queue)."""
    out = []
    while not alerter.queue.empty():
        out.append(alerter.queue.get_nowait())
    return out


def failed(action: str = "webhook", queue: str = "default", n: int = 0) -> Alert:
    return task_failed(uuid.uuid4(), action, queue, 3, f"HTTP 500 from POST example.com #{n}")


# -- deduplication ---------------------------------------------------------------------------


def test_first_alert_is_sent_repeats_are_counted_and_flushed_at_window_end() -> None:
    alerter, clock = make(alerts_settings(dedupe_window_s=300))
    alerter.emit(failed(n=0))
    for n in range(1, 13):
        clock.jump(10)
        alerter.emit(failed(n=n))
    [first] = taken(alerter)
    assert first.suppressed == 0
    assert first.alert.error is not None
    assert first.alert.error.endswith("#0")
    assert alerter.counts[("task_failed", "suppressed")] == 12

    clock.jump(170)  # 290 s into the window: not yet
    alerter.flush()
    assert taken(alerter) == []
    clock.jump(10)  # the window ends
    alerter.flush()
    [summary] = taken(alerter)
    assert summary.suppressed == 12
    assert summary.alert.error is not None
    assert summary.alert.error.endswith("#12")  # the latest of them
    body = webhook_payload(summary.alert, summary.suppressed, "me")
    assert body["suppressed"] == 12
    assert body["summary"].endswith("(and 12 more like it)")

    # A new window started with the flush: the next repeat is suppressed again...
    alerter.emit(failed(n=13))
    assert taken(alerter) == []
    # ...and a window that ends with nothing in it is forgotten.
    clock.jump(300)
    alerter.flush()
    clock.jump(300)
    alerter.flush()
    assert [d.suppressed for d in taken(alerter)] == [1]
    alerter.emit(failed(n=14))
    assert [d.suppressed for d in taken(alerter)] == [0]


def test_the_next_alert_after_the_window_carries_the_count_when_no_flush_ran() -> None:
    alerter, clock = make(alerts_settings(dedupe_window_s=60))
    for n in range(5):
        alerter.emit(failed(n=n))
    clock.jump(61)
    alerter.emit(failed(n=5))
    assert [d.suppressed for d in taken(alerter)] == [0, 4]
    alerter.flush()  # the count went out with that alert: nothing more to flush
    clock.jump(61)
    alerter.flush()
    assert taken(alerter) == []


def test_different_action_queue_component_or_schedule_are_not_deduplicated() -> None:
    alerter, _ = make(alerts_settings())
    schedule_a, schedule_b = uuid.uuid4(), uuid.uuid4()
    for alert in (
        failed("webhook", "default"),
        failed("webhook", "billing"),
        failed("sqs", "default"),
        task_failed(uuid.uuid4(), "webhook", "default", 1, "x"),  # same key as the first
        component_stalled("completer", 130.0),
        component_stalled("heartbeat", 130.0),
        schedule_misfired(schedule_a, "a", missed=3, skipped=2, policy="run_once"),
        schedule_misfired(schedule_b, "b", missed=3, skipped=3, policy="skip"),
        schedule_misfired(schedule_a, "a", missed=1, skipped=0, policy="run_once"),
    ):
        alerter.emit(alert)
    sent = taken(alerter)
    assert [(d.alert.event, d.alert.action, d.alert.queue) for d in sent[:3]] == [
        ("task_failed", "webhook", "default"),
        ("task_failed", "webhook", "billing"),
        ("task_failed", "sqs", "default"),
    ]
    assert [d.alert.component for d in sent[3:5]] == ["completer", "heartbeat"]
    assert [d.alert.schedule_id for d in sent[5:]] == [schedule_a, schedule_b]
    assert alerter.counts[("task_failed", "suppressed")] == 1
    assert alerter.counts[("schedule_misfired", "suppressed")] == 1


def test_channels_get_their_events_only_each_with_its_own_window() -> None:
    settings = alerts_settings(
        dedupe_window_s=300,
        channels=[
            {"name": "all", "kind": "webhook", "url": HOOK},
            {"name": "stalls", "kind": "slack", "url": HOOK, "events": ["component_stalled"]},
            {"name": "chatty", "kind": "webhook", "url": HOOK, "min_interval_s": 0},
        ],
    )
    alerter, _ = make(settings)
    alerter.emit(failed())
    alerter.emit(failed())
    alerter.emit(component_stalled("expander", 200.0))
    sent = [(d.channel.name, d.alert.event) for d in taken(alerter)]
    assert sent == [
        ("all", "task_failed"),
        ("chatty", "task_failed"),
        ("chatty", "task_failed"),  # min_interval_s = 0: never deduplicated
        ("all", "component_stalled"),
        ("stalls", "component_stalled"),
        ("chatty", "component_stalled"),
    ]


def test_drain_flush_sends_what_the_windows_hold_before_they_end() -> None:
    alerter, _ = make(alerts_settings(dedupe_window_s=300))
    for n in range(4):
        alerter.emit(failed(n=n))
    alerter.emit(component_stalled("completer", 130.0))  # nothing suppressed: stays quiet
    taken(alerter)
    alerter.flush(force=True)
    [summary] = taken(alerter)
    assert (summary.alert.event, summary.suppressed) == ("task_failed", 3)


# -- never blocking, never raising -----------------------------------------------------------


def test_a_full_queue_drops_and_counts_without_raising() -> None:
    metrics = Metrics(version="t")
    settings = alerts_settings(queue_size=2)
    alerter = Alerter(lambda: settings, "me", FakeClock(), metrics=metrics)
    for n in range(5):
        alerter.emit(failed(queue=f"q{n}", n=n))  # five keys: none deduplicated
    assert alerter.queue.qsize() == 2
    assert alerter.pending == 2
    assert alerter.counts[("task_failed", "dropped")] == 3
    text = metrics.render().decode()
    assert 'scheduler_alerts_total{event="task_failed",result="dropped"} 3.0' in text


def test_emit_without_channels_does_nothing() -> None:
    alerter, _ = make(AlertsSettings())
    alerter.emit(failed())
    assert alerter.queue.empty()
    assert not alerter.counts


def test_emit_never_raises() -> None:
    def broken() -> AlertsSettings:
        raise RuntimeError("settings gone")

    alerter = Alerter(broken, "me", FakeClock())
    alerter.emit(failed())  # logged, not raised
    alerter.flush()


# -- payloads ----------------------------------------------------------------------------------


def test_webhook_payload_fields() -> None:
    alerter, clock = make(alerts_settings())
    task_id = uuid.uuid4()
    alerter.emit(task_failed(task_id, "webhook", "billing", 3, "HTTP 400 from POST example.com"))
    [d] = taken(alerter)
    body = webhook_payload(d.alert, d.suppressed, "host/1/abc")
    assert body == {
        "event": "task_failed",
        "summary": f"Task {task_id} (webhook on queue billing) failed for good after attempt 3: "
        "HTTP 400 from POST example.com",
        "occurred_at": clock.now().isoformat(),
        "task_id": str(task_id),
        "action": "webhook",
        "queue": "billing",
        "schedule_id": None,
        "component": None,
        "error": "HTTP 400 from POST example.com",
        "attempts": 3,
        "missed": None,
        "skipped": None,
        "suppressed": 0,
        "daemon": "host/1/abc",
    }
    json.dumps(body)


def test_slack_payload_shape() -> None:
    task_id = uuid.uuid4()
    alert = task_failed(task_id, "webhook", "q<1>", 2, "boom & <bang>")
    body = slack_payload(alert, 12, "host/1/abc")
    assert set(body) == {"text", "blocks"}
    assert body["text"].endswith("(and 12 more like it)")
    section, context = body["blocks"]
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    assert text.startswith("*Task failed*\n")
    assert "boom &amp; &lt;bang&gt;" in text  # Slack's three escapes
    assert "<" not in text.replace("&lt;", "")
    assert context["type"] == "context"
    elements = context["elements"]
    assert 1 <= len(elements) <= 10
    assert all(e["type"] == "mrkdwn" for e in elements)
    texts = [e["text"] for e in elements]
    assert f"*task_id:* {task_id}" in texts
    assert "*queue:* q&lt;1&gt;" in texts
    assert "*suppressed:* 12" in texts
    assert "*daemon:* host/1/abc" in texts
    json.dumps(body)


def test_long_errors_are_cut() -> None:
    alert = task_failed(uuid.uuid4(), "webhook", "default", 1, "x" * 10_000)
    assert alert.error is not None
    assert len(alert.error) == 1000
    assert len(alert.summary) < 400
    section = slack_payload(alert, 0, "me")["blocks"][0]["text"]["text"]
    assert len(section) <= 3000


# -- settings ------------------------------------------------------------------------------


def test_channel_urls_are_masked_and_names_unique() -> None:
    s = Settings(alerts={"channels": [{"name": "ops", "kind": "slack", "url": HOOK}]})
    data = masked(s)
    assert data["alerts"]["channels"][0]["url"] == "***"
    assert data["alerts"]["channels"][0]["events"] == [
        "task_failed",
        "task_rescued",
        "component_stalled",
        "schedule_misfired",
    ]
    assert "secret-part" not in repr(data)
    assert "secret-part" not in repr(s)
    with pytest.raises(ValueError, match=r"alerts\.channels[\s\S]*ops repeated") as exc:
        Settings(
            alerts={
                "channels": [
                    {"name": "ops", "kind": "slack", "url": HOOK},
                    {"name": "ops", "kind": "webhook", "url": HOOK},
                ]
            }
        )
    assert "secret-part" not in str(exc.value)


def test_channel_kind_events_and_url_are_checked() -> None:
    for bad in (
        {"name": "x", "kind": "email", "url": HOOK},
        {"name": "x", "kind": "slack", "url": HOOK, "events": ["task_exploded"]},
        {"name": "x", "kind": "slack", "url": "ftp://hooks.example.com/x"},
    ):
        with pytest.raises(ValueError, match=r"alerts\.channels\.0"):
            Settings(alerts={"channels": [bad]})


# -- the hooks -----------------------------------------------------------------------------


@dataclass
class Sink:
    alerts: list[Alert] = field(default_factory=list)

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)


async def test_completer_alerts_tasks_that_failed_for_good() -> None:
    clock = FakeClock()
    sink = Sink()
    results: asyncio.Queue[AttemptResult] = asyncio.Queue()
    completer = Completer(FakeEngineStore(), results, InFlight(10, clock), "me", clock, alerts=sink)
    dead, retried, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for result in (
        AttemptResult(
            dead, 3, Outcome.FAILED, TaskStatus.FAILED, error="HTTP 400", action="webhook"
        ),
        AttemptResult(retried, 1, Outcome.FAILED, TaskStatus.SCHEDULED, retry_in_s=1, error="x"),
        AttemptResult(done, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED),
    ):
        results.put_nowait(result)
    runner = asyncio.create_task(completer.run())
    try:
        async with asyncio.timeout(5):
            await completer.flush()
    finally:
        runner.cancel()
    [alert] = sink.alerts
    assert (alert.event, alert.task_id, alert.action, alert.queue) == (
        "task_failed",
        dead,
        "webhook",
        "default",
    )
    assert (alert.attempts, alert.error) == (3, "HTTP 400")


class RescuingStore(FakeEngineStore):
    def __init__(self, rescued: list[Rescued]) -> None:
        super().__init__()
        self.rescued = rescued

    async def rescue_expired(self, limit: int) -> list[Rescued]:
        out, self.rescued = self.rescued, []
        return out


async def test_rescuer_alerts_each_rescue_and_a_last_attempt_as_failed() -> None:
    again, dead = uuid.uuid4(), uuid.uuid4()
    store = RescuingStore(
        [
            Rescued(again, TaskStatus.SCHEDULED, 1, "host/9/dead", "webhook", "default"),
            Rescued(dead, TaskStatus.FAILED, 3, "host/9/dead", "webhook", "default"),
        ]
    )
    sink = Sink()
    rescuer = Rescuer(store, FakeClock(), interval_s=lambda: 1.0, alerts=sink)
    assert await rescuer.sweep() == 2
    assert [(a.event, a.task_id) for a in sink.alerts] == [
        ("task_rescued", again),
        ("task_rescued", dead),
        ("task_failed", dead),
    ]
    assert "host/9/dead" in sink.alerts[0].summary
    assert sink.alerts[2].error == "lease expired on the last attempt"


def test_watchdog_alerts_a_newly_stalled_component_once() -> None:
    clock = FakeClock()
    sink = Sink()
    dog = Watchdog(clock, lambda: WatchdogSettings(stall_after_s=10), alerts=sink)
    report = dog.reporter("expander", quiet_s=lambda: 5.0)
    clock.jump(16)
    dog.check()
    dog.check()  # still stalled: no second alert
    assert [(a.event, a.component) for a in sink.alerts] == [("component_stalled", "expander")]
    report()
    dog.check()
    clock.jump(16)
    dog.check()  # stalled anew
    assert len(sink.alerts) == 2
