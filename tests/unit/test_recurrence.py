"""Recurrence rules: cron on the local wall clock with exact DST rules, intervals, presets,
exclusions, bounds, for_task and validate.

The oracle in this file depends on neither croniter nor the module under test: a small cron
matcher for the grammar the strategies generate, and a wall clock -> UTC mapping written from
the documented rules (a wall time exists if it round-trips; a repeated one runs at the earlier
of its instants; a missing one runs at the first instant whose wall clock is past it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_daemon.domain import recurrence
from scheduler_daemon.domain.recurrence import (
    MAX_STEPS,
    Blackout,
    DailyWindow,
    EvaluationLimit,
    Exclusions,
    Recurrence,
    RuleError,
    for_task,
    next_occurrence,
    occurrences,
    preview,
    validate,
)

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
TICK = timedelta(microseconds=1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def every(first: datetime, last: datetime, minutes: int) -> list[datetime]:
    """first, first + step, ... up to and including last."""
    out = []
    while first <= last:
        out.append(first)
        first += timedelta(minutes=minutes)
    return out


# --- the oracle --------------------------------------------------------------------------


def parse_field(expr: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in expr.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            a, b = low, high
        elif "-" in body:
            a, b = (int(v) for v in body.split("-"))
        else:
            a = int(body)
            b = high if step_text else a
        values.update(range(a, b + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """Standard cron matching: day-of-month OR day-of-week when both are restricted."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday
    day_or: bool
    has_seconds: bool

    @classmethod
    def parse(cls, expr: str) -> Cron:
        fields = expr.split()
        has_seconds = len(fields) == 6
        sec, minute, hour, dom, month, dow = fields if has_seconds else ["0", *fields]
        doms = parse_field(dom, 1, 31)
        dows = parse_field(dow, 0, 6)
        dom_any = dom == "*" or (len(doms) == 31 and "*" in dow)
        dow_any = dow == "*" or (len(dows) == 7 and "*" in dom)
        return cls(
            seconds=parse_field(sec, 0, 59),
            minutes=parse_field(minute, 0, 59),
            hours=parse_field(hour, 0, 23),
            doms=doms,
            months=parse_field(month, 1, 12),
            dows=dows,
            day_or=not dom_any and not dow_any,
            has_seconds=has_seconds,
        )

    def matches(self, wall: datetime) -> bool:
        if wall.microsecond or wall.second not in self.seconds:
            return False
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        dom_ok = wall.day in self.doms
        dow_ok = (wall.weekday() + 1) % 7 in self.dows
        return (dom_ok or dow_ok) if self.day_or else (dom_ok and dow_ok)


def naive_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def instant_of(wall: datetime, zone: ZoneInfo) -> datetime:
    """When the local wall time ``wall`` runs, by the documented rules."""
    readings = [wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [u for u in readings if naive_wall(u, zone) == wall]
    if real:
        return min(real)  # the first of the two instants of a repeated wall time
    # In a gap: the first instant whose wall clock is past ``wall`` (transitions fall on
    # whole minutes in every zone used here).
    t = min(readings).replace(second=0, microsecond=0)
    while naive_wall(t, zone) <= wall:
        t += MINUTE
    return t


def is_excluded(instant: datetime, exclusions: Exclusions, zone: ZoneInfo) -> bool:
    if any(b.start <= instant < b.end for b in exclusions.windows):
        return True
    local = naive_wall(instant, zone)
    if local.date() in exclusions.dates:
        return True
    t = local.time()
    for w in exclusions.daily:
        if w.start < w.end:
            if w.start <= t < w.end:
                return True
        elif t >= w.start or t < w.end:
            return True
    return False


NO_EXCLUSIONS = Exclusions()


def brute_force(
    expr: str, zone_name: str, start: datetime, end: datetime, exclusions: Exclusions | None = None
) -> list[datetime]:
    """Every instant in [start, end) the rule runs at: walk every wall second or minute."""
    cron = Cron.parse(expr)
    zone = ZoneInfo(zone_name)
    step = SECOND if cron.has_seconds else MINUTE
    wall = (naive_wall(start, zone) - timedelta(hours=2)).replace(second=0, microsecond=0)
    last = naive_wall(end, zone) + timedelta(hours=2)
    found: set[datetime] = set()
    while wall <= last:
        if cron.matches(wall):
            u = instant_of(wall, zone)
            if start <= u < end and not (exclusions and is_excluded(u, exclusions, zone)):
                found.add(u)
        wall += step
    return sorted(found)


def explained(instant: datetime, cron: Cron, zone: ZoneInfo) -> bool:
    """The instant is a matching wall time (its first instant), or the transition instant
    right after a gap that holds a matching wall time."""
    local = instant.astimezone(zone)
    if cron.matches(local.replace(tzinfo=None)) and local.fold == 0:
        return True
    before = (instant - TICK).astimezone(zone)
    old, new = before.utcoffset(), local.utcoffset()
    assert old is not None
    assert new is not None
    if old >= new:
        return False  # not the end of a gap
    naive = instant.replace(tzinfo=None)
    step = SECOND if cron.has_seconds else MINUTE
    wall, gap_end = naive + old, naive + new
    while wall < gap_end:
        if cron.matches(wall):
            return True
        wall += step
    return False


# --- strategies --------------------------------------------------------------------------

ZONES = ["Europe/Oslo", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"]

# The offset changes of 2026-2028 (checked against tzdata below); arbitrary instants for
# the zones without DST.
TRANSITIONS = {
    "America/New_York": [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6), utc(2027, 3, 14, 7),
                         utc(2027, 11, 7, 6), utc(2028, 3, 12, 7), utc(2028, 11, 5, 6)],
    "Europe/Oslo": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2027, 3, 28, 1),
                    utc(2027, 10, 31, 1), utc(2028, 3, 26, 1), utc(2028, 10, 29, 1)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30), utc(2027, 4, 3, 15),
                            utc(2027, 10, 2, 15, 30), utc(2028, 4, 1, 15),
                            utc(2028, 9, 30, 15, 30)],
    "Asia/Kathmandu": [utc(2026, 6, 1, 18, 15), utc(2027, 12, 31, 18, 15)],
    "UTC": [utc(2026, 6, 1), utc(2027, 12, 31, 23)],
}  # fmt: skip


def cron_field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    bounds = st.tuples(value, value).map(sorted)
    return st.one_of(
        st.just("*"),
        st.just("*"),
        value.map(str),
        st.integers(2, high - low).map(lambda k: f"*/{k}"),
        bounds.map(lambda ab: f"{ab[0]}-{ab[1]}"),  # a-a is the single value a
        st.tuples(bounds, st.integers(2, 7)).map(lambda x: f"{x[0][0]}-{x[0][1]}/{x[1]}"),
        st.lists(value, min_size=2, max_size=4, unique=True).map(
            lambda vs: ",".join(str(v) for v in sorted(vs))
        ),
    )


five_fields = st.tuples(
    cron_field(0, 59), cron_field(0, 23), cron_field(1, 31), cron_field(1, 12), cron_field(0, 6)
).map(" ".join)
six_fields = st.tuples(cron_field(0, 59), five_fields).map(" ".join)
crons = st.one_of(five_fields, five_fields, six_fields)


# Rules that usually run every day, so that a window of a day or two has occurrences.
any_day = st.just("* * *")
day_fields = st.tuples(cron_field(1, 31), cron_field(1, 12), cron_field(0, 6)).map(" ".join)
dense_five = st.tuples(
    cron_field(0, 59),
    st.one_of(st.just("*"), cron_field(0, 23)),
    st.one_of(any_day, any_day, any_day, day_fields),
).map(" ".join)
dense_crons = st.one_of(
    dense_five, dense_five, st.tuples(cron_field(0, 59), dense_five).map(" ".join)
)
zones = st.sampled_from(ZONES)


@st.composite
def instants_near_transitions(draw: st.DrawFn, zone: str) -> datetime:
    transition = draw(st.sampled_from(TRANSITIONS[zone]))
    return transition + timedelta(microseconds=draw(st.integers(-8 * 3600 * 10**6, 3600 * 10**6)))


@st.composite
def exclusions_near(draw: st.DrawFn, origin: datetime, zone: str) -> Exclusions:
    def minutes(low: int, high: int) -> timedelta:
        return timedelta(minutes=draw(st.integers(low, high)))

    windows = tuple(
        Blackout(start, start + minutes(1, 3 * 1440))
        for start in (origin + minutes(-1440, 10 * 1440) for _ in range(draw(st.integers(0, 2))))
    )
    clock = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
    daily = tuple(
        DailyWindow(a, b)
        for a, b in draw(st.lists(st.tuples(clock, clock), max_size=2))
        if a != b  # a == b would be the whole day
    )
    today = origin.astimezone(ZoneInfo(zone)).date()
    dates = tuple(today + timedelta(days=n) for n in draw(st.lists(st.integers(0, 20), max_size=3)))
    return Exclusions(windows=windows, daily=daily, dates=dates)


# --- properties --------------------------------------------------------------------------

START_US = st.integers(0, 3 * 365 * 86_400 * 10**6)


@settings(max_examples=200, deadline=None)
@given(expr=crons, zone=zones, data=st.data())
def test_cron_occurrences_are_sound(expr: str, zone: str, data: st.DataObject) -> None:
    after = data.draw(
        st.one_of(START_US.map(lambda us: NOW + timedelta(microseconds=us)),
                  instants_near_transitions(zone))
    )  # fmt: skip
    exclusions = data.draw(exclusions_near(after, zone))
    rule = Recurrence(cron=expr, timezone=zone, exclusions=exclusions)
    try:
        got = list(itertools.islice(occurrences(rule, after), 50))
    except EvaluationLimit as exc:
        limit: EvaluationLimit | None = exc
    else:
        limit = None
    if limit is not None:
        # Exclusions may leave nothing (daily windows that cover the whole day): the rule then
        # says so, naming the exclusions, and an independent walk finds no occurrence either.
        assert limit.field == "exclusions"
        assert brute_force(expr, zone, after + TICK, after + timedelta(days=2), exclusions) == []
        return

    cron, tz = Cron.parse(expr), ZoneInfo(zone)
    assert all(u.tzinfo is UTC for u in got)
    assert all(a < b for a, b in itertools.pairwise([after, *got]))  # increasing, all > after
    for u in got:
        assert not is_excluded(u, exclusions, tz), u
        assert explained(u, cron, tz), u


@settings(max_examples=200, deadline=None)
@given(expr=dense_crons, zone=zones, inclusive=st.booleans(), data=st.data())
def test_cron_occurrences_match_brute_force_around_transitions(
    expr: str, zone: str, inclusive: bool, data: st.DataObject
) -> None:
    """Exactly the instants an independent minute-by-minute (second-by-second) walk finds,
    over a window holding a DST transition, with exclusions and a start bound."""
    seconds = len(expr.split()) == 6
    transition = data.draw(st.sampled_from(TRANSITIONS[zone]))
    before_us = (2 * 3600 if seconds else 20 * 3600) * 10**6
    start = transition - timedelta(microseconds=data.draw(st.integers(0, before_us)))
    start = start.replace(microsecond=data.draw(st.sampled_from([0, start.microsecond])))
    end = start + (timedelta(hours=3) if seconds else timedelta(hours=30))
    start_at = data.draw(st.none() | st.just(start + (end - start) / 3))
    exclusions = data.draw(exclusions_near(start, zone))
    rule = Recurrence(
        cron=expr, timezone=zone, exclusions=exclusions, start_at=start_at, end_at=end - TICK
    )

    got = list(occurrences(rule, start, inclusive=inclusive))

    expected = brute_force(expr, zone, start, end, exclusions)
    expected = [u for u in expected if (u >= start if inclusive else u > start)]
    if start_at is not None:
        expected = [u for u in expected if u >= start_at]
    assert got == expected


def test_transition_table_matches_tzdata() -> None:
    for zone_name, transitions in TRANSITIONS.items():
        zone = ZoneInfo(zone_name)
        for t in transitions:
            changes = (t - TICK).astimezone(zone).utcoffset() != t.astimezone(zone).utcoffset()
            assert changes == (zone_name not in ("UTC", "Asia/Kathmandu")), (zone_name, t)


# --- DST days ----------------------------------------------------------------------------


def day_of(expr: str, zone_name: str, day: date) -> list[datetime]:
    zone = ZoneInfo(zone_name)
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    rule = Recurrence(cron=expr, timezone=zone_name, end_at=end - TICK)
    return list(occurrences(rule, start, inclusive=True))


NY, OSLO, LORD_HOWE = "America/New_York", "Europe/Oslo", "Australia/Lord_Howe"

DST_DAYS = [
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z): 02:xx is missing.
    (NY, date(2026, 3, 8), "30 2 * * *", [utc(2026, 3, 8, 7)]),
    (NY, date(2026, 3, 8), "0 * * * *", every(utc(2026, 3, 8, 5), utc(2026, 3, 9, 3), 60)),
    (NY, date(2026, 3, 8), "*/15 * * * *",
     every(utc(2026, 3, 8, 5), utc(2026, 3, 8, 6, 45), 15)
     + every(utc(2026, 3, 8, 7), utc(2026, 3, 9, 3, 45), 15)),
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z): 01:xx twice.
    (NY, date(2026, 11, 1), "30 2 * * *", [utc(2026, 11, 1, 7, 30)]),
    (NY, date(2026, 11, 1), "0 * * * *",
     [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5),
      *every(utc(2026, 11, 1, 7), utc(2026, 11, 2, 4), 60)]),
    (NY, date(2026, 11, 1), "*/15 * * * *",
     every(utc(2026, 11, 1, 4), utc(2026, 11, 1, 5, 45), 15)
     + every(utc(2026, 11, 1, 7), utc(2026, 11, 2, 4, 45), 15)),
    # Oslo, spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z).
    (OSLO, date(2026, 3, 29), "30 2 * * *", [utc(2026, 3, 29, 1)]),
    (OSLO, date(2026, 3, 29), "0 * * * *",
     [utc(2026, 3, 28, 23), utc(2026, 3, 29, 0),
      *every(utc(2026, 3, 29, 1), utc(2026, 3, 29, 21), 60)]),
    (OSLO, date(2026, 3, 29), "*/15 * * * *",
     every(utc(2026, 3, 28, 23), utc(2026, 3, 29, 0, 45), 15)
     + every(utc(2026, 3, 29, 1), utc(2026, 3, 29, 21, 45), 15)),
    # Oslo, fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z): 02:xx twice.
    (OSLO, date(2026, 10, 25), "30 2 * * *", [utc(2026, 10, 25, 0, 30)]),
    (OSLO, date(2026, 10, 25), "0 * * * *",
     every(utc(2026, 10, 24, 22), utc(2026, 10, 25, 0), 60)
     + every(utc(2026, 10, 25, 2), utc(2026, 10, 25, 22), 60)),
    (OSLO, date(2026, 10, 25), "*/15 * * * *",
     every(utc(2026, 10, 24, 22), utc(2026, 10, 25, 0, 45), 15)
     + every(utc(2026, 10, 25, 2), utc(2026, 10, 25, 22, 45), 15)),
    # Lord Howe, spring forward 2026-10-04 02:00 +10:30 -> 02:30 +11 (15:30Z the day before).
    (LORD_HOWE, date(2026, 10, 4), "15 2 * * *", [utc(2026, 10, 3, 15, 30)]),
    (LORD_HOWE, date(2026, 10, 4), "*/10 * * * *",
     every(utc(2026, 10, 3, 13, 30), utc(2026, 10, 3, 15, 20), 10)
     + every(utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 12, 50), 10)),
    # Lord Howe, fall back 2026-04-05 02:00 +11 -> 01:30 +10:30 (15:00Z): 01:30-01:59 twice.
    (LORD_HOWE, date(2026, 4, 5), "15 2 * * *", [utc(2026, 4, 4, 15, 45)]),
    (LORD_HOWE, date(2026, 4, 5), "*/10 * * * *",
     every(utc(2026, 4, 4, 13), utc(2026, 4, 4, 14, 50), 10)
     + every(utc(2026, 4, 4, 15, 30), utc(2026, 4, 5, 13, 20), 10)),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "day", "expr", "expected"), DST_DAYS)
def test_dst_day(zone: str, day: date, expr: str, expected: list[datetime]) -> None:
    got = day_of(expr, zone, day)
    assert got == expected
    assert got == brute_force(expr, zone, expected[0], expected[-1] + TICK)  # oracle agrees


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (NY, date(2027, 3, 14), 23),
        (NY, date(2027, 11, 7), 24),  # 25 h long, but the repeated hour runs once
        (OSLO, date(2027, 3, 28), 23),
        (OSLO, date(2027, 10, 31), 24),
    ],
)
@pytest.mark.parametrize("expr", ["30 2 * * *", "0 * * * *", "*/15 * * * *"])
def test_dst_days_2027(zone: str, day: date, hours: int, expr: str) -> None:
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(UTC)
    got = day_of(expr, zone, day)
    assert got == brute_force(expr, zone, start, end)
    per_hour = {"30 2 * * *": 0, "0 * * * *": 1, "*/15 * * * *": 4}[expr]
    assert len(got) == (hours * per_hour or 1)  # the gap's times collapse into its end


def test_spring_forward_collapse_is_one_occurrence_even_with_a_match_at_the_transition() -> None:
    rule = Recurrence(cron="0,30 2,3 * * *", timezone=NY)
    got = preview(rule, utc(2026, 3, 8), 3)
    assert got == [utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6)]


def test_no_occurrence_in_the_second_pass_of_a_repeated_hour() -> None:
    # 06:10Z is 01:10 EST, the second 01:10 of 2026-11-01 in New York: the rest of that
    # hour already ran (as EDT), so the next one is 02:00 EST.
    after = utc(2026, 11, 1, 6, 10)
    assert next_occurrence(Recurrence(cron="*/15 * * * *", timezone=NY), after) == utc(
        2026, 11, 1, 7
    )
    assert next_occurrence(Recurrence(cron="* * * * * *", timezone=NY), after) == utc(
        2026, 11, 1, 7
    )


def test_every_second_through_a_gap() -> None:
    rule = Recurrence(cron="* * * * * *", timezone=NY)
    got = preview(rule, utc(2026, 3, 8, 6, 59, 58), 4)
    assert got == [utc(2026, 3, 8, 6, 59, 59), utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 0, 1),
                   utc(2026, 3, 8, 7, 0, 2)]  # fmt: skip


# --- presets, intervals, seconds, bounds -------------------------------------------------


def test_hourly_preset_at_minute_five() -> None:
    rule = Recurrence(preset="hourly", at=time(0, 5))
    assert preview(rule, utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 5), utc(2026, 1, 1, 2, 5)
    ]  # fmt: skip
    seconds = Recurrence(preset="hourly", at=time(17, 5, 30))  # the hour is ignored
    assert preview(seconds, utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 5, 30), utc(2026, 1, 1, 1, 5, 30)
    ]  # fmt: skip


def test_daily_preset_follows_the_local_clock() -> None:
    rule = Recurrence(preset="daily", at=time(9), timezone=OSLO)
    assert preview(rule, utc(2026, 3, 27), 4) == [
        utc(2026, 3, 27, 8), utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)
    ]  # fmt: skip


def test_weekly_newsletter_monday_0900_oslo() -> None:
    # Seed 003: "weekly Monday 09:00 Europe/Oslo" - 08:00Z in winter, 07:00Z in summer.
    rule = Recurrence(preset="weekly", weekday=0, at=time(9), timezone=OSLO)
    assert preview(rule, utc(2026, 3, 16), 4) == [
        utc(2026, 3, 16, 8), utc(2026, 3, 23, 8), utc(2026, 3, 30, 7), utc(2026, 4, 6, 7)
    ]  # fmt: skip
    assert preview(rule, utc(2026, 10, 19), 2) == [utc(2026, 10, 19, 7), utc(2026, 10, 26, 8)]
    assert all(u.astimezone(ZoneInfo(OSLO)).weekday() == 0 for u in preview(rule, NOW, 60))


def test_weekly_preset_on_sunday() -> None:
    rule = Recurrence(preset="weekly", weekday=6)
    assert preview(rule, utc(2026, 1, 1), 2) == [utc(2026, 1, 4), utc(2026, 1, 11)]


def test_monthly_preset_skips_months_without_the_day() -> None:
    rule = Recurrence(preset="monthly", day_of_month=31, at=time(6, 30))
    got = preview(rule, utc(2026, 1, 1), 8)
    assert [(u.year, u.month, u.day) for u in got] == [
        (2026, 1, 31), (2026, 3, 31), (2026, 5, 31), (2026, 7, 31),
        (2026, 8, 31), (2026, 10, 31), (2026, 12, 31), (2027, 1, 31),
    ]  # fmt: skip
    assert all(u.time() == time(6, 30) for u in got)
    leap = Recurrence(preset="monthly", day_of_month=29)
    februaries = [u for u in preview(leap, utc(2026, 1, 1), 30) if u.month == 2]
    assert februaries == [utc(2028, 2, 29)]


def test_interval_ignores_dst() -> None:
    anchor = datetime(2026, 3, 28, 9, tzinfo=ZoneInfo(OSLO))  # 08:00Z
    rule = Recurrence(interval_s=86_400, anchor=anchor, timezone=OSLO)
    got = preview(rule, utc(2026, 3, 1), 3)
    assert got == [utc(2026, 3, 28, 8), utc(2026, 3, 29, 8), utc(2026, 3, 30, 8)]
    assert [u.astimezone(ZoneInfo(OSLO)).hour for u in got] == [9, 10, 10]


def test_interval_anchor_defaults_to_start_at_and_counts_from_it() -> None:
    rule = Recurrence(interval_s=90, start_at=utc(2026, 1, 1, 12))
    assert preview(rule, utc(2025, 1, 1), 2) == [utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 1, 30)]
    assert next_occurrence(rule, utc(2026, 1, 1, 12, 1)) == utc(2026, 1, 1, 12, 1, 30)
    assert next_occurrence(rule, utc(2026, 1, 1, 12, 1, 30)) == utc(2026, 1, 1, 12, 3)
    at = utc(2026, 1, 1, 12, 1, 30)
    assert next_occurrence(rule, at, inclusive=True) == at
    fractional = Recurrence(interval_s=1.5, anchor=utc(2026, 1, 1))
    assert preview(fractional, utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 0, 1) + timedelta(milliseconds=500), utc(2026, 1, 1, 0, 0, 3)
    ]  # fmt: skip


def test_anchor_before_start_at_keeps_its_phase() -> None:
    rule = Recurrence(interval_s=3600, anchor=utc(2026, 1, 1, 0, 20), start_at=utc(2026, 1, 2))
    assert preview(rule, utc(2026, 1, 1), 2) == [utc(2026, 1, 2, 0, 20), utc(2026, 1, 2, 1, 20)]


def test_seconds_come_first_in_six_field_cron() -> None:
    rule = Recurrence(cron="*/2 * * * * *")
    assert preview(rule, utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 0, 0, 2), utc(2026, 1, 1, 0, 0, 4), utc(2026, 1, 1, 0, 0, 6)
    ]  # fmt: skip
    assert next_occurrence(Recurrence(cron="30 0 9 * * *"), NOW) == utc(2026, 1, 1, 9, 0, 30)


def test_start_and_end_bounds_are_inclusive() -> None:
    rule = Recurrence(cron="0 * * * *", start_at=utc(2026, 1, 1, 11), end_at=utc(2026, 1, 1, 13))
    assert list(occurrences(rule, NOW)) == [
        utc(2026, 1, 1, 11), utc(2026, 1, 1, 12), utc(2026, 1, 1, 13)
    ]  # fmt: skip
    assert list(occurrences(rule, utc(2026, 1, 1, 11))) == [
        utc(2026, 1, 1, 12),
        utc(2026, 1, 1, 13),
    ]
    assert next_occurrence(rule, utc(2026, 1, 1, 11), inclusive=True) == utc(2026, 1, 1, 11)
    assert next_occurrence(rule, utc(2026, 1, 1, 13)) is None


def test_inclusive_after() -> None:
    rule = Recurrence(cron="0 12 * * *", timezone=OSLO)
    noon = datetime(2026, 6, 1, 12, tzinfo=ZoneInfo(OSLO))
    assert next_occurrence(rule, noon, inclusive=True) == utc(2026, 6, 1, 10)
    assert next_occurrence(rule, noon) == utc(2026, 6, 2, 10)


def test_equal_range_is_a_single_value() -> None:
    assert preview(Recurrence(cron="5-5 * * * *"), NOW, 2) == [utc(2026, 1, 1, 0, 5),
                                                               utc(2026, 1, 1, 1, 5)]  # fmt: skip


def test_day_of_month_or_day_of_week() -> None:
    rule = Recurrence(cron="0 0 13 * 1")  # the 13th, and every Monday
    got = preview(rule, utc(2026, 2, 1), 5)
    assert [u.day for u in got] == [2, 9, 13, 16, 23]


def test_after_may_be_in_any_zone() -> None:
    rule = Recurrence(cron="0 * * * *")
    after = datetime(2026, 1, 1, 10, 30, tzinfo=ZoneInfo("Asia/Kathmandu"))  # 04:45Z
    assert next_occurrence(rule, after) == utc(2026, 1, 1, 5)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        next_occurrence(Recurrence(cron="* * * * *"), datetime(2026, 1, 1))  # noqa: DTZ001


def test_preview_count() -> None:
    rule = Recurrence(cron="0 0 * * *", end_at=utc(2026, 1, 3))
    assert preview(rule, NOW, 0) == []
    assert preview(rule, NOW, 10) == [utc(2026, 1, 2), utc(2026, 1, 3)]
    with pytest.raises(ValueError, match="count"):
        preview(rule, NOW, -1)


# --- exclusions --------------------------------------------------------------------------


def test_blackout_skips_and_ends_exclusively() -> None:
    blackout = Blackout(utc(2026, 1, 1, 1, 30), utc(2026, 1, 1, 4))
    rule = Recurrence(cron="0 * * * *", exclusions=Exclusions(windows=(blackout,)))
    assert preview(rule, NOW, 3) == [utc(2026, 1, 1, 1), utc(2026, 1, 1, 4), utc(2026, 1, 1, 5)]


def test_daily_window_wrapping_midnight() -> None:
    quiet = DailyWindow(time(22), time(2))
    rule = Recurrence(cron="0 * * * *", timezone=OSLO, exclusions=Exclusions(daily=(quiet,)))
    got = preview(rule, utc(2026, 1, 1, 18), 6)  # 19:00 Oslo
    hours = [u.astimezone(ZoneInfo(OSLO)).hour for u in got]
    assert hours == [20, 21, 2, 3, 4, 5]


def test_excluded_local_dates() -> None:
    holiday = date(2026, 12, 25)
    rule = Recurrence(
        preset="daily", at=time(0, 30), timezone=NY, exclusions=Exclusions(dates=(holiday,))
    )
    got = preview(rule, utc(2026, 12, 24), 2)
    assert [u.astimezone(ZoneInfo(NY)).date() for u in got] == [
        date(2026, 12, 24),
        date(2026, 12, 26),
    ]


def test_exclusions_see_the_time_an_occurrence_actually_runs() -> None:
    # 02:30 does not exist on 2026-03-08 in New York; it runs at 03:00 EDT (07:00Z), which is
    # neither inside a 02:00-03:00 local window nor inside a blackout ending at 07:00Z.
    window = Exclusions(daily=(DailyWindow(time(2), time(3)),))
    blackout = Exclusions(windows=(Blackout(utc(2026, 3, 8, 6), utc(2026, 3, 8, 7)),))
    for exclusions in (window, blackout):
        rule = Recurrence(cron="30 2 * * *", timezone=NY, exclusions=exclusions)
        assert next_occurrence(rule, utc(2026, 3, 8)) == utc(2026, 3, 8, 7)


def test_interval_with_exclusions() -> None:
    rule = Recurrence(
        interval_s=3600,
        anchor=utc(2026, 1, 1),
        exclusions=Exclusions(daily=(DailyWindow(time(1), time(3)),), dates=(date(2026, 1, 2),)),
    )
    got = preview(rule, utc(2025, 12, 31, 23, 30), 23)
    assert [u.hour for u in got[:3]] == [0, 3, 4]
    assert got[-1] == utc(2026, 1, 3)  # all of 2026-01-02 skipped, then 01:00-02:00 again


def test_excluding_everything_terminates() -> None:
    whole_day = Exclusions(daily=(DailyWindow(time(3), time(3)),))
    assert list(occurrences(Recurrence(cron="* * * * * *", exclusions=whole_day), NOW)) == []
    decades = Exclusions(windows=(Blackout(NOW, utc(2080, 1, 1)),))
    assert list(occurrences(Recurrence(cron="0 0 * * *", exclusions=decades), NOW)) == []
    assert list(occurrences(Recurrence(interval_s=1, anchor=NOW, exclusions=decades), NOW)) == []


def test_long_blackout_is_jumped_not_walked() -> None:
    blackout = Exclusions(windows=(Blackout(NOW, utc(2031, 1, 1, 0, 0, 1)),))
    rule = Recurrence(cron="* * * * * *", exclusions=blackout)
    assert next_occurrence(rule, NOW) == utc(2031, 1, 1, 0, 0, 1)


# --- for_task ----------------------------------------------------------------------------

RUN_AT = datetime(2026, 3, 4, 9, 15, 30, tzinfo=ZoneInfo(OSLO))  # 08:15:30Z, a Wednesday


def test_for_task_daily() -> None:
    rule = for_task("daily", RUN_AT)
    assert rule == Recurrence(preset="daily", at=time(8, 15, 30), start_at=RUN_AT)
    assert preview(rule, RUN_AT, 2) == [utc(2026, 3, 5, 8, 15, 30), utc(2026, 3, 6, 8, 15, 30)]
    assert next_occurrence(rule, RUN_AT, inclusive=True) == RUN_AT


def test_for_task_weekly_and_monthly() -> None:
    weekly = for_task("weekly", RUN_AT)
    assert weekly.weekday == 2
    assert preview(weekly, RUN_AT, 2) == [utc(2026, 3, 11, 8, 15, 30), utc(2026, 3, 18, 8, 15, 30)]
    monthly = for_task("Monthly", datetime(2026, 1, 31, 23, tzinfo=UTC))
    assert monthly.day_of_month == 31
    assert preview(monthly, utc(2026, 2, 1), 2) == [utc(2026, 3, 31, 23), utc(2026, 5, 31, 23)]


def test_for_task_cron() -> None:
    rule = for_task("*/10 * * * *", RUN_AT)
    assert rule == Recurrence(cron="*/10 * * * *", timezone="UTC", start_at=RUN_AT)
    assert next_occurrence(rule, utc(2026, 1, 1)) == utc(2026, 3, 4, 8, 20)


@pytest.mark.parametrize("recurrence", ["yearly", "", "* * *", "61 * * * *", "hourly"])
def test_for_task_refuses_anything_else(recurrence: str) -> None:
    with pytest.raises(RuleError) as info:
        for_task(recurrence, RUN_AT)
    assert info.value.field == "recurrence"


def test_for_task_needs_an_aware_run_at() -> None:
    with pytest.raises(RuleError) as info:
        for_task("daily", datetime(2026, 1, 1))  # noqa: DTZ001
    assert info.value.field == "run_at"


# --- validate ----------------------------------------------------------------------------

NAIVE = datetime(2026, 6, 1)  # noqa: DTZ001
EVERYTHING = Exclusions(daily=(DailyWindow(time(0), time(0)),))

BAD_RULES = [
    (Recurrence(), "rule"),
    (Recurrence(cron="* * * * *", interval_s=60), "rule"),
    (Recurrence(cron="* * * * *", preset="daily"), "rule"),
    (Recurrence(cron="61 * * * *"), "cron"),
    (Recurrence(cron="* * * *"), "cron"),
    (Recurrence(cron="0 * * * * * *"), "cron"),
    (Recurrence(cron="@daily"), "cron"),
    (Recurrence(cron="H * * * *"), "cron"),
    (Recurrence(cron="R * * * *"), "cron"),
    (Recurrence(cron="0 0 30 2 *"), "cron"),  # parses, never happens
    (Recurrence(interval_s=0.5, anchor=NOW), "interval_s"),
    (Recurrence(interval_s=math.nan, anchor=NOW), "interval_s"),
    (Recurrence(interval_s=math.inf, anchor=NOW), "interval_s"),
    (Recurrence(interval_s=60), "anchor"),
    (Recurrence(preset="yearly"), "preset"),  # type: ignore[arg-type]
    (Recurrence(preset="weekly"), "weekday"),
    (Recurrence(preset="weekly", weekday=7), "weekday"),
    (Recurrence(preset="daily", weekday=1), "weekday"),
    (Recurrence(preset="monthly"), "day_of_month"),
    (Recurrence(preset="monthly", day_of_month=0), "day_of_month"),
    (Recurrence(preset="monthly", day_of_month=32), "day_of_month"),
    (Recurrence(preset="weekly", weekday=1, day_of_month=3), "day_of_month"),
    (Recurrence(preset="daily", at=time(9, tzinfo=UTC)), "at"),
    (Recurrence(preset="daily", at=time(9, 0, 0, 5)), "at"),
    (Recurrence(cron="* * * * *", at=time(9)), "at"),
    (Recurrence(cron="* * * * *", weekday=1), "weekday"),
    (Recurrence(interval_s=60, anchor=NOW, day_of_month=1), "day_of_month"),
    (Recurrence(cron="* * * * *", timezone="Mars/Olympus"), "timezone"),
    (Recurrence(cron="* * * * *", timezone="../x"), "timezone"),
    (Recurrence(cron="* * * * *", timezone=""), "timezone"),
    (Recurrence(cron="* * * * *", start_at=NAIVE), "start_at"),
    (Recurrence(cron="* * * * *", end_at=NAIVE), "end_at"),
    (Recurrence(interval_s=60, anchor=NAIVE), "anchor"),
    (Recurrence(cron="* * * * *", anchor=NOW), "anchor"),
    (Recurrence(cron="* * * * *", start_at=utc(2026, 6, 2), end_at=utc(2026, 6, 1)), "end_at"),
    (Recurrence(cron="* * * * *", end_at=utc(2025, 12, 31)), "end_at"),  # in the past
    (Recurrence(cron="0 0 1 * *", start_at=utc(2026, 6, 2), end_at=utc(2026, 6, 3)), "end_at"),
    (Recurrence(cron="* * * * *", exclusions=EVERYTHING), "exclusions"),
    (Recurrence(interval_s=60, anchor=NOW, exclusions=EVERYTHING), "exclusions"),
    (
        Recurrence(
            cron="0 0 1 6 *",
            end_at=utc(2026, 6, 2),
            exclusions=Exclusions(windows=(Blackout(utc(2026, 6, 1), utc(2026, 6, 2)),)),
        ),
        "exclusions",
    ),
    (Recurrence(cron="* * * * *", exclusions=Exclusions(windows=(Blackout(NAIVE, NAIVE),))),
     "exclusions"),
    (Recurrence(cron="* * * * *", exclusions=Exclusions(windows=(Blackout(NOW, NOW),))),
     "exclusions"),
    (Recurrence(cron="* * * * *",
                exclusions=Exclusions(daily=(DailyWindow(time(1, tzinfo=UTC), time(2)),))),
     "exclusions"),
    (Recurrence(cron="* * * * *", exclusions=Exclusions(dates=(NAIVE,))), "exclusions"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "field"), BAD_RULES)
def test_validate_names_the_field(rule: Recurrence, field: str) -> None:
    with pytest.raises(RuleError) as info:
        validate(rule, NOW)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{field}: ")


GOOD_RULES = [
    Recurrence(cron="0 9 * * 1-5", timezone=OSLO),
    Recurrence(cron="*/2 * * * * *"),
    Recurrence(cron="0 0 29 2 *"),  # next in 2028
    Recurrence(interval_s=1, anchor=utc(2030, 1, 1)),
    Recurrence(preset="hourly"),
    Recurrence(preset="weekly", weekday=0, at=time(9), timezone=OSLO),
    Recurrence(preset="monthly", day_of_month=31, timezone="Asia/Kathmandu"),
    Recurrence(cron="0 0 * * *", start_at=utc(2040, 1, 1)),
    Recurrence(cron="* * * * *", exclusions=Exclusions(daily=(DailyWindow(time(0), time(23)),))),
]


@pytest.mark.parametrize("rule", GOOD_RULES)
def test_validate_accepts(rule: Recurrence) -> None:
    validate(rule, NOW)


def test_occurrences_check_the_rule_shape_eagerly() -> None:
    with pytest.raises(RuleError) as info:
        occurrences(Recurrence(cron="nope"), NOW)
    assert info.value.field == "cron"


# --- exclusions ending inside a repeated hour --------------------------------------------

# Oslo falls back 2027-10-31 03:00 CEST -> 02:00 CET (01:00Z): 02:00-02:59 runs twice, first
# as CEST (00:00Z-00:59Z), then as CET (01:00Z-01:59Z).
OSLO_FALL_BACK_2027 = utc(2027, 10, 31, 1)


@pytest.mark.timeout(10)
def test_blackout_ending_in_the_second_pass_of_a_repeated_hour() -> None:
    # The blackout ends at 01:30Z, 02:30 CET in the second pass. 02:30 and 02:45 already
    # came (and were skipped) in the first pass, and the second pass has no occurrences
    # of its own, so the next one is 03:00 CET (02:00Z).
    blackout = Blackout(utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1, 30))
    rule = Recurrence(
        cron="*/15 * * * *", timezone=OSLO, exclusions=Exclusions(windows=(blackout,))
    )
    assert preview(rule, utc(2027, 10, 31), 5) == [
        utc(2027, 10, 31, 0, 15), utc(2027, 10, 31, 2), utc(2027, 10, 31, 2, 15),
        utc(2027, 10, 31, 2, 30), utc(2027, 10, 31, 2, 45),
    ]  # fmt: skip
    assert next_occurrence(rule, utc(2027, 10, 31, 0, 15)) == utc(2027, 10, 31, 2)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("expr", ["*/15 * * * *", "0 * * * *", "* * * * * *", "30 2 * * *"])
@pytest.mark.parametrize(
    "end",
    [timedelta(0), timedelta(minutes=5), timedelta(minutes=30), timedelta(minutes=60) - SECOND],
)
def test_blackout_ending_anywhere_in_the_second_pass(expr: str, end: timedelta) -> None:
    start = utc(2027, 10, 30, 23, 50)
    blackout = Blackout(start, OSLO_FALL_BACK_2027 + end)
    rule = Recurrence(cron=expr, timezone=OSLO, exclusions=Exclusions(windows=(blackout,)))
    expected = utc(2027, 11, 1, 1, 30) if expr == "30 2 * * *" else utc(2027, 10, 31, 2)
    assert next_occurrence(rule, start, inclusive=True) == expected


@pytest.mark.timeout(10)
def test_interval_in_the_second_pass_leaves_a_daily_window_at_its_second_end() -> None:
    # New York repeats 01:00-01:59 on 2026-11-01 (EDT 05:00Z-05:59Z, then EST 06:00Z-06:59Z).
    # Every 10 minutes, never at 01:00-01:29 local: both passes have their own window.
    rule = Recurrence(
        interval_s=600,
        anchor=utc(2026, 11, 1),
        timezone=NY,
        exclusions=Exclusions(daily=(DailyWindow(time(1), time(1, 30)),)),
    )
    assert preview(rule, utc(2026, 11, 1, 4, 45), 7) == [
        utc(2026, 11, 1, 4, 50), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 40),
        utc(2026, 11, 1, 5, 50), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 6, 40),
        utc(2026, 11, 1, 6, 50),
    ]  # fmt: skip


@pytest.mark.timeout(10)
def test_interval_window_across_the_repeated_hour_keeps_the_second_pass_outside_it() -> None:
    # A 01:40-02:30 window entered at 01:40 EDT: at 06:00Z the clock goes back to 01:00
    # EST, outside the window, until 01:40 EST comes again.
    rule = Recurrence(
        interval_s=600,
        anchor=utc(2026, 11, 1),
        timezone=NY,
        exclusions=Exclusions(daily=(DailyWindow(time(1, 40), time(2, 30)),)),
    )
    assert preview(rule, utc(2026, 11, 1, 5, 20), 7) == [
        utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 10),
        utc(2026, 11, 1, 6, 20), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30),
        utc(2026, 11, 1, 7, 40),
    ]  # fmt: skip


def test_a_repeated_hour_is_jumped_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every second from inside the second pass: a walk would take 3,599 steps.
    monkeypatch.setattr(recurrence, "MAX_STEPS", 3)
    every_second = Recurrence(cron="* * * * * *", timezone=NY)
    assert next_occurrence(every_second, utc(2026, 11, 1, 6, 0, 1)) == utc(2026, 11, 1, 7)
    blackout = Blackout(utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1, 30))
    rule = Recurrence(cron="* * * * * *", timezone=OSLO, exclusions=Exclusions(windows=(blackout,)))
    assert next_occurrence(rule, utc(2027, 10, 31, 0, 30), inclusive=True) == utc(2027, 10, 31, 2)


# --- the bound on the cost of a rule -----------------------------------------------------

EVERY_HOUR_EXCLUDED = Exclusions(
    daily=tuple(DailyWindow(time(h), time((h + 1) % 24)) for h in range(24))
)


def test_hitting_the_bound_is_not_the_end_of_the_rule() -> None:
    # 24 jumps a day (one per window) reach the bound long before SCAN_LIMIT: the
    # evaluation stops with an error, it does not report a finished rule.
    rule = Recurrence(cron="* * * * *", exclusions=EVERY_HOUR_EXCLUDED)
    with pytest.raises(EvaluationLimit) as info:
        next_occurrence(rule, NOW)
    assert isinstance(info.value, RuleError)
    assert info.value.field == "exclusions"
    assert info.value.steps == MAX_STEPS
    assert info.value.after == NOW
    assert str(info.value).startswith("exclusions: no occurrence found after 2026-01-01")
    with pytest.raises(EvaluationLimit):
        validate(rule, NOW)


def test_a_costly_preview_is_refused_and_a_short_one_is_not() -> None:
    # 02:30 is quiet every day, except that in New York on a spring-forward day it runs at
    # 03:00: one occurrence a year, some 365 steps each, more than a long preview may spend.
    rule = Recurrence(
        cron="30 2 * * *",
        timezone=NY,
        exclusions=Exclusions(daily=(DailyWindow(time(2, 30), time(2, 45)),)),
    )
    assert preview(rule, NOW, 3) == [utc(2026, 3, 8, 7), utc(2027, 3, 14, 7), utc(2028, 3, 12, 7)]
    with pytest.raises(EvaluationLimit):
        preview(rule, NOW, 20)


def test_long_walks_over_cheap_rules_never_hit_the_bound() -> None:
    count = 3 * MAX_STEPS
    seconds = Recurrence(interval_s=1, anchor=NOW)
    assert len(preview(seconds, NOW, count)) == count
    # One occurrence an hour, each behind a jump over a 59-minute window: 2 steps each.
    windows = tuple(DailyWindow(time(h, 1), time((h + 1) % 24)) for h in range(24))
    hourly = Recurrence(cron="* * * * *", timezone=OSLO, exclusions=Exclusions(daily=windows))
    got = preview(hourly, NOW, MAX_STEPS)
    assert len(got) == MAX_STEPS
    assert {u.minute for u in got} == {0}
