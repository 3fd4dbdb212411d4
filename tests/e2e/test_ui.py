"""The dashboard at /ui in a real browser: the real daemon process, data made through the HTTP
API, headless Chromium clicking through every page, and every change checked through the API
(not only on the page). Screenshots of every page land in test-output/ui/."""

from __future__ import annotations

import base64
import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, Page, expect
from yarl import URL

from scheduler_daemon.enqueue import enqueue
from tests.e2e.browser import (
    DESKTOP,
    PHONE,
    PageErrors,
    accessibility_violations,
    horizontal_overflow,
    launch,
    new_page,
    screenshot,
)
from tests.e2e.conftest import (
    FAST_RETRIES,
    Api,
    DaemonProcess,
    StartDaemon,
    WebhookReceiver,
    webhook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

expect.set_options(timeout=15_000)

SIGNING_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
WEEKLY = {
    "name": "weekly-newsletter",
    "preset": "weekly",
    "weekday": 0,
    "at": "09:00",
    "timezone": "Europe/Oslo",
    "task": {"action": "log", "payload": {"message": "weekly newsletter"}},
}
LATER = 3600  # delay_s of tasks that must stay scheduled for the whole test


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch() as chromium:
        yield chromium


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    errors = PageErrors()
    tab = await new_page(browser, errors)
    try:
        yield tab
    finally:
        await tab.context.close()
    assert not errors.messages, "\n".join(errors.messages)


@pytest.fixture
async def daemon(start_daemon: StartDaemon) -> DaemonProcess:
    """Anonymous mode: no tokens, loopback only."""
    return await start_daemon(FAST_RETRIES)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    status: int = 200,
    token: str | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as resp:
        data = await resp.json(content_type=None) if resp.status != 204 else None
        assert resp.status == status, (method, url, resp.status, data)
        return data


async def create_tasks(
    http: aiohttp.ClientSession, daemon: DaemonProcess, *tasks: Any
) -> list[str]:
    data = await call(
        http, "POST", f"{daemon.base_url}/v1/tasks/batch", {"tasks": list(tasks)}, status=201
    )
    return [t["id"] for t in data["items"]]


async def failed_tasks(api: Api, receiver: WebhookReceiver, count: int, **extra: Any) -> list[str]:
    """``count`` webhook tasks that fail for good (the receiver answers 400: not retried)."""
    receiver.status = 400
    ids = [
        (await api.create_task(webhook(receiver, {"n": n}, **extra)))["id"] for n in range(count)
    ]
    for task_id in ids:
        await api.wait_for_status(task_id, "failed")
    return ids


async def loaded(page: Page) -> None:
    """The page's data arrived (each page marks its data container aria-busy=false)."""
    await expect(page.locator("main [aria-busy='false']").first).to_be_attached()


async def tab_to(page: Page, label: str, limit: int = 60) -> None:
    """Press Tab until the focused element's text is ``label``."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        text = await page.evaluate("() => (document.activeElement?.textContent ?? '').trim()")
        if text == label:
            return
    raise AssertionError(f"{label!r} not reached with {limit} Tab presses")


# -- serving --------------------------------------------------------------------------------


async def test_shell_assets_and_headers(daemon: DaemonProcess, http: aiohttp.ClientSession) -> None:
    base = daemon.base_url
    shells = []
    for path in ("/ui", "/ui/", "/ui/tasks/0b7c6f0e-3f5a-4d7e-9c1b-2a8e4f6d9b31", "/ui/queues"):
        async with http.get(f"{base}{path}") as resp:
            assert resp.status == 200, path
            assert resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp, csp
            assert "script-src 'self'" in csp, csp
            assert "unsafe-inline" not in csp
            assert resp.headers["Cache-Control"] == "no-cache"
            shells.append(await resp.text())
    assert len(set(shells)) == 1
    shell = shells[0]
    assert "<script>" not in shell  # nothing inline
    assert " style=" not in shell
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', shell)
    assert {a.rsplit("/", 1)[1] for a in assets} == {"icon.svg", "style.css", "app.js"}, assets
    for asset in assets:
        async with http.get(f"{base}{asset}") as resp:
            assert resp.status == 200, asset
            assert "immutable" in resp.headers["Cache-Control"], asset
            if asset.endswith(".js"):
                assert resp.content_type == "text/javascript", resp.content_type
    prefix = assets[0].rsplit("/", 1)[0]
    async with http.get(f"{base}{prefix}/pages/tasks.js") as resp:
        assert resp.status == 200
    # Outside the static folder, or a file it does not have: 404.
    for bad in (f"{prefix}/../routes.py", f"{prefix}/%2e%2e/routes.py", f"{prefix}/nope.js"):
        async with http.get(URL(f"{base}{bad}", encoded=True)) as resp:
            assert resp.status == 404, bad
    # Another release's prefix: served, but revalidated.
    async with http.get(f"{base}/ui/static/0000/app.js") as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-cache"
    # Not part of the API contract.
    document = await call(http, "GET", f"{base}/openapi.json")
    assert not [p for p in document["paths"] if p.startswith("/ui")]
    assert await call(http, "GET", f"{base}/ui/api/whoami") == {
        "anonymous": True,
        "name": None,
        "role": "admin",
    }


# -- pages ----------------------------------------------------------------------------------


async def test_overview_shows_counts_health_and_charts(
    daemon: DaemonProcess,
    api_for: Any,
    http: aiohttp.ClientSession,
    receiver: WebhookReceiver,
    page: Page,
) -> None:
    api: Api = api_for(daemon)
    done = await create_tasks(
        http, daemon, {"action": "noop"}, {"action": "noop"}, {"action": "noop"}
    )
    for task_id in done:
        await api.wait_for_status(task_id, "completed")
    await failed_tasks(api, receiver, 1)
    await create_tasks(
        http,
        daemon,
        {"action": "noop", "delay_s": LATER},
        {"action": "noop", "delay_s": LATER, "queue": "emails"},
    )
    stats = await call(http, "GET", f"{daemon.base_url}/v1/stats")

    await page.goto(f"{daemon.base_url}/ui")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    await loaded(page)
    await expect(page.locator("#readiness")).to_have_text(
        "Ready" if stats["ready"] else "Not ready"
    )
    by_status = stats["counts"]["by_status"]
    assert (by_status["completed"], by_status["failed"], by_status["scheduled"]) == (3, 1, 2)
    for status in ("completed", "failed", "scheduled", "cancelled"):
        await expect(page.locator(f"[data-metric='{status}']")).to_have_text(str(by_status[status]))
    await expect(page.locator("[data-metric='Failed in the last hour']")).to_have_text(
        str(stats["counts"]["failed_last_hour"])
    )
    await expect(page.locator("[data-metric='Due now']")).to_have_text(
        str(stats["counts"]["due_now"])
    )
    emails = page.get_by_role("row", name=re.compile(r"^emails"))
    await expect(emails.locator("td").nth(1)).to_have_text("1")  # scheduled

    # Two charts, each an image with a title and a description, and its data as a table.
    charts = page.locator("svg.chart")
    await expect(charts).to_have_count(2)
    await expect(
        page.get_by_role("img", name=re.compile("Tasks finished per minute"))
    ).to_be_visible()
    await expect(page.get_by_role("img", name=re.compile("Start lag"))).to_be_visible()
    assert await page.locator("svg.chart rect.bar.completed").count() >= 1
    assert await page.locator("svg.chart polyline.line.p50, svg.chart circle.dot.p50").count() >= 1
    desc = await page.locator("svg.chart desc").first.text_content()
    assert desc is not None
    assert "3 completed and 1 failed" in desc, desc
    await screenshot(page, "overview")
    await page.get_by_text("Show the data as a table").first.click()
    await expect(page.locator("details[open] tbody tr")).to_have_count(len(stats["minutes"]))


async def test_tasks_list_filters_search_paging_and_refresh(
    daemon: DaemonProcess,
    api_for: Any,
    http: aiohttp.ClientSession,
    receiver: WebhookReceiver,
    page: Page,
) -> None:
    api: Api = api_for(daemon)
    [failed] = await failed_tasks(api, receiver, 1)
    later = await create_tasks(
        http, daemon, *({"action": "noop", "delay_s": LATER, "priority": n} for n in range(11))
    )
    [keyed] = await create_tasks(
        http,
        daemon,
        {
            "action": "log",
            "payload": {"message": "hi"},
            "delay_s": LATER,
            "idempotency_key": "invoice-2024-0042",
        },
    )
    first = await call(http, "GET", f"{daemon.base_url}/v1/tasks?limit=10")
    second = await call(
        http, "GET", f"{daemon.base_url}/v1/tasks?limit=10&cursor={first['next_cursor']}"
    )
    assert second["next_cursor"] is None
    assert len(second["items"]) == 3
    assert {t["id"] for t in first["items"] + second["items"]} == {failed, keyed, *later}

    async def shown_ids() -> list[str | None]:
        return [await row.get_attribute("data-task-id") for row in await rows.all()]

    await page.goto(f"{daemon.base_url}/ui/tasks?limit=10")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tasks")
    rows = page.locator("table.tasks tbody tr")
    await expect(rows).to_have_count(10)
    assert await shown_ids() == [t["id"] for t in first["items"]]  # newest first, as the API
    for task in first["items"]:
        await expect(page.locator(f"a[href='/ui/tasks/{task['id']}']")).to_be_visible()
    keyed_row = page.locator(f"tr[data-task-id='{keyed}']")
    await expect(keyed_row).to_contain_text("invoice-2024-0042")
    task = await api.get_task(keyed)
    await expect(keyed_row.locator(f"time[datetime='{task['run_at']}']")).to_be_visible()
    await screenshot(page, "tasks")

    # Cursor paging, forward and back.
    await page.get_by_role("button", name="Next →").click()
    await expect(rows).to_have_count(3)
    assert await shown_ids() == [t["id"] for t in second["items"]]
    await expect(page.get_by_text("Page 2")).to_be_visible()
    await page.get_by_role("button", name="← Previous").click()
    await expect(rows).to_have_count(10)
    assert await shown_ids() == [t["id"] for t in first["items"]]

    # Filters.
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-task-id", failed)
    assert "status=failed" in page.url
    await expect(rows.first).to_contain_text("400")  # the last error

    # Search by idempotency-key prefix, then by id.
    await page.get_by_role("button", name="Clear").click()
    await expect(rows).to_have_count(13)
    await page.get_by_label("Search").fill("invoice-2024")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-task-id", keyed)
    await page.get_by_label("Search").fill(failed)
    await page.get_by_label("Search").press("Enter")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-task-id", failed)

    # Auto-refresh picks up a task created meanwhile.
    await page.get_by_role("button", name="Clear").click()
    await expect(rows).to_have_count(13)
    await page.get_by_label("Auto-refresh every 5 s").check()
    [fresh] = await create_tasks(http, daemon, {"action": "noop", "delay_s": LATER})
    await expect(page.locator(f"tr[data-task-id='{fresh}']")).to_be_visible()
    await page.get_by_label("Auto-refresh every 5 s").uncheck()


async def test_task_page_actions_change_the_task(
    daemon: DaemonProcess,
    api_for: Any,
    http: aiohttp.ClientSession,
    receiver: WebhookReceiver,
    page: Page,
) -> None:
    api: Api = api_for(daemon)
    [failed] = await failed_tasks(api, receiver, 1, metadata={"team": "billing"})
    receiver.status = 200
    to_cancel, to_run = await create_tasks(
        http, daemon, {"action": "noop", "delay_s": LATER}, {"action": "noop", "delay_s": LATER}
    )
    [signed] = await create_tasks(
        http,
        daemon,
        {
            "action": "webhook",
            "payload": {"url": receiver.url(), "signing_secret": SIGNING_SECRET},
            "delay_s": LATER,
        },
    )

    # A failed task: its error, its attempts, and only Retry.
    await page.goto(f"{daemon.base_url}/ui/tasks/{failed}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text(failed)
    await loaded(page)
    attempt = page.locator("li.attempt")
    await expect(attempt).to_have_count(1)
    await expect(attempt).to_contain_text("Attempt 1")
    await expect(attempt).to_contain_text("failed")
    await expect(attempt.locator("pre.error-text")).to_contain_text("400")
    await expect(page.locator("#metadata + pre")).to_contain_text('"team": "billing"')
    await expect(page.locator("button[data-action]")).to_have_count(1)
    await screenshot(page, "task")
    await page.get_by_role("button", name="Retry").click()
    await expect(page.locator("#status")).to_have_text(re.compile("re-queued"))
    await api.wait_for_status(failed, "completed")

    # Cancel a scheduled task.
    await page.goto(f"{daemon.base_url}/ui/tasks/{to_cancel}")
    await loaded(page)
    await expect(page.locator("button[data-action]")).to_have_count(2)  # cancel, run now
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator(".props .badge")).to_have_text("cancelled")
    assert (await api.get_task(to_cancel))["status"] == "cancelled"
    await expect(page.get_by_role("button", name="Retry")).to_be_focused()

    # Run now, with the keyboard only.
    await page.goto(f"{daemon.base_url}/ui/tasks/{to_run}")
    await loaded(page)
    await tab_to(page, "Run now")
    outline = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), outline  # the focus is visible
    await page.keyboard.press("Enter")
    await expect(page.locator("#status")).to_have_text(re.compile("due now"))
    await api.wait_for_status(to_run, "completed")
    # Auto-refresh shows what happened since.
    await page.get_by_label("Auto-refresh every 5 s").check()
    await expect(page.locator(".props .badge")).to_have_text("completed")
    await expect(page.locator("li.attempt")).to_contain_text("succeeded")

    # The secret in a payload is shown masked.
    await page.goto(f"{daemon.base_url}/ui/tasks/{signed}")
    await loaded(page)
    payload = page.locator("#payload + pre")
    await expect(payload).to_contain_text('"signing_secret": "***"')
    assert SIGNING_SECRET not in (await page.content())


async def test_schedules_page_pause_resume_and_create_with_preview(
    daemon: DaemonProcess, http: aiohttp.ClientSession, page: Page
) -> None:
    base = daemon.base_url
    created = await call(http, "POST", f"{base}/v1/schedules", WEEKLY, status=201)
    preview = await call(http, "GET", f"{base}/v1/schedules/{created['id']}/preview?count=5")

    await page.goto(f"{base}/ui/schedules")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Schedules")
    row = page.locator(f"tr[data-schedule-id='{created['id']}']")
    await expect(row).to_contain_text("weekly-newsletter")
    words = created.get("description") or "every Monday at 09:00 Europe/Oslo"
    await expect(row.locator(".rule-words")).to_have_text(words)
    times = row.locator(".occurrences time")
    await expect(times).to_have_count(5)
    assert [await t.get_attribute("datetime") for t in await times.all()] == [
        o["utc"] for o in preview["occurrences"]
    ]
    await expect(row.locator(".badge")).to_have_text("active")

    await row.get_by_role("button", name="Pause weekly-newsletter").click()
    await expect(row.locator(".badge")).to_have_text("paused")
    assert (await call(http, "GET", f"{base}/v1/schedules/{created['id']}"))["paused"] is True
    await row.get_by_role("button", name="Resume weekly-newsletter").click()
    await expect(row.locator(".badge")).to_have_text("active")
    assert (await call(http, "GET", f"{base}/v1/schedules/{created['id']}"))["paused"] is False

    # The form previews the rule while it is typed.
    form = page.locator("form.create-schedule")
    await form.get_by_label("Name", exact=True).fill("weekday-report")
    await form.get_by_label("Kind of rule").select_option("cron")
    await form.get_by_label("Cron expression").fill("61 7 * * 1-5")
    await expect(page.locator("#preview .error-text")).to_contain_text("cron")
    await form.get_by_label("Cron expression").fill("30 7 * * 1-5")
    await form.get_by_label("Time zone").fill("Europe/Oslo")
    expected = await call(
        http,
        "POST",
        f"{base}/v1/schedules/preview?count=5",
        {
            "name": "x",
            "cron": "30 7 * * 1-5",
            "timezone": "Europe/Oslo",
            "task": {"action": "noop"},
        },
    )
    occurrences = page.locator("#preview .occurrences time")
    await expect(occurrences).to_have_count(5)
    await expect(occurrences.first).to_have_attribute("datetime", expected["occurrences"][0]["utc"])
    if expected.get("description"):
        await expect(page.locator("#preview-words")).to_have_text(expected["description"])
    await screenshot(page, "schedules")

    await form.get_by_role("button", name="Create schedule").click()
    await expect(page.locator("#status")).to_have_text("Schedule weekday-report created.")
    listed = await call(http, "GET", f"{base}/v1/schedules?name=weekday-report")
    [made] = listed["items"]
    assert (made["cron"], made["timezone"], made["task"]["action"]) == (
        "30 7 * * 1-5",
        "Europe/Oslo",
        "log",
    )
    assert made["task"]["payload"] == {"message": "scheduled from the dashboard"}
    await expect(page.locator(f"tr[data-schedule-id='{made['id']}']")).to_be_visible()

    # A name already taken: the form says so and creates nothing.
    await form.get_by_label("Name", exact=True).fill("weekday-report")
    await form.get_by_role("button", name="Create schedule").click()
    await expect(page.locator("#new-error")).to_contain_text("name: already used")
    listed = await call(http, "GET", f"{base}/v1/schedules?name=weekday-report")
    assert len(listed["items"]) == 1


async def test_dead_letters_retry_and_discard_selected(
    daemon: DaemonProcess,
    api_for: Any,
    http: aiohttp.ClientSession,
    receiver: WebhookReceiver,
    page: Page,
) -> None:
    api: Api = api_for(daemon)
    first, second, third = await failed_tasks(api, receiver, 3)
    receiver.status = 200

    await page.goto(f"{daemon.base_url}/ui/dead-letters")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Dead letters")
    rows = page.locator("table.dead-letters tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_contain_text("400")
    await screenshot(page, "dead-letters")

    await page.get_by_label(f"Select task {first}").check()
    await page.get_by_role("button", name="Retry selected (1)").click()
    await expect(page.locator("#status")).to_have_text("Re-queued 1 task.")
    await expect(rows).to_have_count(2)
    await api.wait_for_status(first, "completed")

    await page.get_by_label(f"Select task {second}").check()
    await page.get_by_label(f"Select task {third}").check()
    await page.get_by_role("button", name="Discard selected (2)…").click()
    await page.get_by_role("button", name="Delete 2 tasks").click()
    await expect(page.locator("#status")).to_have_text("Discarded 2 tasks.")
    await expect(page.get_by_text("No dead letters")).to_be_visible()
    for task_id in (second, third):
        await call(http, "GET", f"{daemon.base_url}/v1/tasks/{task_id}", status=404)


async def test_queues_page_pause_and_resume(
    daemon: DaemonProcess, http: aiohttp.ClientSession, page: Page
) -> None:
    base = daemon.base_url
    await create_tasks(
        http,
        daemon,
        {"action": "noop", "delay_s": LATER, "queue": "emails"},
        {"action": "noop", "delay_s": LATER, "queue": "emails"},
        {"action": "noop", "delay_s": LATER},
    )

    async def emails() -> dict[str, Any]:
        queues = (await call(http, "GET", f"{base}/v1/queues"))["queues"]
        [queue] = [q for q in queues if q["name"] == "emails"]
        assert isinstance(queue, dict)
        return queue

    await page.goto(f"{base}/ui/queues")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Queues")
    row = page.locator("tr[data-queue='emails']")
    await expect(row.locator("td").nth(1)).to_have_text("2")  # depth
    await expect(row.locator("td").nth(0)).to_have_text("active")
    await screenshot(page, "queues")

    await row.get_by_role("button", name="Pause queue emails").click()
    await expect(row.locator(".badge")).to_have_text("paused")
    assert (await emails())["paused"] is True
    await row.get_by_role("button", name="Resume queue emails").click()
    await expect(row.locator(".badge")).to_have_text("active")
    assert (await emails())["paused"] is False


async def test_tasks_no_running_daemon_can_run_are_shown(
    daemon: DaemonProcess, http: aiohttp.ClientSession, page: Page, database_url: str
) -> None:
    base = daemon.base_url
    # Written by a service that knows a handler this daemon does not have.
    conn = await asyncpg.connect(database_url)
    try:
        task_id = await enqueue(conn, "reports.build", {"n": 1}, queue="reports")
    finally:
        await conn.close()
    task = await call(http, "GET", f"{base}/v1/tasks/{task_id}")
    assert (task["status"], task["no_capable_worker"]) == ("scheduled", True)

    await page.goto(f"{base}/ui")
    await loaded(page)
    await expect(page.locator("#no-capable-worker li")).to_contain_text(
        "1 of action reports.build in queue reports"
    )
    await page.goto(f"{base}/ui/queues")
    row = page.locator("tr[data-queue='reports']")
    await expect(row.locator("[data-no-worker='1']")).to_contain_text("1 with no capable worker")
    await page.goto(f"{base}/ui/tasks/{task_id}")
    await expect(page.locator("#no-capable-worker")).to_contain_text("no running daemon")
    await screenshot(page, "task-no-capable-worker")


async def test_every_page_is_accessible_and_fits_a_phone(
    daemon: DaemonProcess,
    api_for: Any,
    http: aiohttp.ClientSession,
    receiver: WebhookReceiver,
    page: Page,
) -> None:
    api: Api = api_for(daemon)
    [failed] = await failed_tasks(api, receiver, 1)
    await create_tasks(http, daemon, {"action": "noop", "delay_s": LATER, "queue": "emails"})
    await call(http, "POST", f"{daemon.base_url}/v1/schedules", WEEKLY, status=201)
    pages = {
        "overview": "/ui",
        "tasks": "/ui/tasks",
        "task": f"/ui/tasks/{failed}",
        "schedules": "/ui/schedules",
        "dead-letters": "/ui/dead-letters",
        "queues": "/ui/queues",
    }
    for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(viewport)
        for name, path in pages.items():
            await page.goto(f"{daemon.base_url}{path}")
            await loaded(page)
            if name == "schedules":
                await expect(page.locator("#preview .occurrences li")).to_have_count(5)
            if name == "overview":  # the charts' data tables too
                for summary in await page.get_by_text("Show the data as a table").all():
                    await summary.click()
            violations = await accessibility_violations(page)
            assert not violations, (name, width, violations)
            assert await horizontal_overflow(page) <= 0, (name, width)
            if width == "phone":
                await screenshot(page, f"{name}-phone")


# -- tokens ---------------------------------------------------------------------------------

ROOT_TOKEN = "root-0123456789abcdef"
OPS_TOKEN = "ops-0123456789abcdef"
VIEWER_TOKEN = "viewer-0123456789abcdef"


def tokens_config(ops_role: str) -> str:
    tokens = [
        {"name": "root", "token": ROOT_TOKEN, "role": "admin"},
        {"name": "ops", "token": OPS_TOKEN, "role": ops_role},
        {"name": "viewer", "token": VIEWER_TOKEN, "role": "read"},
    ]
    entries = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in t.items()) + " }" for t in tokens
    )
    return f"[http]\ntokens = [{entries}]\n"


async def test_sign_in_roles_and_a_forbidden_action(
    start_daemon: StartDaemon, http: aiohttp.ClientSession, page: Page, tmp_path: Path
) -> None:
    config = tmp_path / "tokens.toml"
    config.write_text(tokens_config("admin"))
    daemon = await start_daemon({**FAST_RETRIES, "SCHEDULER_CONFIG": str(config)})
    base = daemon.base_url
    schedule = await call(
        http, "POST", f"{base}/v1/schedules", WEEKLY, status=201, token=ROOT_TOKEN
    )
    data = await call(
        http,
        "POST",
        f"{base}/v1/tasks",
        {"action": "noop", "delay_s": LATER},
        status=201,
        token=ROOT_TOKEN,
    )
    task_id = data["id"]

    # No token: the sign-in form, and a wrong token is refused.
    await page.goto(f"{base}/ui")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    token_input = page.get_by_label("API token")
    await expect(token_input).to_be_focused()
    assert not await accessibility_violations(page)
    await screenshot(page, "sign-in")
    await token_input.fill("not-a-token-0123456789")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#token-error")).to_have_text(re.compile("not accepted"))

    # A read-only token sees data, and no buttons it may not use.
    await token_input.fill(VIEWER_TOKEN)
    await token_input.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    await expect(page.locator("#identity")).to_contain_text("Signed in as viewer (role read)")
    await loaded(page)
    await expect(page.locator("[data-metric='scheduled']")).to_have_text("1")
    await page.get_by_role("link", name="Tasks", exact=True).click()
    await page.locator(f"a[href='/ui/tasks/{task_id}']").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(task_id)
    await expect(page.locator("#readonly-note")).to_contain_text("need the write role")
    await expect(page.locator("button[data-action]")).to_have_count(0)
    # The token is kept across reloads of the tab.
    await page.reload()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(task_id)

    # Sign out, and in again with a token that may pause schedules.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert await page.evaluate("() => sessionStorage.length") == 0
    await page.get_by_label("API token").fill(OPS_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#identity")).to_contain_text("ops (role admin)")
    await page.goto(f"{base}/ui/schedules")
    row = page.locator(f"tr[data-schedule-id='{schedule['id']}']")
    pause = row.get_by_role("button", name="Pause weekly-newsletter")
    await expect(pause).to_be_visible()

    # The operator lowers ops to read (SIGHUP): the page still shows the button; the API
    # refuses, and the page says why, next to it.
    config.write_text(tokens_config("read"))
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_for_log("config_reloaded")
    await pause.click()
    await expect(row.locator(".action-msg")).to_have_text(
        "Your token's role cannot do this: it needs the admin role."
    )
    got = await call(http, "GET", f"{base}/v1/schedules/{schedule['id']}", token=ROOT_TOKEN)
    assert got["paused"] is False
    await expect(page.locator("#preview .occurrences li")).to_have_count(5)
    await screenshot(page, "forbidden")
    # The header now shows the role in force, and the page drawn next leaves the button out.
    await expect(page.locator("#identity")).to_contain_text("ops (role read)")
    await page.get_by_role("link", name="Schedules").click()
    await expect(row.locator(".badge")).to_have_text("active")
    await expect(pause).to_have_count(0)
    await expect(page.locator("#readonly-note")).to_contain_text("needs the admin role")
