"""A schedule's rule in words: presets, intervals, the common cron shapes, and the fallback to
the expression for shapes the words do not cover."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from scheduler_daemon.domain.describe import describe
from scheduler_daemon.domain.recurrence import Recurrence, for_task, validate

OSLO = "Europe/Oslo"
NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (Recurrence(preset="weekly", weekday=0, at=time(9), timezone=OSLO),
         "every Monday at 09:00 Europe/Oslo"),
        (Recurrence(preset="weekly", weekday=6, at=time(18, 45)),
         "every Sunday at 18:45 UTC"),
        (Recurrence(preset="daily", at=time(6, 30)), "every day at 06:30 UTC"),
        (Recurrence(preset="daily"), "every day at 00:00 UTC"),
        (Recurrence(preset="daily", at=time(6, 30, 15), timezone="America/New_York"),
         "every day at 06:30:15 America/New_York"),
        (Recurrence(preset="monthly", day_of_month=1, timezone=OSLO),
         "on day 1 of every month at 00:00 Europe/Oslo"),
        (Recurrence(preset="monthly", day_of_month=31, at=time(23, 59)),
         "on day 31 of every month at 23:59 UTC (months without a day 31 are skipped)"),
        (Recurrence(preset="hourly", at=time(0, 5)), "at minute 5 of every hour UTC"),
        (Recurrence(preset="hourly"), "at minute 0 of every hour UTC"),
        (Recurrence(preset="hourly", at=time(0, 5, 30), timezone="Asia/Kolkata"),
         "at minute 5, second 30 of every hour Asia/Kolkata"),
    ],
)  # fmt: skip
def test_presets(rule: Recurrence, words: str) -> None:
    validate(rule, NOW)  # the shapes are real rules
    assert describe(rule) == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "every second"),
        (1.5, "every 1.5 seconds"),
        (45, "every 45 seconds"),
        (90, "every 90 seconds"),
        (60, "every minute"),
        (900, "every 15 minutes"),
        (3600, "every hour"),
        (5400, "every 90 minutes"),
        (7200, "every 2 hours"),
        (86_400, "every day"),
        (3 * 86_400, "every 3 days"),
    ],
)
def test_intervals_name_no_zone(seconds: float, words: str) -> None:
    rule = Recurrence(interval_s=seconds, timezone=OSLO, start_at=NOW)
    validate(rule, NOW)
    assert describe(rule) == words


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("5 * * * *", "at minute 5 of every hour"),
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0,30 * * * *", "every 30 minutes"),
        ("5-59/15 * * * *", "at minutes 5, 20, 35 and 50 of every hour"),
        ("0 */2 * * *", "every 2 hours at minute 0"),
        ("30 */6 * * *", "every day at 00:30, 06:30, 12:30 and 18:30"),
        ("0 8-18/2 * * *", "at 08:00, 10:00, 12:00, 14:00, 16:00 and 18:00"),
        ("30 6 * * *", "every day at 06:30"),
        ("0 9,17 * * *", "every day at 09:00 and 17:00"),
        ("5-5 9 * * *", "every day at 09:05"),
        ("0 9 * * 1", "every Monday at 09:00"),
        ("0 9 * * MON,fri", "every Monday and Friday at 09:00"),
        ("0 12 * * 0,6", "every Saturday and Sunday at 12:00"),
        ("0 12 * * 7", "every Sunday at 12:00"),
        ("30 6 * * 1-5", "every day from Monday to Friday at 06:30"),
        ("0 9 * * 1-5/2", "every Monday, Wednesday and Friday at 09:00"),
        ("*/15 9-17 * * 1-5", "every 15 minutes from 09:00 to 17:45, Monday to Friday"),
        ("* 9 * * *", "every minute from 09:00 to 09:59"),
        ("*/5 * * * 1", "every 5 minutes on Mondays"),
        ("0 0 1 * *", "on day 1 of every month at 00:00"),
        ("0 9 1,15 * *", "on days 1 and 15 of every month at 09:00"),
        ("0 0 1 1 *", "on day 1 of January at 00:00"),
        ("0 0 1 JAN,jul *", "on day 1 of January and July at 00:00"),
        ("0 0 1 3-10 *", "on day 1 of each month from March to October at 00:00"),
        ("0 9 * 3-10 *", "every day from March to October at 09:00"),
        ("0 9 * 1,7 *", "every day in January and July at 09:00"),
        ("0 9 * 3-10 1-5", "every day from Monday to Friday, March to October at 09:00"),
        ("*/5 * * 6-8 *", "every 5 minutes, June to August"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("* * * * * *", "every second"),
        ("30 * * * * *", "at second 30 of every minute"),
        ("0 30 9 * * *", "every day at 09:30"),
        ("15 30 9 * * 1", "every Monday at 09:30:15"),
    ],
)
def test_cron_shapes_in_words(cron: str, words: str) -> None:
    rule = Recurrence(cron=cron, timezone=OSLO)
    validate(rule, NOW)
    assert describe(rule) == f"{words} (cron {cron}) Europe/Oslo"


@pytest.mark.parametrize(
    "cron",
    [
        "*/7 * * * *",  # restarts at each hour: not "every 7 minutes"
        "0 9 1 * 1",  # both day fields: day 1 OR Monday
        "0 9 1-31 * 1-5",  # the same rule of either, spelt out
        "0 0 L * *",  # croniter's last day of the month
        "0 0 * * 5#2",  # the second Friday
        "0 0 1,2,3,4,5,6,7,8 * *",  # too many days to list
        "1,2,3,4,5,6,7,8 * * * *",  # too many minutes to list
        "*/20 * 9 * * *",  # every 20 seconds, but only at 09:xx
        "5 1,7,9,10,11,13,15,23 * * *",  # eight hours of no rhythm
        "15 */2 * * * *",  # a second within an every-other-minute rhythm
    ],
)
def test_shapes_without_words_fall_back_to_the_expression(cron: str) -> None:
    rule = Recurrence(cron=cron, timezone=OSLO)
    validate(rule, NOW)
    assert describe(rule) == f"cron {cron} (Europe/Oslo)"


def test_spacing_is_normalised_in_the_expression() -> None:
    assert (
        describe(Recurrence(cron="  0   9 * *  1 ")) == "every Monday at 09:00 (cron 0 9 * * 1) UTC"
    )
    assert describe(Recurrence(cron="0  0 L * *")) == "cron 0 0 L * * (UTC)"


def test_a_tasks_recurrence_reads_like_its_schedule() -> None:
    run_at = datetime(2025, 6, 2, 7, 15, tzinfo=UTC)  # a Monday
    assert describe(for_task("weekly", run_at)) == "every Monday at 07:15 UTC"
    assert describe(for_task("monthly", run_at)) == "on day 2 of every month at 07:15 UTC"
    assert describe(for_task("*/5 * * * *", run_at)) == "every 5 minutes (cron */5 * * * *) UTC"
