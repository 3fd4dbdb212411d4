"""A schedule's rule in English, for people: "every Monday at 09:00 Europe/Oslo".

Pure code. Presets and intervals are always phrased; a cron expression is phrased when its
shape is a common one (a time of day, every N minutes, on given weekdays, days of the month or
months), and otherwise falls back to ``cron <expr> (<zone>)``. The words describe the rule
only: start and end, exclusions and the DST handling (see ``recurrence``) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time

from scheduler_daemon.domain.recurrence import Recurrence

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

# Longer lists than this read worse than the cron expression itself.
MAX_LISTED = 7

_MONTH_NAMES = {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}
_DOW_NAMES = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_ITEM = re.compile(r"^(\*|\w+(?:-\w+)?)(?:/(\d+))?$", re.ASCII)


def describe(rule: Recurrence) -> str:
    """The rule in words, with its time zone (an interval ignores zones and names none)."""
    zone = rule.timezone
    if rule.interval_s is not None:
        return _interval(rule.interval_s)
    if rule.preset is not None:
        words, note = _preset(rule)
        return f"{words} {zone}{note}"
    if rule.cron is not None:
        phrased = _cron(rule.cron)
        expr = " ".join(rule.cron.split())
        if phrased is None:
            return f"cron {expr} ({zone})"
        return f"{phrased} (cron {expr}) {zone}"
    return "no rule"


# --- intervals and presets -----------------------------------------------------------------


def _interval(seconds: float) -> str:
    if seconds != int(seconds):
        return f"every {_number(seconds)} seconds"
    whole = int(seconds)
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if whole % size == 0:
            return _every(whole // size, unit)
    return _every(whole, "second")


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _every(count: int, unit: str) -> str:
    return f"every {unit}" if count == 1 else f"every {count} {unit}s"


def _preset(rule: Recurrence) -> tuple[str, str]:
    """The words, and a note to put after the zone."""
    at = rule.at or time(0)
    clock = _clock(at.hour, at.minute, at.second)
    if rule.preset == "hourly":
        return _minute_of_hour(at.minute, at.second) + " of every hour", ""
    if rule.preset == "daily":
        return f"every day at {clock}", ""
    if rule.preset == "weekly":
        return f"every {WEEKDAYS[rule.weekday or 0]} at {clock}", ""
    day = rule.day_of_month or 1
    skipped = f" (months without a day {day} are skipped)" if day > 28 else ""
    return f"on day {day} of every month at {clock}", skipped


def _clock(hour: int, minute: int, second: int = 0) -> str:
    return f"{hour:02d}:{minute:02d}:{second:02d}" if second else f"{hour:02d}:{minute:02d}"


def _minute_of_hour(minute: int, second: int) -> str:
    return f"at minute {minute}, second {second}" if second else f"at minute {minute}"


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


# --- cron ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    low: int
    high: int
    names: dict[str, int] | None = None


_SECOND = _Field(0, 59)
_MINUTE = _Field(0, 59)
_HOUR = _Field(0, 23)
_DOM = _Field(1, 31)
_MONTH = _Field(1, 12, _MONTH_NAMES)
_DOW = _Field(0, 7, _DOW_NAMES)  # 0 and 7: Sunday


class _Unphrased(Exception):
    """A shape the words do not cover: the caller falls back to the expression."""


def _value(text: str, spec: _Field) -> int:
    if text.isdigit():
        value = int(text)
    elif spec.names is not None and text.lower() in spec.names:
        value = spec.names[text.lower()]
    else:
        raise _Unphrased(text)
    if not spec.low <= value <= spec.high:
        raise _Unphrased(text)
    return value


def _expand(text: str, spec: _Field) -> tuple[frozenset[int], bool]:
    """The values a cron field matches, and whether it is a bare ``*``."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise _Unphrased(item)  # L, W, #, ?, H and anything else
        body, step_text = match.group(1), match.group(2)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise _Unphrased(item)
        if body == "*":
            low, high = spec.low, spec.high
        elif "-" in body:
            first, last = body.split("-")
            low, high = _value(first, spec), _value(last, spec)
            if high < low:
                raise _Unphrased(item)  # a wrapping range
        else:
            low = _value(body, spec)
            high = spec.high if step_text else low  # "5/15": from 5 to the end by 15
        values.update(range(low, high + 1, step))
    return frozenset(values), text == "*"


def _step_from(values: frozenset[int], low: int, size: int) -> int | None:
    """N when ``values`` is low, low+N, low+2N, ... over a field of ``size`` values and N
    divides ``size`` (so the rhythm carries on evenly), else None."""
    ordered = sorted(values)
    if len(ordered) < 2 or ordered[0] != low:
        return None
    step = ordered[1] - ordered[0]
    if size % step or ordered != list(range(low, low + size, step)):
        return None
    return step


def _span(values: frozenset[int]) -> tuple[int, int] | None:
    """(first, last) when ``values`` is one contiguous run."""
    ordered = sorted(values)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return ordered[0], ordered[-1]
    return None


def _cron(expr: str) -> str | None:
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        return None
    try:
        seconds, _ = _expand(fields[0], _SECOND)
        minutes, _ = _expand(fields[1], _MINUTE)
        hours, _ = _expand(fields[2], _HOUR)
        days, any_day = _expand(fields[3], _DOM)
        months, _ = _expand(fields[4], _MONTH)
        weekdays, any_weekday = _expand(fields[5], _DOW)
        # Both day fields restricted: a day matching either runs; not phrased.
        if not any_day and not any_weekday:
            return None
        weekdays = frozenset((d + 6) % 7 for d in weekdays)  # 0 = Monday, as in WEEKDAYS
        return _phrase(seconds, minutes, hours, days, months, weekdays)
    except _Unphrased:
        return None


def _phrase(
    seconds: frozenset[int],
    minutes: frozenset[int],
    hours: frozenset[int],
    days: frozenset[int],
    months: frozenset[int],
    weekdays: frozenset[int],
) -> str:
    every_hour = len(hours) == 24
    days_part = _days(days, months, weekdays)
    # A few times a day: listed, after the days ("every Monday at 09:00 and 17:00").
    if len(seconds) == 1 and len(minutes) * len(hours) <= 4 and not every_hour:
        (second,) = seconds
        times = [_clock(h, m, second) for h in sorted(hours) for m in sorted(minutes)]
        return f"{days_part.every} at {_join(times)}"
    # Otherwise a rhythm, then the days it keeps to ("every 15 minutes on Mondays").
    return _rhythm(seconds, minutes, hours) + days_part.within


@dataclass(frozen=True, slots=True)
class _Days:
    every: str  # before times of day: "every day", "every Monday", "on day 1 of every month"
    within: str  # after a rhythm: "", " on Mondays", " on day 1 of every month"


def _days(days: frozenset[int], months: frozenset[int], weekdays: frozenset[int]) -> _Days:
    all_months = len(months) == 12
    month_run = _span(months)
    if len(days) < 31:
        ordered = sorted(days)
        if len(ordered) > MAX_LISTED:
            raise _Unphrased("days")
        numbers = _join([str(d) for d in ordered])
        label = f"day {numbers}" if len(ordered) == 1 else f"days {numbers}"
        if all_months:
            of = "every month"
        elif len(months) >= 3 and month_run is not None:
            of = f"each month from {MONTHS[month_run[0] - 1]} to {MONTHS[month_run[1] - 1]}"
        else:
            of = _months_list(months)
        phrase = f"on {label} of {of}"
        return _Days(phrase, f" {phrase}")
    # Every day of the month: maybe some weekdays, maybe some months.
    if all_months:
        months_every = months_within = ""
    elif len(months) >= 3 and month_run is not None:
        span = f"{MONTHS[month_run[0] - 1]} to {MONTHS[month_run[1] - 1]}"
        months_every, months_within = f" from {span}", f", {span}"
    else:
        months_every = months_within = f" in {_months_list(months)}"
    if len(weekdays) == 7:
        return _Days(f"every day{months_every}", months_within)
    run = _span(weekdays)
    if len(weekdays) >= 3 and run is not None:
        span = f"{WEEKDAYS[run[0]]} to {WEEKDAYS[run[1]]}"
        return _Days(f"every day from {span}{months_within}", f", {span}{months_within}")
    names = [WEEKDAYS[d] for d in sorted(weekdays)]
    plural = _join([n + "s" for n in names])
    return _Days(f"every {_join(names)}{months_every}", f" on {plural}{months_within}")


def _months_list(months: frozenset[int]) -> str:
    if len(months) > MAX_LISTED:
        raise _Unphrased("months")
    return _join([MONTHS[m - 1] for m in sorted(months)])


def _rhythm(seconds: frozenset[int], minutes: frozenset[int], hours: frozenset[int]) -> str:
    every_hour = len(hours) == 24
    every_minute = len(minutes) == 60
    if len(seconds) > 1:  # sub-minute rhythms: only every N seconds, all day long
        step = 1 if len(seconds) == 60 else _step_from(seconds, 0, 60)
        if step is None or not (every_minute and every_hour):
            raise _Unphrased("seconds")
        return _every(step, "second")
    (second,) = seconds
    minute_step = 1 if every_minute else _step_from(minutes, 0, 60)
    if every_hour:
        if minute_step is not None and not second:
            return _every(minute_step, "minute")
        if every_minute:
            return f"at second {second} of every minute"
        if len(minutes) == 1:
            (minute,) = minutes
            return _minute_of_hour(minute, second) + " of every hour"
        if len(minutes) <= MAX_LISTED and not second:
            listed = _join([str(m) for m in sorted(minutes)])
            return f"at minutes {listed} of every hour"
        raise _Unphrased("minutes")
    hour_step = _step_from(hours, 0, 24)
    if len(minutes) == 1 and hour_step is not None:
        (minute,) = minutes
        return f"{_every(hour_step, 'hour')} {_minute_of_hour(minute, second)}"
    run = _span(hours)
    if minute_step is not None and not second and run is not None:
        first, last = _clock(run[0], min(minutes)), _clock(run[1], max(minutes))
        return f"{_every(minute_step, 'minute')} from {first} to {last}"
    if len(minutes) * len(hours) <= MAX_LISTED:
        times = [_clock(h, m, second) for h in sorted(hours) for m in sorted(minutes)]
        return f"at {_join(times)}"
    raise _Unphrased("hours")
