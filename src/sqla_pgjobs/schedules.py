"""What a scheduled job's ``schedule_info`` means, and when it fires next. Pure: no database.

``schedule_info`` is the JSON value stored with a scheduled job, already parsed. Its forms
follow the reference scheduler (node-schedule 2.x with cron-parser v4), with the gaps in
its behaviour closed:

- a **cron string**: 5 fields (minute hour day-of-month month day-of-week) or 6 with a
  leading seconds field; ``*``, ``?`` (day fields), lists, ranges, ``*/n`` and ``a-b/n``
  steps, month and weekday names (``jan``, ``mon``), day-of-week 0 or 7 for Sunday, and
  the aliases ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight``
  ``@hourly``. When both day fields are restricted, a day matching *either* fires
  (standard cron). A field listing every value (``1-31``, ``0-6``) counts as unrestricted,
  as in cron-parser. The ``L``, ``W``, ``#`` and ``H`` extensions are refused, not guessed.
- a **recurrence rule** (an object): ``second``, ``minute``, ``hour``, ``date`` (1-31),
  ``month`` (**0-11**, JavaScript months), ``year`` and ``dayOfWeek`` (0-6, 0 = Sunday),
  each a number, a numeric string or a list of those. A missing field matches anything,
  except ``second``, which is 0 when missing; ``null`` matches anything, ``second``
  included (node-schedule assigns it as given). Every given field must match: ``date``
  *and* ``dayOfWeek``, unlike cron. ``{}`` fires every minute at second 0.
- a **window** ``{"start", "end", "rule"}``: ``rule`` (a cron string or a recurrence
  rule) fires only between ``start`` and ``end``, both included and both optional; a start
  in the past means "from now"; after ``end`` the schedule is over.
- a **one-shot time**: an ISO 8601 string (a naive one is read in the schedule's time
  zone) or a number of milliseconds since 1970 (as JavaScript's ``Date`` takes it). A time
  in the past never fires; it is accepted, and :meth:`Schedule.describe` says so. The
  other formats JavaScript's ``Date`` guesses at (``"May 1, 2026"``, RFC 2822) are refused,
  and so are cron strings of fewer than 5 fields (cron-parser filled in the missing
  leading fields, so that ``"3"`` meant every minute on Wednesdays).

An object may carry ``"tz"``, an IANA time zone name; the rule is read in that zone.
**Without ``"tz"`` the zone is UTC, not the host's local time zone** (the reference used
the scheduler process's local zone, so the same row fired at different instants on
differently configured hosts). Objects with keys outside these forms, values out of range,
and rules that can never fire are refused with :class:`InvalidScheduleError` naming the
value, so a bad row is reported once instead of looping (reference bugs N3-N5).

Daylight saving time. Rules match local wall-clock readings; a transition makes some
readings occur twice (fall back) or not at all (spring forward). The rule applied depends
on whether the rule names its hours, the distinction cron (Vixie cron, cron-parser) makes:

- A rule that **names its hours** (anything but every hour: daily at 02:30, ``{"hour": 2}``,
  and also ``0 */6 * * *``) is a time-of-day rule. A reading skipped by a spring-forward gap
  fires *once*, at the first instant after the gap (02:30 on the day Paris springs forward
  fires at 03:00 local, 01:00 UTC; every reading of ``{"hour": 2}`` that day collapses into
  that one fire). A reading repeated by a fall back fires *once*, at its first occurrence.
- A rule that **fires every hour** (``*`` in the hour field, no ``hour`` in a rule, or a
  list of all 24) is an interval rule and follows real time: it fires at every real
  instant whose local reading matches. Every minute (or second) therefore fires at every
  real minute (second) through both passes of a repeated hour and never twice at one
  instant; across a gap it simply goes on after it, and nothing is shifted into the gap
  end (``30 * * * *`` fires at 01:30 and 03:30 on the Paris spring-forward day, one real
  hour apart).

Searches are bounded (the reference could spin forever on a rule such as February 31):
:meth:`Schedule.next_fire` looks at no more than :data:`SEARCH_YEARS` years that the rule
allows and returns ``None`` beyond them, and :func:`parse_schedule` refuses a rule that
does not fire within that horizon. The search goes field by field (year, month, day,
hour, minute, second), so even an every-second rule costs a few steps per call.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqla_pgjobs.errors import InvalidArgumentError, PgJobsError
from sqla_pgjobs.validation import check_aware

__all__ = ["SEARCH_YEARS", "InvalidScheduleError", "Schedule", "parse_schedule"]

# The longest gap between two occurrences of a day pattern that can occur at all is 40
# years (February 29 on a given weekday, across a century year that is not a leap year;
# every other month/day/weekday combination recurs within 12 years). So 41 years, counted
# from the year of the search start, find the next fire of every rule without a year list
# that can fire at all, and "None within the horizon" means "never".
SEARCH_YEARS: Final = 41

_UTC: Final = ZoneInfo("UTC")
_ONE_SECOND: Final = timedelta(seconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_YEAR, _MAX_YEAR = 1970, 9999
_SHOWN_LENGTH = 200  # characters of schedule_info quoted in error messages


class InvalidScheduleError(InvalidArgumentError):
    """A ``schedule_info`` that is not one of the accepted forms, or that can never fire.

    ``schedule_info`` is the value refused, ``reason`` names the part at fault and what is
    allowed there. (``argument`` is ``"schedule_info"``, as for any invalid argument.)
    """

    def __init__(self, schedule_info: object, reason: str) -> None:
        self.schedule_info = schedule_info
        self.reason = reason
        self.argument = "schedule_info"
        self.value = schedule_info
        self.allowed = reason
        PgJobsError.__init__(self, f"schedule_info {_show(schedule_info)} is not allowed: {reason}")


def _show(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _SHOWN_LENGTH:
        text = text[: _SHOWN_LENGTH - 3] + "..."
    return text


def _aware(argument: str, value: object) -> datetime:
    checked = check_aware(argument, value)
    if checked is None:
        raise InvalidArgumentError(argument, value, "it must be a datetime with a time zone")
    return checked


class _Reason(Exception):
    """A reason a part of schedule_info is refused; parse_schedule adds the whole value."""


# --- The matching engine ----------------------------------------------------------------------


def _next_in(values: tuple[int, ...], value: int) -> int | None:
    """The smallest of the sorted ``values`` that is at least ``value``."""
    i = bisect_left(values, value)
    return values[i] if i < len(values) else None


@dataclass(frozen=True)
class _Pattern:
    """Sets of allowed values per field, matched against local wall-clock readings."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]  # days of the month, 1-31
    months: tuple[int, ...]  # 1-12
    weekdays: frozenset[int]  # 0-6, 0 = Sunday
    years: tuple[int, ...] | None  # None: any year
    either_day: bool  # cron: both day fields restricted, so a day matching either fires

    @property
    def names_hours(self) -> bool:
        """Whether the rule names its hours, which decides its daylight saving behaviour."""
        return len(self.hours) < 24

    def _day_fits(self, day: int, weekday: int) -> bool:
        in_days = day in self.days
        on_weekday = weekday in self.weekdays
        return (in_days or on_weekday) if self.either_day else (in_days and on_weekday)

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        """The first matching day of ``month`` from ``day`` on."""
        first_weekday, last = monthrange(year, month)
        if len(self.weekdays) == 7:
            found = _next_in(self.days, day)
            return found if found is not None and found <= last else None
        if day > last:
            return None
        # calendar.monthrange gives the 1st's weekday with Monday = 0; here Sunday = 0.
        weekday = (first_weekday + day) % 7
        for d in range(day, last + 1):
            if self._day_fits(d, weekday):
                return d
            weekday = (weekday + 1) % 7
        return None

    def last_year(self, start_year: int) -> int | None:
        """The last year a search from ``start_year`` looks at (SEARCH_YEARS allowed years)."""
        if self.years is None:
            return min(start_year + SEARCH_YEARS - 1, _MAX_YEAR)
        i = bisect_left(self.years, start_year)
        if i == len(self.years):
            return None
        return self.years[min(i + SEARCH_YEARS, len(self.years)) - 1]

    def next_reading(self, start: datetime, last_year: int) -> datetime | None:
        """The first matching wall-clock reading at or after ``start`` (naive, whole second),
        in a year up to ``last_year``; a field that overflows resets the smaller ones."""
        y, mo, d = start.year, start.month, start.day
        h, mi, s = start.hour, start.minute, start.second
        while True:
            if self.years is not None:
                found = _next_in(self.years, y)
                if found is None:
                    return None
                if found != y:
                    y, mo, d, h, mi, s = found, 1, 1, 0, 0, 0
            if y > last_year:
                return None
            found = _next_in(self.months, mo)
            if found is None:
                y, mo, d, h, mi, s = y + 1, 1, 1, 0, 0, 0
                continue
            if found != mo:
                mo, d, h, mi, s = found, 1, 0, 0, 0
            found = self._next_day(y, mo, d)
            if found is None:
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                continue
            if found != d:
                d, h, mi, s = found, 0, 0, 0
            found = _next_in(self.hours, h)
            if found is None:
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            if found != h:
                h, mi, s = found, 0, 0
            found = _next_in(self.minutes, mi)
            if found is None:
                h, mi, s = h + 1, 0, 0
                continue
            if found != mi:
                mi, s = found, 0
            found = _next_in(self.seconds, s)
            if found is None:
                mi, s = mi + 1, 0
                continue
            return datetime(y, mo, d, h, mi, found)


def _offset_change(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] with ``after``'s UTC offset: the transition
    between two instants (whole seconds) whose offsets differ. Offsets change on whole
    seconds, so a binary search over seconds finds it in about 17 steps for a day."""
    target = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _first_instant(reading: datetime, tz: ZoneInfo) -> tuple[datetime, bool]:
    """The instant a wall-clock reading first shows, and whether it exists at all.

    A repeated reading gives its first occurrence; a reading inside a spring-forward gap
    gives the first instant after the gap (and ``False``).
    """
    instant = reading.replace(tzinfo=tz).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == reading:
        return instant, True
    # In a gap, fold=1 reads the reading with the offset after the transition (an instant
    # before it) and fold=0 with the offset before (an instant after it).
    return _offset_change(tz, reading.replace(tzinfo=tz, fold=1).astimezone(UTC), instant), False


def _next_recurring(pattern: _Pattern, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire of ``pattern`` in ``tz`` strictly after the instant ``after``."""
    local = after.astimezone(tz)
    reading = local.replace(tzinfo=None, microsecond=0)
    last_year = pattern.last_year(reading.year)
    if last_year is None:
        return None
    primary_start = reading + _ONE_SECOND  # readings are whole seconds: "> after"
    secondary: datetime | None = None  # a fire in the second pass of a repeated hour
    first_offset = reading.replace(tzinfo=tz, fold=0).utcoffset()
    second_offset = reading.replace(tzinfo=tz, fold=1).utcoffset()
    if first_offset is not None and second_offset is not None and first_offset != second_offset:
        # ``after`` is inside a repeated stretch of readings [fold_start, fold_end).
        repeat = first_offset - second_offset
        first_pass = reading.replace(tzinfo=tz, fold=0).astimezone(UTC)
        transition = _offset_change(tz, first_pass, first_pass + repeat)
        fold_start = transition.astimezone(tz).replace(tzinfo=None)
        fold_end = fold_start + repeat
        if local.fold:
            # Second pass: first passes of the remaining readings are over.
            secondary_start, primary_start = primary_start, fold_end
        else:
            secondary_start = fold_start
        if not pattern.names_hours:
            # Interval rules fire again in the second pass; time-of-day rules do not.
            found = pattern.next_reading(secondary_start, last_year)
            if found is not None and found < fold_end:
                secondary = found.replace(tzinfo=tz, fold=1).astimezone(UTC)
    primary = _next_primary(pattern, tz, primary_start, last_year)
    if primary is None or (secondary is not None and secondary < primary):
        return secondary
    return primary


def _next_primary(
    pattern: _Pattern, tz: ZoneInfo, start: datetime, last_year: int
) -> datetime | None:
    """The first-occurrence fire of the first matching reading from ``start`` on.

    The first occurrence of readings never decreases as readings increase, so the first
    matching reading gives the earliest fire; a reading in a gap fires at the gap's end
    for a time-of-day rule and not at all for an interval rule (the search resumes after
    the gap; ``start`` grows each time and the year bound ends the loop).
    """
    while True:
        found = pattern.next_reading(start, last_year)
        if found is None:
            return None
        instant, exists = _first_instant(found, tz)
        if exists or pattern.names_hours:
            return instant
        start = instant.astimezone(tz).replace(tzinfo=None)


# --- Schedules --------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Schedule:
    """A parsed ``schedule_info``: when a scheduled job fires. Immutable; build it with
    :func:`parse_schedule`.

    ``kind`` is ``"cron"``, ``"rule"`` (a recurrence-rule object) or ``"once"``; ``start``
    and ``end`` bound a window (aware, UTC, or ``None``); ``at`` is a one-shot's time (UTC).
    """

    tz: ZoneInfo
    kind: Literal["cron", "rule", "once"]
    text: str  # the cron string, the rule as JSON, or the one-shot time in ISO 8601
    start: datetime | None = None
    end: datetime | None = None
    at: datetime | None = None
    _pattern: _Pattern | None = field(default=None, compare=False)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (an aware datetime, any zone), aware
        in UTC; ``None`` when the schedule never fires again (a one-shot in the past, a
        window that is over, or nothing within :data:`SEARCH_YEARS`)."""
        after = _aware("after", after)
        try:
            if self.at is not None:
                return self.at if self.at > after else None
            if self._pattern is None:  # pragma: no cover - parse_schedule sets one of the two
                return None
            if self.end is not None and after >= self.end:
                return None
            if self.start is not None and self.start > after:
                # A fire exactly at the start belongs to the window (fires are whole seconds).
                after = self.start - timedelta(microseconds=1)
            fire = _next_recurring(self._pattern, self.tz, after)
        except OverflowError:  # the search ran into year 9999
            return None
        if fire is None or (self.end is not None and fire > self.end):
            return None
        return fire

    def describe(self, *, now: datetime | None = None) -> str:
        """Short text for logs and listings, e.g. ``cron '0 2 * * *' in Europe/Paris``.

        A one-shot in the past or a window that is over says so (relative to ``now``,
        default the current time).
        """
        now = datetime.now(UTC) if now is None else _aware("now", now)
        zone = self.tz.key
        if self.kind == "once":
            past = (
                " (in the past: it will not fire)" if self.at is not None and self.at <= now else ""
            )
            return f"once at {self.text} in {zone}{past}"
        text = f"cron {self.text!r}" if self.kind == "cron" else f"rule {self.text}"
        text += f" in {zone}"
        if self.start is not None:
            text += f" from {self.start.astimezone(self.tz).isoformat()}"
        if self.end is not None:
            text += f" until {self.end.astimezone(self.tz).isoformat()}"
            if self.end <= now:
                text += " (window over: it will not fire)"
        return text

    def __repr__(self) -> str:
        return f"<Schedule {self.describe()}>"


def parse_schedule(schedule_info: Any, *, now: datetime | None = None) -> Schedule:
    """Validate ``schedule_info`` (a parsed JSON value) and return its :class:`Schedule`.

    Raises :class:`InvalidScheduleError` for anything that is not one of the forms in the
    module documentation, and for a rule that does not fire within :data:`SEARCH_YEARS`
    after ``now`` (default the current time; it is used for that check only). A one-shot
    time in the past and a window that is over are accepted: they are well formed, they
    just never fire again.
    """
    now = datetime.now(UTC) if now is None else _aware("now", now)
    try:
        schedule = _parse(schedule_info)
        pattern = schedule._pattern
        if pattern is not None and _next_recurring(pattern, schedule.tz, now) is None:
            raise _Reason(_never_reason(pattern, schedule.tz, now))
    except _Reason as exc:
        raise InvalidScheduleError(schedule_info, str(exc)) from None
    return schedule


def _never_reason(pattern: _Pattern, tz: ZoneInfo, now: datetime) -> str:
    year = now.astimezone(tz).year
    if pattern.years is not None and pattern.years[-1] < year:
        shown = ", ".join(str(y) for y in pattern.years)
        return f"it never fires: its years ({shown}) are all before {year}"
    return (
        f"it never fires: no date within {SEARCH_YEARS} years matches all its fields "
        "(like February 31, or the 31st of a month of 30 days)"
    )


_WINDOW_KEYS: Final = frozenset({"start", "end", "rule", "tz"})


def _parse(value: Any) -> Schedule:
    if value is None or isinstance(value, bool):
        raise _Reason(
            f"{json.dumps(value)} is not a schedule: use a cron string, an ISO 8601 time, "
            "milliseconds since 1970, or an object (a recurrence rule or a window)"
        )
    if isinstance(value, str):
        return _parse_text(value, _UTC)
    if isinstance(value, int | float):
        at = _instant(value, _UTC, "the time")
        return Schedule(tz=_UTC, kind="once", text=at.isoformat(), at=at)
    if not isinstance(value, dict):
        raise _Reason(
            f"a {type(value).__name__} is not a schedule: use a cron string, an ISO 8601 "
            "time, milliseconds since 1970, or an object (a recurrence rule or a window)"
        )
    tz = _zone(value.get("tz"))
    if "rule" not in value:
        pattern, text = _parse_rule(value, where="")
        return Schedule(tz=tz, kind="rule", text=text, _pattern=pattern)

    unknown = sorted(str(k) for k in value if k not in _WINDOW_KEYS)
    if unknown:
        raise _Reason(
            f"unknown key(s) {', '.join(map(repr, unknown))} in a window: a window has "
            '"rule", and optionally "start", "end" and "tz"'
        )
    start = None if value.get("start") is None else _instant(value["start"], tz, "start")
    end = None if value.get("end") is None else _instant(value["end"], tz, "end")
    if start is not None and end is not None and end < start:
        raise _Reason(f"end {value['end']!r} is before start {value['start']!r}")
    rule = value["rule"]
    if isinstance(rule, str) and rule.strip():
        text = rule.strip()
        pattern = _parse_cron(text)
        return Schedule(tz=tz, kind="cron", text=text, start=start, end=end, _pattern=pattern)
    if isinstance(rule, dict):
        if "rule" in rule or "tz" in rule:
            raise _Reason(
                f"a window's rule {_show(rule)} cannot hold "
                f"{'rule' if 'rule' in rule else 'tz'!r}: give tz on the window itself"
            )
        pattern, text = _parse_rule(rule, where="window's ")
        return Schedule(tz=tz, kind="rule", text=text, start=start, end=end, _pattern=pattern)
    raise _Reason(
        f"rule {_show(rule)} is not allowed: a window's rule is a cron string or a "
        "recurrence-rule object"
    )


def _zone(name: object) -> ZoneInfo:
    if name is None:
        return _UTC
    allowed = "tz must be an IANA time zone name such as 'Europe/Paris' or 'UTC'"
    # "localtime" names the host's zone in some tz databases: the very thing tz avoids.
    if not isinstance(name, str) or not name or name.lower() == "localtime":
        raise _Reason(f"tz {_show(name)} is not allowed: {allowed}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _Reason(f"tz {name!r} is not a known time zone: {allowed}") from None


def _instant(value: object, tz: ZoneInfo, what: str) -> datetime:
    """An ISO 8601 string (naive: in ``tz``) or epoch milliseconds, as an aware UTC time."""
    allowed = (
        "it must be an ISO 8601 time (e.g. '2026-05-01T02:00:00Z'; without an offset it "
        "is read in the schedule's tz) or a number of milliseconds since 1970"
    )
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Reason(f"{what} {_show(value)} is not allowed: {allowed}")
    if isinstance(value, str):
        try:
            return _to_utc(datetime.fromisoformat(value.strip()), tz)
        except (ValueError, OverflowError):
            raise _Reason(f"{what} {value!r} is not allowed: {allowed}") from None
    try:
        if isinstance(value, float) and not math.isfinite(value):
            raise OverflowError
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        raise _Reason(f"{what} {value!r} is out of range: {allowed}") from None


def _to_utc(parsed: datetime, tz: ZoneInfo) -> datetime:
    """An ISO 8601 time as an aware UTC time; a naive one is a reading in ``tz`` (a reading
    skipped by a spring-forward gap means the gap's end, a repeated one its first pass)."""
    return _first_instant(parsed, tz)[0] if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_text(value: str, tz: ZoneInfo) -> Schedule:
    text = value.strip()
    if not text:
        raise _Reason("an empty string is not a schedule: use a cron string or an ISO 8601 time")
    if text.startswith("@") or len(text.split()) in (5, 6):
        return Schedule(tz=tz, kind="cron", text=text, _pattern=_parse_cron(text))
    try:
        at = _to_utc(datetime.fromisoformat(text), tz)
    except (ValueError, OverflowError):
        raise _Reason(
            f"{value!r} is neither a cron expression (5 fields, or 6 with leading seconds, "
            "e.g. '0 2 * * *') nor an ISO 8601 time (e.g. '2026-05-01T02:00:00Z')"
        ) from None
    return Schedule(tz=tz, kind="once", text=at.astimezone(tz).isoformat(), at=at)


# --- Cron strings -----------------------------------------------------------------------------

_MONTH_NAMES: Final = {
    name: i + 1
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAY_NAMES: Final = {
    name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ITEM: Final = re.compile(
    r"(?:(?P<all>[*?])|(?P<low>[0-9]+|[a-z]+)(?:-(?P<high>[0-9]+|[a-z]+))?)(?:/(?P<step>[0-9]+))?",
    re.ASCII | re.IGNORECASE,
)


@dataclass(frozen=True)
class _CronField:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    question_mark: bool = False  # "?" is allowed (the day fields, as in cron-parser)

    def value(self, token: str) -> int:
        if token.isdigit():
            number = int(token)
        elif self.names is not None and token.lower() in self.names:
            number = self.names[token.lower()]
        else:
            names = f" or a name ({', '.join(self.names)})" if self.names else ""
            raise _Reason(
                f"{self.name} value {token!r} is not a number{names}{_extension_hint(token)}"
            )
        if not self.low <= number <= self.high:
            raise _Reason(
                f"{self.name} value {token!r} is out of range: it must be {self.low}-{self.high}"
            )
        return number

    def parse(self, text: str) -> set[int]:
        values: set[int] = set()
        for item in text.split(","):
            match = _ITEM.fullmatch(item)
            if match is None or (match["all"] == "?" and not self.question_mark):
                hint = _extension_hint(item)
                raise _Reason(
                    f"{self.name} field {item!r} is not valid{hint}: use *, a value "
                    f"{self.low}-{self.high}, a range a-b, a step */n or a-b/n, or a list "
                    "of those separated by commas"
                )
            step = 1 if match["step"] is None else int(match["step"])
            if step == 0:
                raise _Reason(f"{self.name} field {item!r} has a step of 0")
            if match["all"]:
                low, high = self.low, self.high
            else:
                low = self.value(match["low"])
                if match["high"] is not None:
                    high = self.value(match["high"])
                elif match["step"] is not None:
                    high = self.high  # "5/15" is "5-59/15", as in cron-parser and Vixie cron
                else:
                    high = low
                if high < low:
                    raise _Reason(f"{self.name} range {item!r} goes backwards: write it low-high")
            values.update(range(low, high + 1, step))
        return values


def _extension_hint(text: str) -> str:
    """A note for the cron extensions of other implementations (Quartz, cron-parser,
    croniter) that this parser refuses rather than guess at."""
    if re.search(r"#|^(L|LW|H)$|^[0-9]+[LW]$|^H[(/]", text, re.IGNORECASE):
        return " (the L, W, # and H cron extensions are not supported)"
    return ""


_SECOND = _CronField("second", 0, 59)
_CRON_FIELDS: Final = (
    _CronField("minute", 0, 59),
    _CronField("hour", 0, 23),
    _CronField("day-of-month", 1, 31, question_mark=True),
    _CronField("month", 1, 12, _MONTH_NAMES),
    _CronField("day-of-week", 0, 7, _DAY_NAMES, question_mark=True),
)


def _parse_cron(text: str) -> _Pattern:
    expanded = _ALIASES.get(text.lower(), text) if text.startswith("@") else text
    if expanded.startswith("@"):
        raise _Reason(f"cron alias {text!r} is not known: use one of {', '.join(_ALIASES)}")
    parts = expanded.split()
    if len(parts) not in (5, 6):
        raise _Reason(
            f"cron expression {text!r} has {len(parts)} fields: it must have 5 (minute hour "
            "day-of-month month day-of-week) or 6 (with a leading second)"
        )
    seconds = _SECOND.parse(parts.pop(0)) if len(parts) == 6 else {0}
    minutes, hours, days, months, weekdays = (
        spec.parse(part) for spec, part in zip(_CRON_FIELDS, parts, strict=True)
    )
    weekdays = {d % 7 for d in weekdays}  # 7 is Sunday too
    return _Pattern(
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=tuple(sorted(days)),
        months=tuple(sorted(months)),
        weekdays=frozenset(weekdays),
        years=None,
        either_day=len(days) < 31 and len(weekdays) < 7,
    )


# --- Recurrence-rule objects ------------------------------------------------------------------

# name: (low, high, what a value means); the order is the one descriptions use.
_RULE_FIELDS: Final = {
    "year": (_MIN_YEAR, _MAX_YEAR, "a year"),
    "month": (0, 11, "a month counted from 0 = January, as in JavaScript"),
    "date": (1, 31, "a day of the month"),
    "dayOfWeek": (0, 6, "a day of the week, 0 = Sunday"),
    "hour": (0, 23, "an hour"),
    "minute": (0, 59, "a minute"),
    "second": (0, 59, "a second"),
}


def _parse_rule(rule: dict[Any, Any], *, where: str) -> tuple[_Pattern, str]:
    """A recurrence-rule object's pattern and its canonical JSON text (tz left out)."""
    unknown = sorted(str(k) for k in rule if k not in _RULE_FIELDS and k != "tz")
    if unknown:
        hint = ""
        if {"start", "end"} & set(unknown):
            hint = ' (start and end make a window, which needs a "rule")'
        raise _Reason(
            f"unknown key(s) {', '.join(map(repr, unknown))} in a {where}recurrence rule"
            f"{hint}: its keys are {', '.join(_RULE_FIELDS)} and tz"
        )
    values: dict[str, tuple[int, ...] | None] = {
        name: _rule_values(name, rule[name]) if name in rule else None for name in _RULE_FIELDS
    }
    seconds = values["second"] if "second" in rule else (0,)
    months = values["month"]

    def every(name: str) -> tuple[int, ...]:
        low, high, _ = _RULE_FIELDS[name]
        return tuple(range(low, high + 1))

    pattern = _Pattern(
        seconds=seconds or every("second"),
        minutes=values["minute"] or every("minute"),
        hours=values["hour"] or every("hour"),
        days=values["date"] or every("date"),
        months=tuple(m + 1 for m in months) if months else tuple(range(1, 13)),
        weekdays=frozenset(values["dayOfWeek"] or every("dayOfWeek")),
        years=values["year"],
        either_day=False,
    )
    shown = {name: rule[name] for name in _RULE_FIELDS if name in rule}
    return pattern, json.dumps(shown, ensure_ascii=False)


def _rule_values(name: str, value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    low, high, meaning = _RULE_FIELDS[name]
    allowed = (
        f"{name} must be {meaning} from {low} to {high} (a number or a numeric string), "
        "a list of those, or null for any"
    )
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _Reason(f"{name} [] matches nothing: {allowed}")
    numbers: set[int] = set()
    for item in items:
        number: int | None = None
        if isinstance(item, int) and not isinstance(item, bool):
            number = item
        elif isinstance(item, float) and item.is_integer():
            number = int(item)
        elif isinstance(item, str) and item.strip().isascii() and item.strip().isdigit():
            number = int(item.strip())
        if number is None:
            raise _Reason(f"{name} {_show(item)} is not allowed: {allowed}")
        if not low <= number <= high:
            raise _Reason(f"{name} {_show(item)} is out of range: {allowed}")
        numbers.add(number)
    return tuple(sorted(numbers))
