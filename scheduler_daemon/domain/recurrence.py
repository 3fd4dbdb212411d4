"""Recurrence rules and their occurrences: cron, fixed intervals and the presets.

Pure code, no I/O. This is the only module in the project that imports croniter.

A ``Recurrence`` is exactly one of:

- ``cron``: 5 fields (minute hour day-of-month month day-of-week), or 6 fields with the
  SECONDS FIRST (``"*/2 * * * * *"`` is every 2 seconds). Standard cron day matching: when
  both day-of-month and day-of-week are restricted, a day matching either one runs. A range
  with equal bounds (``5-5``) means that single value, as in standard cron. croniter's
  hashed and random fields (``H``, ``R``) are refused (they would not be reproducible).
- ``interval_s``: every ``interval_s`` seconds (>= 1) from ``anchor`` (default ``start_at``).
- ``preset``: ``hourly`` (at the minute and second of ``at``), ``daily`` (at ``at``),
  ``weekly`` (on ``weekday``, 0 = Monday, at ``at``), ``monthly`` (on ``day_of_month``, at
  ``at``; months without that day have no occurrence). ``at`` defaults to 00:00:00.

Time semantics
--------------
- Cron rules and presets are evaluated on the local wall clock of ``timezone`` (an IANA
  name); occurrences are returned as aware UTC datetimes.
- Spring forward: a local time that does not exist (it falls in the gap) runs once, at the
  first valid instant after the gap, which is the transition instant (``30 2 * * *`` in
  America/New_York on 2026-03-08 runs at 03:00 EDT = 07:00Z). Several nonexistent times
  collapse into that one instant, and an occurrence that also falls exactly on that instant
  (03:00 for ``0 * * * *``) is the same occurrence: it is returned once.
- Fall back: a local time that occurs twice runs once, at the first of the two instants
  (``fold=0``). ``0 * * * *`` has no occurrence at the second 01:00 of the fall-back day.
- Interval rules are absolute time (``anchor + k * interval_s``, k >= 0) and ignore DST: a
  24 h interval across a DST change moves by an hour on the local clock.
- ``start_at`` and ``end_at`` bound occurrences, inclusive at both ends.
- Exclusions skip an occurrence when its instant falls in a ``Blackout`` [start, end), when
  its local wall time ``t`` (the local time at which it actually runs: 03:00, not 02:30, for
  a time moved out of a spring-forward gap) falls in a ``DailyWindow`` (``start <= t < end``,
  or ``t >= start or t < end`` when ``end <= start``: the window wraps past midnight, and
  ``start == end`` covers the whole day), or when its local date is one of ``dates``.
  Skipped occurrences are dropped, not postponed.
- After an excluded candidate the search resumes at the absolute instant the exclusion
  ends, never at a wall time that could map back into it: for a cron rule or preset, a
  blackout ending in the second pass of a repeated hour resumes after the repeated wall
  times, which ran (or were skipped) in the first pass; a daily window left by an interval
  rule's second pass ends at the second instant of its end. Every step moves strictly
  forward in absolute time, and excluded stretches are jumped over, not walked.
- The rule ends (no more occurrences) when ``end_at`` has passed or no acceptable
  occurrence turns up within about 10 years (``SCAN_LIMIT``) of the previous one (or of the
  starting point): exclusions that exclude everything end the iteration.
- The cost is bounded: finding one occurrence examines at most ``MAX_STEPS`` candidate
  times, and one call at most ``MAX_STEPS`` plus ``STEPS_PER_OCCURRENCE`` for each
  occurrence it returns, so that no request or expander pass holds the event loop for long
  (a fraction of a second at worst). Past the bound the iterator raises
  ``EvaluationLimit`` (a ``RuleError``), which is not the end of the rule: the next
  occurrence may well exist, it could not be found cheaply enough.

Performance: zones come from zoneinfo's cache, a cron expression is parsed once (the parsed
croniter is cached and copied per call), one croniter iterator serves a whole call, and the
happy path raises no exception per occurrence.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

SCAN_LIMIT: Final = timedelta(days=3653)  # ~10 years without an acceptable occurrence
# Candidate times one search may examine (20-100 us each with croniter, so 0.1-0.5 s at
# worst): enough for a whole-day exclusion to reach SCAN_LIMIT (a jump a day for 10 years)
# and for the 100 blackouts and 1,000 excluded dates the API accepts. A call also earns
# STEPS_PER_OCCURRENCE for each occurrence it returns (the ~25 jumps a day that 24 daily
# windows cost), so that long walks over cheap rules never hit the bound, while a call's
# total stays below MAX_STEPS + STEPS_PER_OCCURRENCE * occurrences returned.
MAX_STEPS: Final = 5_000
STEPS_PER_OCCURRENCE: Final = 25
_SCAN_YEARS: Final = 10  # croniter's own search window for one get_next call

PRESETS: Final = ("hourly", "daily", "weekly", "monthly")
_MIDNIGHT: Final = time(0)
_ONE_DAY: Final = timedelta(days=1)
_TICK: Final = timedelta(microseconds=1)
_MAX_UTC: Final = datetime.max.replace(tzinfo=UTC)
_CRON_FIELD: Final = re.compile(r"\S+", re.ASCII)  # croniter's own field separator
_HASHED_ITEM: Final = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.ASCII | re.IGNORECASE)
_EQUAL_RANGE: Final = re.compile(r"(\w+)-\1(/\d+)?", re.ASCII | re.IGNORECASE)
_CRON_ORIGIN: Final = datetime(2000, 1, 1)  # noqa: DTZ001 - croniter iterates naive wall times


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A blackout repeating every day on the local clock, e.g. 01:00-03:00 maintenance.

    ``end <= start`` wraps past midnight (22:00-02:00); ``start == end`` is the whole day.
    """

    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Blackout:
    """An absolute blackout [start, end) between two aware datetimes."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Exclusions:
    windows: tuple[Blackout, ...] = ()
    daily: tuple[DailyWindow, ...] = ()
    dates: tuple[date, ...] = ()  # local dates (in the rule's zone) with no occurrences


@dataclass(frozen=True, slots=True)
class Recurrence:
    cron: str | None = None  # 5 fields, or 6 with seconds first
    interval_s: float | None = None  # absolute time: anchor + k * interval_s
    preset: Literal["hourly", "daily", "weekly", "monthly"] | None = None
    at: time | None = None  # presets: time of day (hourly: its minute and second)
    weekday: int | None = None  # weekly: 0 = Monday .. 6 = Sunday
    day_of_month: int | None = None  # monthly: 1..31, months without that day skipped
    timezone: str = "UTC"  # IANA name
    start_at: datetime | None = None  # aware; no occurrence before it
    end_at: datetime | None = None  # aware; no occurrence after it
    exclusions: Exclusions = Exclusions()
    anchor: datetime | None = None  # interval rules: first occurrence (default start_at)


class RuleError(ValueError):
    """A rule that cannot be used; ``field`` names the offending field.

    ``field`` is one of the ``Recurrence`` field names, or ``"rule"`` when not exactly one
    of cron / interval_s / preset is given (``"recurrence"`` and ``"run_at"`` from
    ``for_task``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EvaluationLimit(RuleError):
    """Finding the next occurrence took more than the step bound (``MAX_STEPS``).

    Not the end of the rule: callers must not treat it as "no more occurrences". It names
    ``exclusions`` when the rule has any (the steps went into jumping over them), else the
    rule's kind field.
    """

    def __init__(self, field: str, after: datetime, steps: int) -> None:
        why = "; the exclusions leave too few occurrences" if field == "exclusions" else ""
        super().__init__(
            field,
            f"no occurrence found after {after.isoformat()} within {steps} evaluation steps"
            f" (the bound on the cost of a rule){why}",
        )
        self.after = after
        self.steps = steps


# --- public API --------------------------------------------------------------------------


def validate(rule: Recurrence, now: datetime) -> None:
    """Raise ``RuleError`` unless ``rule`` is well formed and has an occurrence after ``now``
    that can be found within the step bound (else ``EvaluationLimit``, a ``RuleError``)."""
    plan = _compile(rule)
    _require_aware(now, "now")
    if next(_generate(plan, now, inclusive=False), None) is not None:
        return
    kind = _kind_field(rule)
    if rule.end_at is not None and rule.end_at <= now:
        raise RuleError("end_at", f"end_at {rule.end_at.isoformat()} is not in the future")
    unexcluded = replace(rule, exclusions=Exclusions())
    if rule.exclusions != Exclusions() and next_occurrence(unexcluded, now) is not None:
        raise RuleError("exclusions", "the exclusions leave no occurrence after now")
    unbounded = replace(unexcluded, end_at=None)
    if rule.end_at is not None and next_occurrence(unbounded, now) is not None:
        raise RuleError("end_at", "the rule has no occurrence between now and end_at")
    raise RuleError(kind, "the rule has no occurrence after now")


def occurrences(
    rule: Recurrence, after: datetime, *, inclusive: bool = False
) -> Iterator[datetime]:
    """The occurrences of ``rule`` after ``after`` (at or after it with ``inclusive``).

    Aware UTC datetimes, strictly increasing, within [start_at, end_at], none excluded. The
    rule's shape is checked now (``RuleError``); the iterator is lazy, and it ends when the
    rule does or raises ``EvaluationLimit`` when the next occurrence costs more than the
    step bound to find (see the module docstring).
    """
    plan = _compile(rule)
    _require_aware(after, "after")
    return _generate(plan, after, inclusive)


def next_occurrence(
    rule: Recurrence, after: datetime, *, inclusive: bool = False
) -> datetime | None:
    """The first occurrence (None: the rule has ended; ``EvaluationLimit``: too costly)."""
    return next(occurrences(rule, after, inclusive=inclusive), None)


def preview(rule: Recurrence, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` occurrences after ``after`` (fewer if the rule runs out); raises
    ``EvaluationLimit`` rather than return fewer when they cost more than the bound."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return list(itertools.islice(occurrences(rule, after), count))


def for_task(recurrence: str, run_at: datetime) -> Recurrence:
    """The rule behind a task's ``recurrence`` field (seed 001), repeating from ``run_at``.

    ``daily`` / ``weekly`` / ``monthly`` repeat at run_at's UTC time of day (whole seconds),
    on its UTC weekday / day of month (months without that day are skipped); anything else
    must be a cron expression, evaluated in UTC. ``start_at`` is ``run_at``.
    """
    if not isinstance(run_at, datetime) or run_at.utcoffset() is None:
        raise RuleError("run_at", "run_at must be a timezone-aware datetime")
    if not isinstance(recurrence, str):
        raise RuleError("recurrence", "recurrence must be a string")
    utc = run_at.astimezone(UTC)
    at = utc.time().replace(microsecond=0)
    name = recurrence.strip().lower()
    if name == "daily":
        rule = Recurrence(preset="daily", at=at, start_at=run_at)
    elif name == "weekly":
        rule = Recurrence(preset="weekly", at=at, weekday=utc.weekday(), start_at=run_at)
    elif name == "monthly":
        rule = Recurrence(preset="monthly", at=at, day_of_month=utc.day, start_at=run_at)
    else:
        rule = Recurrence(cron=recurrence.strip(), start_at=run_at)
        try:
            _compile(rule)
        except RuleError as exc:
            raise RuleError(
                "recurrence",
                f"expected daily, weekly, monthly or a cron expression ({exc.message})",
            ) from None
    return rule


# --- compiling a rule --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """A checked rule in the shape the generator wants: UTC bounds, parsed cron, sets."""

    zone: ZoneInfo
    cron: Any  # a parsed croniter, never iterated itself (copied per call)
    anchor: datetime | None  # interval rules
    step_us: int
    start_at: datetime | None
    end_at: datetime | None
    blackouts: tuple[tuple[datetime, datetime], ...]
    daily: tuple[DailyWindow, ...]
    dates: frozenset[date]
    limit_field: str  # what EvaluationLimit names: the exclusions, if any, else the kind


def _kind_field(rule: Recurrence) -> str:
    if rule.cron is not None:
        return "cron"
    if rule.interval_s is not None:
        return "interval_s"
    return "preset"


def _compile(rule: Recurrence) -> _Plan:
    kinds = [
        name
        for name, value in (
            ("cron", rule.cron),
            ("interval_s", rule.interval_s),
            ("preset", rule.preset),
        )
        if value is not None
    ]
    if len(kinds) != 1:
        got = f" (got {' and '.join(kinds)})" if kinds else ""
        raise RuleError("rule", f"give exactly one of cron, interval_s or preset{got}")
    kind = kinds[0]
    zone = _zone(rule.timezone)
    start_at = _aware_utc(rule.start_at, "start_at")
    end_at = _aware_utc(rule.end_at, "end_at")
    anchor = _aware_utc(rule.anchor, "anchor")
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise RuleError("end_at", "end_at must be after start_at")
    if kind != "preset":
        for name in ("at", "weekday", "day_of_month"):
            if getattr(rule, name) is not None:
                raise RuleError(name, f"{name} only applies to presets")
    if kind != "interval_s" and anchor is not None:
        raise RuleError("anchor", "anchor only applies to interval rules")

    cron: Any = None
    step_us = 0
    if kind == "cron":
        if not isinstance(rule.cron, str):
            raise RuleError("cron", "cron must be a string")
        cron = _parse_cron(rule.cron, "cron")
    elif kind == "interval_s":
        step_us = _interval_us(rule.interval_s)
        anchor = anchor if anchor is not None else start_at
        if anchor is None:
            raise RuleError("anchor", "an interval rule needs an anchor or a start_at")
    else:
        cron = _parse_cron(_preset_cron(rule), "preset")

    exclusions = rule.exclusions
    if not isinstance(exclusions, Exclusions):
        raise RuleError("exclusions", "exclusions must be an Exclusions")
    blackouts = _blackouts(exclusions.windows)
    daily = _daily(exclusions.daily)
    dates = _dates(exclusions.dates)
    return _Plan(
        zone=zone,
        cron=cron,
        anchor=anchor,
        step_us=step_us,
        start_at=start_at,
        end_at=end_at,
        blackouts=blackouts,
        daily=daily,
        dates=dates,
        limit_field="exclusions" if blackouts or daily or dates else kind,
    )


@functools.lru_cache(maxsize=512)
def _zone_cached(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise RuleError("timezone", f"unknown time zone {name!r}")
    try:
        return _zone_cached(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise RuleError("timezone", f"unknown time zone {name!r}") from None


def _aware_utc(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise RuleError(field, f"{field} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _interval_us(interval_s: object) -> int:
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int | float)
        or not math.isfinite(interval_s)
        or interval_s < 1
    ):
        raise RuleError("interval_s", "interval_s must be a number of seconds, at least 1")
    return round(interval_s * 1_000_000)


def _preset_cron(rule: Recurrence) -> str:
    """The preset as a 6-field cron (seconds first); checks its fields."""
    preset = rule.preset
    if preset not in PRESETS:
        raise RuleError("preset", f"preset must be one of {', '.join(PRESETS)}")
    at = rule.at if rule.at is not None else _MIDNIGHT
    if not isinstance(at, time) or at.tzinfo is not None or at.microsecond:
        raise RuleError("at", "at must be a time of day in whole seconds, without a time zone")
    if preset == "weekly":
        if _bad_int(rule.weekday, 0, 6):
            raise RuleError("weekday", "a weekly preset needs weekday 0 (Monday) .. 6 (Sunday)")
    elif rule.weekday is not None:
        raise RuleError("weekday", "weekday only applies to the weekly preset")
    if preset == "monthly":
        if _bad_int(rule.day_of_month, 1, 31):
            raise RuleError("day_of_month", "a monthly preset needs day_of_month 1..31")
    elif rule.day_of_month is not None:
        raise RuleError("day_of_month", "day_of_month only applies to the monthly preset")
    s, m, h = at.second, at.minute, at.hour
    if preset == "hourly":
        return f"{s} {m} * * * *"
    if preset == "daily":
        return f"{s} {m} {h} * * *"
    if preset == "weekly":
        return f"{s} {m} {h} * * {((rule.weekday or 0) + 1) % 7}"  # cron: 0 = Sunday
    return f"{s} {m} {h} {rule.day_of_month} * *"


def _bad_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high


def _parse_cron(expr: str, field: str) -> Any:
    try:
        return _parse_cron_cached(expr)
    except RuleError as exc:
        raise RuleError(field, exc.message) from None


@functools.lru_cache(maxsize=4096)
def _parse_cron_cached(expr: str) -> Any:
    """A croniter for ``expr`` (5 fields, or 6 with seconds first), to be copied, not used."""
    fields = _CRON_FIELD.findall(expr)
    if len(fields) not in (5, 6):
        raise RuleError(
            "cron", f"{expr!r} must have 5 fields, or 6 with seconds first (got {len(fields)})"
        )
    normalized = []
    for item_list in fields:
        items = []
        for item in item_list.split(","):
            if _HASHED_ITEM.fullmatch(item):
                raise RuleError("cron", f"{expr!r}: hashed and random fields are not supported")
            equal = _EQUAL_RANGE.fullmatch(item)
            items.append(equal.group(1) if equal else item)  # croniter reads 5-5 as "all"
        normalized.append(",".join(items))
    try:
        return croniter(
            " ".join(normalized),
            _CRON_ORIGIN,
            ret_type=datetime,
            second_at_beginning=True,
            max_years_between_matches=_SCAN_YEARS,
        )
    except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise RuleError("cron", f"invalid cron expression {expr!r}: {exc}") from None


def _blackouts(windows: object) -> tuple[tuple[datetime, datetime], ...]:
    if not isinstance(windows, tuple | list):
        raise RuleError("exclusions", "exclusions.windows must be a tuple of Blackout")
    out = []
    for i, window in enumerate(windows):
        if not isinstance(window, Blackout):
            raise RuleError("exclusions", f"windows[{i}] must be a Blackout")
        start = _aware_utc(window.start, "exclusions")
        end = _aware_utc(window.end, "exclusions")
        if start is None or end is None or end <= start:
            raise RuleError("exclusions", f"windows[{i}]: end must be after start")
        out.append((start, end))
    return tuple(sorted(out))


def _daily(windows: object) -> tuple[DailyWindow, ...]:
    if not isinstance(windows, tuple | list):
        raise RuleError("exclusions", "exclusions.daily must be a tuple of DailyWindow")
    for i, window in enumerate(windows):
        if not isinstance(window, DailyWindow) or not all(
            isinstance(t, time) and t.tzinfo is None for t in (window.start, window.end)
        ):
            raise RuleError(
                "exclusions", f"daily[{i}] must be a DailyWindow of two times without zone"
            )
    return tuple(windows)


def _dates(dates: object) -> frozenset[date]:
    if not isinstance(dates, tuple | list):
        raise RuleError("exclusions", "exclusions.dates must be a tuple of dates")
    for i, day in enumerate(dates):
        if not isinstance(day, date) or isinstance(day, datetime):
            raise RuleError("exclusions", f"dates[{i}] must be a date")
    return frozenset(dates)


# --- local wall clock <-> UTC ------------------------------------------------------------


def _to_utc(wall: datetime, zone: ZoneInfo) -> tuple[datetime, bool]:
    """The instant a naive local ``wall`` time runs at, and whether it exists.

    Unique: its instant. Repeated (fall back): the first instant. Nonexistent (spring
    forward): the transition instant at the end of the gap.
    """
    first = wall.replace(tzinfo=zone, fold=0)
    earlier = first.utcoffset()
    later = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert earlier is not None
    assert later is not None
    if earlier >= later:  # unique, or ambiguous (the offset drops): fold=0 is the first
        return (wall - earlier).replace(tzinfo=UTC), True
    # In a gap, fold=0 reads the wall with the offset before the transition (an instant
    # at or after it) and fold=1 with the offset after (an instant before it).
    return _transition(zone, wall - later, wall - earlier).replace(tzinfo=UTC), False


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first naive-UTC instant in (before, after] whose offset differs from before's."""
    old = before.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    low, high = 0, (after - before) // _TICK  # offsets in microseconds from ``before``
    while high - low > 1:
        mid = (low + high) // 2
        instant = before + timedelta(microseconds=mid)
        if instant.replace(tzinfo=UTC).astimezone(zone).utcoffset() == old:
            low = mid
        else:
            high = mid
    return before + timedelta(microseconds=high)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _fold_end(instant: datetime, zone: ZoneInfo) -> datetime | None:
    """If ``instant`` lies in the second pass of a repeated stretch of wall time (fall back),
    the naive wall time that ends the repetition (the first one met only once); else None.

    Every wall time of the repeated stretch runs at its first instant, before ``instant``:
    a search for instants at or after ``instant`` must skip the whole stretch.
    """
    local = instant.astimezone(zone)
    if not local.fold:
        return None
    first, second = local.replace(fold=0).utcoffset(), local.utcoffset()
    assert first is not None
    assert second is not None
    naive = instant.astimezone(UTC).replace(tzinfo=None)
    repeat = first - second  # how far the clock went back
    transition = _transition(zone, naive - repeat, naive)
    return _wall((transition + repeat).replace(tzinfo=UTC), zone)


def _fall_back_between(after: datetime, before: datetime, zone: ZoneInfo) -> datetime | None:
    """The instant in (after, before) at which the clock goes back, if there is one."""
    old = after.astimezone(zone).utcoffset()
    new = (before - _TICK).astimezone(zone).utcoffset()
    assert old is not None
    assert new is not None
    if new >= old:
        return None
    naive_after, naive_before = (t.astimezone(UTC).replace(tzinfo=None) for t in (after, before))
    return _transition(zone, naive_after, naive_before - _TICK).replace(tzinfo=UTC)


# --- candidate sources -------------------------------------------------------------------


class _CronSource:
    """Cron matches on the local wall clock, mapped to instants (non-decreasing)."""

    __slots__ = ("_it", "_zone")

    def __init__(self, parsed: Any, zone: ZoneInfo) -> None:
        self._it = copy.copy(parsed)
        self._zone = zone

    def seek(self, instant: datetime) -> None:
        """Continue with the first wall time whose instant is >= ``instant`` (and maybe a
        few earlier ones within the same second, which the caller drops).

        The position is derived from the absolute ``instant``: in the second pass of a
        repeated hour, the wall clock reads times that already ran (at their first instant,
        before ``instant``), so the search goes on after the repeated stretch instead.
        """
        wall = _fold_end(instant - _TICK, self._zone)
        if wall is None:
            wall = _wall(instant - _TICK, self._zone)
        else:
            wall -= _TICK
        self._it.set_current(wall.replace(microsecond=0), force=True)  # get_next: > wall

    def next(self) -> tuple[datetime, datetime | None] | None:
        """The next candidate instant and its local wall time (None if it was moved)."""
        try:
            wall: datetime = self._it.get_next(datetime)
        except (CroniterBadDateError, OverflowError):
            return None  # no match within croniter's search window
        instant, exists = _to_utc(wall, self._zone)
        if exists:
            return instant, wall
        # The whole gap maps to ``instant``: carry on after the wall time it shows (the gap's
        # end), so the rest of the gap and a match right at its end are not repeated.
        self._it.set_current(_wall(instant, self._zone), force=True)
        return instant, None


class _IntervalSource:
    """``anchor + k * step`` for k >= 0, in absolute time."""

    __slots__ = ("_anchor", "_k", "_step_us")

    def __init__(self, anchor: datetime, step_us: int) -> None:
        self._anchor = anchor
        self._step_us = step_us
        self._k = 0

    def seek(self, instant: datetime) -> None:
        elapsed_us = (instant - self._anchor) // _TICK
        self._k = max(0, -(-elapsed_us // self._step_us))

    def next(self) -> tuple[datetime, datetime | None] | None:
        try:
            instant = self._anchor + timedelta(microseconds=self._k * self._step_us)
        except OverflowError:
            return None
        self._k += 1
        return instant, None


# --- the generator -----------------------------------------------------------------------


def _generate(plan: _Plan, after: datetime, inclusive: bool) -> Iterator[datetime]:
    """The occurrences after ``after``, by candidates from the rule's source.

    Every candidate costs a step against the call's budget: ``MAX_STEPS``, plus
    ``STEPS_PER_OCCURRENCE`` per occurrence yielded, but never more than ``MAX_STEPS``
    ahead (one search never examines more). Past it, ``EvaluationLimit``.
    """
    source = _source(plan)
    floor, strict = after.astimezone(UTC), not inclusive  # the next must be > (>=) floor
    if plan.start_at is not None and plan.start_at > floor:
        floor, strict = plan.start_at, False
    origin, limit = floor, _add(floor, SCAN_LIMIT)  # where this search began, and its end
    steps, searched, budget = 0, 0, MAX_STEPS  # searched: the steps before this search
    source.seek(floor)
    while True:
        candidate = source.next()
        if candidate is None:
            return
        instant, wall = candidate
        if (plan.end_at is not None and instant > plan.end_at) or instant > limit:
            return
        steps += 1
        if steps > budget:
            raise EvaluationLimit(plan.limit_field, origin, steps - 1 - searched)
        if instant < floor or (strict and instant == floor):
            continue  # before the start, a repeat of the gap's instant, or a second fold
        resume = _excluded_until(plan, instant, wall)
        if resume is not None:
            # Everything before ``resume`` is excluded: it becomes the floor, so that the
            # search can only move forward in absolute time.
            floor, strict = resume, False
            source.seek(resume)
            continue
        yield instant
        floor, strict = instant, True
        origin, limit = instant, _add(instant, SCAN_LIMIT)
        searched, budget = steps, min(budget + STEPS_PER_OCCURRENCE, steps + MAX_STEPS)


def _source(plan: _Plan) -> _CronSource | _IntervalSource:
    if plan.anchor is not None:
        return _IntervalSource(plan.anchor, plan.step_us)
    return _CronSource(plan.cron, plan.zone)


def _excluded_until(plan: _Plan, instant: datetime, wall: datetime | None) -> datetime | None:
    """If ``instant`` is excluded, the instant (> ``instant``) at which its exclusion ends and
    the search resumes; None if it is not excluded. ``wall``: the local wall time the
    candidate came from (None: read it from ``instant``)."""
    for start, end in plan.blackouts:
        if start <= instant < end:
            return end
        if start > instant:
            break  # sorted by start
    if not (plan.daily or plan.dates):
        return None
    local = wall if wall is not None else _wall(instant, plan.zone)
    end_wall = _local_exclusion_end(local, plan.daily, plan.dates)
    if end_wall is None:
        return None
    resume = _instant_after(end_wall, plan.zone, instant)
    # A local exclusion holds while the wall clock stays inside it; when the clock goes
    # back on the way, the repeated wall times may be outside it: look again from there.
    fall_back = _fall_back_between(instant, resume, plan.zone)
    return resume if fall_back is None else fall_back


def _local_exclusion_end(
    local: datetime, daily: tuple[DailyWindow, ...], dates: frozenset[date]
) -> datetime | None:
    """If the local wall time ``local`` is excluded, the naive wall time at which its
    exclusion ends; None if it is not excluded."""
    day = local.date()
    if day in dates:
        return datetime.combine(day + _ONE_DAY, _MIDNIGHT)
    t = local.time()
    for window in daily:
        start, end = window.start, window.end
        if start < end:
            if start <= t < end:
                return datetime.combine(day, end)
        elif t >= start:
            return datetime.combine(day + _ONE_DAY, end)
        elif t < end:
            return datetime.combine(day, end)
    return None


def _instant_after(wall: datetime, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` at which the local wall clock reaches ``wall``.

    Its first instant (the end of the gap if it does not exist) unless that is not after
    ``after`` (``after`` is in the second pass of a repeated hour): then its second one.
    """
    first, _ = _to_utc(wall, zone)
    if first > after:
        return first
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return second if second > after else after + _TICK


def _add(instant: datetime, delta: timedelta) -> datetime:
    try:
        return instant + delta
    except OverflowError:
        return _MAX_UTC
