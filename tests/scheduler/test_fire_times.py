"""schedule_info parsing and fire times (sqla_pgjobs.schedules): no database.

The daylight-saving tests compare the engine with a brute-force oracle that walks every
real minute (or second) and applies the documented rules directly.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from sqla_pgjobs.errors import InvalidArgumentError, PgJobsError
from sqla_pgjobs.schedules import (
    SEARCH_YEARS,
    InvalidScheduleError,
    Schedule,
    parse_schedule,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # shifts by 30 minutes
SYDNEY = ZoneInfo("Australia/Sydney")  # southern hemisphere: falls back in April
# The "now" of the parse-time checks, so that the tests do not age.
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# 2026 transitions (local readings): Paris 03-29 02:00 -> 03:00 and 10-25 03:00 -> 02:00;
# New York 03-08 02:00 -> 03:00 and 11-01 02:00 -> 01:00.
PARIS_SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
PARIS_FALL = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
NEW_YORK_SPRING = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
NEW_YORK_FALL = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def parse(info: Any) -> Schedule:
    return parse_schedule(info, now=NOW)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    """The UTC instant of a local reading (``fold=1``: its second occurrence)."""
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).astimezone(UTC)


def fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(count):
        following = schedule.next_fire(after)
        if following is None:
            break
        out.append(following)
        after = following
    return out


def fires_until(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    while True:
        following = schedule.next_fire(after)
        if following is None or following > until:
            return
        yield following
        after = following


# --- The forms and the reference examples (reference-semantics §7.5) --------------------------


def test_empty_object_is_every_minute_at_second_0() -> None:
    assert fires(parse({}), utc(2026, 5, 1, 10, 0, 30), 3) == [
        utc(2026, 5, 1, 10, 1),
        utc(2026, 5, 1, 10, 2),
        utc(2026, 5, 1, 10, 3),
    ]


def test_hour_and_minute_lists_are_daily() -> None:
    schedule = parse({"hour": [2], "minute": [0]})
    assert fires(schedule, utc(2026, 5, 1, 2, 0), 3) == [
        utc(2026, 5, 2, 2),
        utc(2026, 5, 3, 2),
        utc(2026, 5, 4, 2),
    ]


def test_hour_alone_is_every_minute_of_that_hour() -> None:
    schedule = parse({"hour": 2})
    got = fires(schedule, utc(2026, 5, 1, 12), 61)
    assert got[:60] == [utc(2026, 5, 2, 2, minute) for minute in range(60)]
    assert got[60] == utc(2026, 5, 3, 2, 0)


def test_minute_alone_is_hourly() -> None:
    assert fires(parse({"minute": 30}), utc(2026, 5, 1, 10, 30), 3) == [
        utc(2026, 5, 1, 11, 30),
        utc(2026, 5, 1, 12, 30),
        utc(2026, 5, 1, 13, 30),
    ]


def test_reference_fixture_every_quarter_hour_sunday_to_friday() -> None:
    schedule = parse(
        {"hour": list(range(23)), "minute": [0, 15, 30, 45], "dayOfWeek": [0, 1, 2, 3, 4, 5]}
    )
    # 2026-05-01 is a Friday: after 22:45 comes Sunday 00:00 (Saturday is skipped).
    assert fires(schedule, utc(2026, 5, 1, 22, 20), 3) == [
        utc(2026, 5, 1, 22, 30),
        utc(2026, 5, 1, 22, 45),
        utc(2026, 5, 3, 0, 0),
    ]
    sunday = list(fires_until(schedule, utc(2026, 5, 2, 23, 59), utc(2026, 5, 3, 23, 59)))
    assert len(sunday) == 23 * 4


def test_reference_window_example_fires_about_three_times() -> None:
    now = utc(2026, 5, 1, 10, 0, 0)
    start = now + timedelta(seconds=10)
    schedule = parse(
        {
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=3)).isoformat(),
            "rule": "*/1 * * * *",
        }
    )
    assert fires(schedule, now, 10) == [
        utc(2026, 5, 1, 10, 1),
        utc(2026, 5, 1, 10, 2),
        utc(2026, 5, 1, 10, 3),
    ]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 2 * * *", utc(2026, 5, 1, 2), [utc(2026, 5, 2, 2), utc(2026, 5, 3, 2)]),
        # Six fields: a leading seconds field.
        (
            "30 5 * * * *",
            utc(2026, 5, 1, 10),
            [utc(2026, 5, 1, 10, 5, 30), utc(2026, 5, 1, 11, 5, 30)],
        ),
        (
            "*/20 * * * * *",
            utc(2026, 5, 1, 10),
            [utc(2026, 5, 1, 10, 0, 20), utc(2026, 5, 1, 10, 0, 40)],
        ),
        (
            "5/20 * * * *",
            utc(2026, 5, 1, 10),
            [utc(2026, 5, 1, 10, 5), utc(2026, 5, 1, 10, 25), utc(2026, 5, 1, 10, 45)],
        ),
        (
            "10-20/5 8 * * *",
            utc(2026, 5, 1, 10),
            [utc(2026, 5, 2, 8, 10), utc(2026, 5, 2, 8, 15), utc(2026, 5, 2, 8, 20)],
        ),
        ("0 9,17 * * *", utc(2026, 5, 1, 10), [utc(2026, 5, 1, 17), utc(2026, 5, 2, 9)]),
        (
            "0 0 */10 5 *",
            utc(2026, 5, 1),
            [utc(2026, 5, 11), utc(2026, 5, 21), utc(2026, 5, 31), utc(2027, 5, 1)],
        ),
        # Day-of-week 0 and 7 are Sunday; names in either case; 2026-05-03 is a Sunday.
        ("0 0 * * 7", utc(2026, 5, 1), [utc(2026, 5, 3), utc(2026, 5, 10)]),
        ("0 0 * * 0", utc(2026, 5, 1), [utc(2026, 5, 3), utc(2026, 5, 10)]),
        ("0 0 * * SUN", utc(2026, 5, 1), [utc(2026, 5, 3), utc(2026, 5, 10)]),
        (
            "0 0 1 jan-mar,Jul *",
            utc(2026, 5, 1),
            [utc(2026, 7, 1), utc(2027, 1, 1), utc(2027, 2, 1)],
        ),
        ("0 12 * * mon-fri", utc(2026, 5, 1, 13), [utc(2026, 5, 4, 12), utc(2026, 5, 5, 12)]),
        # Both day fields restricted: either matches (the 13th, or any Friday).
        ("0 0 13 * 5", utc(2026, 5, 1), [utc(2026, 5, 8), utc(2026, 5, 13), utc(2026, 5, 15)]),
        # One restricted: only it counts. A field listing every value is unrestricted.
        ("0 0 13 * *", utc(2026, 5, 1), [utc(2026, 5, 13), utc(2026, 6, 13)]),
        ("0 0 1-31 * 1", utc(2026, 5, 1), [utc(2026, 5, 4), utc(2026, 5, 11)]),
        ("0 0 ? * 1", utc(2026, 5, 1), [utc(2026, 5, 4), utc(2026, 5, 11)]),
        ("@daily", utc(2026, 5, 1, 1), [utc(2026, 5, 2), utc(2026, 5, 3)]),
        ("@hourly", utc(2026, 5, 1, 1, 1), [utc(2026, 5, 1, 2), utc(2026, 5, 1, 3)]),
        ("@weekly", utc(2026, 5, 1), [utc(2026, 5, 3), utc(2026, 5, 10)]),
        ("@monthly", utc(2026, 5, 1), [utc(2026, 6, 1), utc(2026, 7, 1)]),
        ("@yearly", utc(2026, 5, 1), [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("  0   2 * *\t*  ", utc(2026, 5, 1, 2), [utc(2026, 5, 2, 2)]),
    ],
)
def test_cron(expression: str, after: datetime, expected: list[datetime]) -> None:
    schedule = parse(expression)
    assert schedule.kind == "cron"
    assert fires(schedule, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("rule", "after", "expected"),
    [
        # Months count from 0 = January, as in JavaScript.
        ({"month": 0, "date": 1, "hour": 0, "minute": 0}, utc(2026, 5, 1), [utc(2027, 1, 1)]),
        (
            {"month": 11, "date": 25, "hour": 8, "minute": 0},
            utc(2026, 5, 1),
            [utc(2026, 12, 25, 8)],
        ),
        # Numeric strings, lists, integral floats.
        (
            {"hour": "2", "minute": ["0", 30]},
            utc(2026, 5, 1, 3),
            [utc(2026, 5, 2, 2), utc(2026, 5, 2, 2, 30)],
        ),
        ({"hour": 2.0, "minute": 0}, utc(2026, 5, 1, 3), [utc(2026, 5, 2, 2)]),
        # date AND dayOfWeek: Friday the 13th only.
        (
            {"date": 13, "dayOfWeek": 5, "hour": 0, "minute": 0},
            utc(2026, 1, 1),
            [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13), utc(2027, 8, 13)],
        ),
        # Years: fires in the listed years only, then never.
        (
            {"year": [2029, "2027"], "month": 0, "date": 1, "hour": 0, "minute": 0},
            utc(2026, 5, 1),
            [utc(2027, 1, 1), utc(2029, 1, 1)],
        ),
        # second: 0 when missing, as listed when given, any when null.
        ({"hour": 3, "minute": 4}, utc(2026, 5, 1), [utc(2026, 5, 1, 3, 4)]),
        (
            {"minute": 4, "second": [10, 50]},
            utc(2026, 5, 1),
            [utc(2026, 5, 1, 0, 4, 10), utc(2026, 5, 1, 0, 4, 50)],
        ),
        ({"second": None}, utc(2026, 5, 1), [utc(2026, 5, 1, 0, 0, 1), utc(2026, 5, 1, 0, 0, 2)]),
        # null is "any" for every field.
        (
            {"hour": None, "minute": 15},
            utc(2026, 5, 1),
            [utc(2026, 5, 1, 0, 15), utc(2026, 5, 1, 1, 15)],
        ),
    ],
)
def test_recurrence_rule(rule: dict[str, Any], after: datetime, expected: list[datetime]) -> None:
    schedule = parse(rule)
    assert schedule.kind == "rule"
    assert fires(schedule, after, len(expected) + 1)[: len(expected)] == expected


def test_a_year_list_ends_the_schedule() -> None:
    schedule = parse({"year": 2027, "month": 0, "date": 1, "hour": 0, "minute": 0})
    assert fires(schedule, utc(2026, 5, 1), 5) == [utc(2027, 1, 1)]


def test_a_year_far_ahead_is_accepted() -> None:
    # The horizon counts the years a rule allows, not calendar years.
    schedule = parse({"year": 2100, "month": 0, "date": 1, "hour": 0, "minute": 0})
    assert schedule.next_fire(NOW) == utc(2100, 1, 1)


# --- Time zones -------------------------------------------------------------------------------


def test_default_zone_is_utc_not_the_host_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        schedule = parse("0 2 * * *")
        assert schedule.tz.key == "UTC"
        assert schedule.next_fire(utc(2026, 5, 1)) == utc(2026, 5, 1, 2)
        assert parse({"hour": 2, "minute": 0}).tz.key == "UTC"
        assert parse("2026-06-01T10:00:00").at == utc(2026, 6, 1, 10)
        assert parse({"tz": None}).tz.key == "UTC"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_tz_applies_to_rules_cron_and_windows() -> None:
    rule = parse({"tz": "Europe/Paris", "hour": 2, "minute": 0})
    assert rule.tz == PARIS
    assert rule.next_fire(utc(2026, 5, 31, 12)) == utc(2026, 6, 1, 0)  # 02:00 CEST
    window = parse({"tz": "America/New_York", "rule": "0 2 * * *"})
    assert window.next_fire(utc(2026, 6, 1)) == utc(2026, 6, 1, 6)  # 02:00 EDT
    assert window.next_fire(utc(2026, 12, 1)) == utc(2026, 12, 1, 7)  # 02:00 EST


def test_after_may_be_in_any_zone_and_fires_are_utc() -> None:
    schedule = parse({"tz": "Europe/Paris", "rule": "*/5 * * * *"})
    tokyo = datetime(2026, 6, 1, 9, 2, tzinfo=ZoneInfo("Asia/Tokyo"))
    following = schedule.next_fire(tokyo)
    assert following == utc(2026, 6, 1, 0, 5)
    assert following is not None and following.tzinfo is UTC
    assert schedule.next_fire(tokyo.astimezone(UTC)) == following


def test_after_must_be_aware() -> None:
    with pytest.raises(InvalidArgumentError, match="after"):
        parse("* * * * *").next_fire(datetime(2026, 6, 1))


# --- Daylight saving --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "reading", "day_before", "expected"),
    [
        # 02:30 does not exist on the spring-forward day: it fires at the gap's end.
        (
            "Europe/Paris",
            "30 2 * * *",
            utc(2026, 3, 28, 12),
            [local(PARIS, 2026, 3, 29, 3), local(PARIS, 2026, 3, 30, 2, 30)],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            utc(2026, 3, 7, 12),
            [local(NEW_YORK, 2026, 3, 8, 3), local(NEW_YORK, 2026, 3, 9, 2, 30)],
        ),
        # A repeated reading fires once, at its first occurrence.
        (
            "Europe/Paris",
            "30 2 * * *",
            utc(2026, 10, 24, 12),
            [local(PARIS, 2026, 10, 25, 2, 30), local(PARIS, 2026, 10, 26, 2, 30)],
        ),
        (
            "America/New_York",
            "30 1 * * *",
            utc(2026, 10, 31, 12),
            [local(NEW_YORK, 2026, 11, 1, 1, 30), local(NEW_YORK, 2026, 11, 2, 1, 30)],
        ),
    ],
)
def test_daily_rule_across_transitions(
    tz: str, reading: str, day_before: datetime, expected: list[datetime]
) -> None:
    assert fires(parse({"tz": tz, "rule": reading}), day_before, 2) == expected


def test_the_spring_forward_example_in_utc() -> None:
    schedule = parse({"tz": "Europe/Paris", "hour": 2, "minute": 30})
    assert schedule.next_fire(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)


def test_every_minute_follows_real_time_through_the_repeated_hour() -> None:
    schedule = parse({"tz": "Europe/Paris", "rule": "* * * * *"})
    got = list(fires_until(schedule, utc(2026, 10, 24, 23, 59), utc(2026, 10, 25, 2, 0)))
    # Every real minute from 00:00 to 02:00 UTC, both passes of 02:xx local included.
    assert got == [utc(2026, 10, 25) + timedelta(minutes=m) for m in range(121)]
    readings = [t.astimezone(PARIS).strftime("%H:%M") for t in got]
    assert readings.count("02:30") == 2


def test_every_minute_skips_nothing_real_across_the_gap() -> None:
    schedule = parse({"tz": "America/New_York", "rule": "* * * * *"})
    got = list(fires_until(schedule, utc(2026, 3, 8, 6, 50), utc(2026, 3, 8, 7, 10)))
    assert got == [utc(2026, 3, 8, 6, 51) + timedelta(minutes=m) for m in range(20)]
    assert [t.astimezone(NEW_YORK).strftime("%H:%M") for t in got][8:11] == [
        "01:59",
        "03:00",
        "03:01",
    ]


@pytest.mark.parametrize("transition", [PARIS_SPRING, PARIS_FALL])
def test_every_second_is_every_real_second(transition: datetime) -> None:
    schedule = parse({"tz": "Europe/Paris", "second": None})
    begin = transition - timedelta(minutes=3)
    got = list(fires_until(schedule, begin, transition + timedelta(minutes=3)))
    assert got == [begin + timedelta(seconds=s) for s in range(1, 361)]


def test_every_second_for_a_whole_day_of_25_hours_is_fast() -> None:
    schedule = parse({"tz": "Europe/Paris", "rule": "* * * * * *"})
    start = local(PARIS, 2026, 10, 25) - timedelta(seconds=1)
    began = time.perf_counter()
    count = sum(
        1 for _ in fires_until(schedule, start, local(PARIS, 2026, 10, 26) - timedelta(seconds=1))
    )
    elapsed = time.perf_counter() - began
    assert count == 25 * 3600
    assert elapsed < 10, f"{elapsed:.1f} s for a day of per-second fires"


def test_a_named_hour_fires_once_on_the_spring_forward_day() -> None:
    schedule = parse({"tz": "Europe/Paris", "hour": 2})
    assert fires(schedule, utc(2026, 3, 28, 12), 2) == [
        local(PARIS, 2026, 3, 29, 3, 0),
        local(PARIS, 2026, 3, 30, 2, 0),
    ]


def test_a_named_hour_fires_in_the_first_pass_only() -> None:
    schedule = parse({"tz": "Europe/Paris", "hour": 2})
    got = list(fires_until(schedule, utc(2026, 10, 24, 12), utc(2026, 10, 25, 23)))
    assert got == [local(PARIS, 2026, 10, 25, 2, m) for m in range(60)]
    # Asked from inside the second pass, the next fire is the next day's.
    inside = local(PARIS, 2026, 10, 25, 2, 10, fold=1)
    assert schedule.next_fire(inside) == local(PARIS, 2026, 10, 26, 2, 0)


def test_an_hourly_rule_follows_real_hours() -> None:
    schedule = parse({"tz": "Europe/Paris", "rule": "30 * * * *"})
    spring = list(fires_until(schedule, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 2, 0)))
    assert spring == [utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]
    fall = list(fires_until(schedule, utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 2, 0)))
    assert fall == [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]
    assert {t.astimezone(PARIS).strftime("%H:%M") for t in fall[1:]} == {"02:30"}


def test_next_fire_from_inside_the_second_pass() -> None:
    schedule = parse({"tz": "America/New_York", "rule": "*/15 * * * *"})
    inside = local(NEW_YORK, 2026, 11, 1, 1, 20, fold=1)
    assert schedule.next_fire(inside) == local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    first_pass = local(NEW_YORK, 2026, 11, 1, 1, 50)
    assert schedule.next_fire(first_pass) == local(NEW_YORK, 2026, 11, 1, 1, 0, fold=1)


def _rule_matches(rule: dict[str, Any], reading: datetime) -> bool:
    """An independent matcher for rules whose fields are lists of numbers."""
    weekday = (reading.weekday() + 1) % 7
    actual = {
        "second": reading.second,
        "minute": reading.minute,
        "hour": reading.hour,
        "date": reading.day,
        "month": reading.month - 1,
        "dayOfWeek": weekday,
    }
    if reading.second != 0 and "second" not in rule:
        return False
    return all(actual[name] in values for name, values in rule.items() if name != "tz")


def _oracle(
    matches: Callable[[datetime], bool],
    names_hours: bool,
    tz: ZoneInfo,
    begin: datetime,
    end: datetime,
    step: int,
) -> list[datetime]:
    """Fires in (begin, end] by walking real instants ``step`` seconds apart.

    Interval rules fire at each real instant whose reading matches. Time-of-day rules
    fire at a matching reading's first occurrence, and once at a gap's end when a
    skipped reading matches.
    """
    expected = []
    instant = begin
    previous = begin.astimezone(tz)
    while instant < end:
        instant += timedelta(seconds=step)
        now_local = instant.astimezone(tz)
        reading = now_local.replace(tzinfo=None)
        fire = matches(reading) and (not names_hours or not now_local.fold)
        jump = reading - previous.replace(tzinfo=None)
        if names_hours and jump > timedelta(seconds=step):
            skipped = previous.replace(tzinfo=None) + timedelta(seconds=step)
            while not fire and skipped < reading:
                fire = matches(skipped)
                skipped += timedelta(seconds=step)
        if fire:
            expected.append(instant)
        previous = now_local
    return expected


ORACLE_RULES = [
    {},
    {"minute": [0, 20, 40]},
    {"minute": [30]},
    {"hour": [2]},
    {"hour": [2], "minute": [30]},
    {"hour": [1, 2, 3], "minute": [0, 45]},
    {"hour": [0], "minute": [0]},
    {"hour": [2, 3], "minute": [0]},
    {"hour": [22, 23, 0, 1, 2, 3, 4], "minute": [15, 59]},
]
TRANSITIONS = [
    (PARIS, PARIS_SPRING),
    (PARIS, PARIS_FALL),
    (NEW_YORK, NEW_YORK_SPRING),
    (NEW_YORK, NEW_YORK_FALL),
    (LORD_HOWE, datetime(2026, 4, 4, 15, 0, tzinfo=UTC)),  # 02:00 -> 01:30
    (LORD_HOWE, datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),  # 02:00 -> 02:30
    (SYDNEY, datetime(2026, 4, 4, 16, 0, tzinfo=UTC)),  # 03:00 -> 02:00
]


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("rule", ORACLE_RULES, ids=lambda r: repr(r))
def test_matches_the_brute_force_oracle_around_transitions(
    rule: dict[str, Any], tz: ZoneInfo, transition: datetime
) -> None:
    schedule = parse({**rule, "tz": tz.key})
    begin, end = transition - timedelta(hours=26), transition + timedelta(hours=26)
    names_hours = "hour" in rule
    expected = _oracle(lambda r: _rule_matches(rule, r), names_hours, tz, begin, end, 60)
    assert list(fires_until(schedule, begin, end)) == expected


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS[:4], ids=lambda v: str(v))
@pytest.mark.parametrize(
    "rule", [{"second": [0, 30]}, {"hour": [1, 2], "second": [15]}], ids=lambda r: repr(r)
)
def test_matches_the_oracle_second_by_second(
    rule: dict[str, Any], tz: ZoneInfo, transition: datetime
) -> None:
    schedule = parse({**rule, "tz": tz.key})
    begin, end = transition - timedelta(minutes=70), transition + timedelta(minutes=70)
    expected = _oracle(lambda r: _rule_matches(rule, r), "hour" in rule, tz, begin, end, 1)
    assert list(fires_until(schedule, begin, end)) == expected


# --- Leap days --------------------------------------------------------------------------------


def test_february_29_cron() -> None:
    assert fires(parse("0 0 29 2 *"), utc(2026, 3, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]


def test_february_29_rule() -> None:
    schedule = parse({"month": 1, "date": 29})
    assert fires(schedule, utc(2026, 3, 1), 2) == [utc(2028, 2, 29, 0, 0), utc(2028, 2, 29, 0, 1)]


def test_february_29_on_a_saturday_is_within_the_horizon() -> None:
    # The longest gap of any satisfiable day pattern: 2076 to 2116 (2100 is not leap).
    schedule = parse({"month": 1, "date": 29, "dayOfWeek": 6, "hour": 0, "minute": 0})
    assert schedule.next_fire(utc(2026, 3, 1)) == utc(2048, 2, 29)
    assert schedule.next_fire(utc(2076, 3, 1)) == utc(2116, 2, 29)
    assert SEARCH_YEARS == 41


# --- Windows ----------------------------------------------------------------------------------


def test_window_start_in_the_future_and_end() -> None:
    schedule = parse(
        {"start": "2026-06-01T00:00:00Z", "end": "2026-06-03T00:00:00Z", "rule": "0 0 * * *"}
    )
    # The start and the end are included.
    assert fires(schedule, utc(2026, 5, 1), 5) == [
        utc(2026, 6, 1),
        utc(2026, 6, 2),
        utc(2026, 6, 3),
    ]
    assert schedule.next_fire(utc(2026, 6, 3)) is None
    assert schedule.next_fire(utc(2027, 1, 1)) is None


def test_window_start_in_the_past_means_from_now() -> None:
    schedule = parse({"start": "2020-01-01T00:00:00Z", "rule": {"minute": 0}})
    assert schedule.next_fire(utc(2026, 6, 1, 10, 30)) == utc(2026, 6, 1, 11)
    assert schedule.end is None


def test_window_bounds_as_milliseconds_and_naive_times_in_tz() -> None:
    start = int(utc(2026, 6, 1, 9, 30).timestamp() * 1000)
    schedule = parse(
        {"tz": "Europe/Paris", "start": start, "end": "2026-06-01T12:00", "rule": "0 * * * *"}
    )
    assert schedule.start == utc(2026, 6, 1, 9, 30)
    assert schedule.end == utc(2026, 6, 1, 10)  # 12:00 CEST
    assert fires(schedule, utc(2026, 5, 1), 5) == [utc(2026, 6, 1, 10)]


def test_window_with_only_a_rule() -> None:
    schedule = parse({"rule": "15 3 * * *", "start": None, "end": None})
    assert schedule.start is None and schedule.end is None
    assert schedule.next_fire(utc(2026, 6, 1)) == utc(2026, 6, 1, 3, 15)


def test_window_over_is_accepted_and_never_fires() -> None:
    schedule = parse({"end": "2020-01-01T00:00:00Z", "rule": "* * * * *"})
    assert schedule.next_fire(NOW) is None
    assert schedule.describe().endswith("(window over: it will not fire)")


# --- One-shot times ---------------------------------------------------------------------------


def test_one_shot_in_the_future() -> None:
    schedule = parse("2026-06-01T10:00:00+02:00")
    assert schedule.kind == "once"
    assert schedule.next_fire(utc(2026, 5, 1)) == utc(2026, 6, 1, 8)
    assert schedule.next_fire(utc(2026, 6, 1, 8)) is None


def test_one_shot_in_the_past() -> None:
    schedule = parse("2020-01-01T00:00:00Z")
    assert schedule.next_fire(NOW) is None
    assert (
        schedule.describe()
        == "once at 2020-01-01T00:00:00+00:00 in UTC (in the past: it will not fire)"
    )


def test_one_shot_future_describe() -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    assert "past" not in parse(at.isoformat()).describe()


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ("2026-06-01T10:00:00Z", utc(2026, 6, 1, 10)),
        ("2026-06-01T10:00:00.250Z", utc(2026, 6, 1, 10) + timedelta(milliseconds=250)),
        ("2026-06-01", utc(2026, 6, 1)),
        (1780308000000, utc(2026, 6, 1, 10)),
        (1780308000000.5, utc(2026, 6, 1, 10) + timedelta(microseconds=500)),
        (-1000, utc(1969, 12, 31, 23, 59, 59)),
    ],
)
def test_one_shot_forms(info: Any, expected: datetime) -> None:
    assert parse(info).at == expected


def test_one_shot_naive_in_the_schedule_zone() -> None:
    # A top-level string has no tz; a naive time in a window is read in its tz.
    schedule = parse({"tz": "Europe/Paris", "start": "2026-06-01T10:00", "rule": "* * * * *"})
    assert schedule.start == utc(2026, 6, 1, 8)
    assert parse("2026-06-01T10:00").at == utc(2026, 6, 1, 10)


def test_naive_times_in_a_gap_or_a_repeat() -> None:
    gap = parse({"tz": "Europe/Paris", "start": "2026-03-29T02:30", "rule": "* * * * *"})
    assert gap.start == utc(2026, 3, 29, 1, 0)  # the gap's end, 03:00 CEST
    repeat = parse({"tz": "Europe/Paris", "start": "2026-10-25T02:30", "rule": "* * * * *"})
    assert repeat.start == utc(2026, 10, 25, 0, 30)  # the first 02:30


# --- Impossible rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "info",
    [
        {"month": [1], "date": [31]},  # February 31
        {"month": 1, "date": 30},
        {"date": 31, "month": [3, 5, 8, 10]},  # the 31st of April, June, September, November
        {"year": [2020, 2021]},  # all in the past
        {"year": 2027, "month": 1, "date": 29},  # 2027 is not a leap year
        "0 0 30 2 *",
        "0 0 31 4,6,9,11 *",
        "0 0 0 31 2 *",
        {"rule": "0 0 31 2 *", "end": "2030-01-01T00:00:00Z"},
        {"rule": {"month": 3, "date": 31}},
    ],
    ids=repr,
)
def test_impossible_rules_are_refused_quickly(info: Any) -> None:
    began = time.perf_counter()
    with pytest.raises(InvalidScheduleError, match="never fires") as caught:
        parse(info)
    assert time.perf_counter() - began < 1
    assert caught.value.schedule_info == info


def test_past_years_message() -> None:
    with pytest.raises(InvalidScheduleError, match=r"its years \(2020, 2021\) are all before 2026"):
        parse({"year": [2021, 2020]})


def test_next_fire_is_bounded() -> None:
    schedule = parse({"year": 2030, "month": 0, "date": 1, "hour": 0, "minute": 0})
    assert schedule.next_fire(utc(2031, 1, 1)) is None
    assert parse("* * * * *").next_fire(datetime.max.replace(tzinfo=UTC)) is None
    assert parse("* * * * * *").next_fire(utc(9999, 12, 31, 23, 59, 58)) == utc(
        9999, 12, 31, 23, 59, 59
    )
    assert parse({"tz": "America/New_York"}).next_fire(utc(9999, 12, 31, 23, 59)) is None


# --- Invalid values ---------------------------------------------------------------------------

INVALID: list[tuple[Any, str]] = [
    (None, "null is not a schedule"),
    (True, "true is not a schedule"),
    (False, "false is not a schedule"),
    ("", "empty string"),
    ("   ", "empty string"),
    ([], "a list is not a schedule"),
    (["0 2 * * *"], "a list is not a schedule"),
    ("garbage", "'garbage' is neither a cron expression"),
    ("* * * *", "'* * * *' is neither a cron expression"),
    ("* * * * * * *", "'* * * * * * *' is neither a cron expression"),
    ("61 * * * *", "minute value '61' is out of range"),
    ("* 24 * * *", "hour value '24' is out of range"),
    ("60 * * * * *", "second value '60' is out of range"),
    ("0 0 0 * *", "day-of-month value '0' is out of range"),
    ("0 0 * 13 *", "month value '13' is out of range"),
    ("0 0 * * 8", "day-of-week value '8' is out of range"),
    ("0 0 * foo *", "month value 'foo' is not a number"),
    ("*/0 * * * *", "'*/0' has a step of 0"),
    ("5-1 * * * *", "minute range '5-1' goes backwards"),
    ("1,,2 * * * *", "minute field '' is not valid"),
    ("? * * * *", "minute field '?' is not valid"),
    ("0 0 L * *", "'L' is not a number (the L, W, # and H cron extensions"),
    ("0 0 15W * *", "'15W' is not valid (the L, W, # and H"),
    ("0 0 * * 1#2", "'1#2' is not valid (the L, W, # and H"),
    ("@reboot", "cron alias '@reboot' is not known"),
    ({"hour": 24}, "hour 24 is out of range"),
    ({"minute": -1}, "minute -1 is out of range"),
    ({"second": 60}, "second 60 is out of range"),
    ({"month": 12}, "month 12 is out of range: month must be a month counted from 0 = January"),
    ({"dayOfWeek": 7}, "dayOfWeek 7 is out of range"),
    ({"date": 0}, "date 0 is out of range"),
    ({"year": 1969}, "year 1969 is out of range"),
    ({"hour": {"start": 0, "end": 5}}, 'hour {"start": 0, "end": 5} is not allowed'),
    ({"hour": [1, [2]]}, "hour [2] is not allowed"),
    ({"hour": True}, "hour true is not allowed"),
    ({"hour": "two"}, 'hour "two" is not allowed'),
    ({"hour": " -1"}, 'hour " -1" is not allowed'),
    ({"hour": 2.5}, "hour 2.5 is not allowed"),
    ({"hour": []}, "hour [] matches nothing"),
    ({"hours": 2}, "unknown key(s) 'hours' in a recurrence rule"),
    ({"start": 0, "end": 5}, "unknown key(s) 'end', 'start' in a recurrence rule (start and end"),
    ({1: 2}, "unknown key(s) '1'"),
    ({"tz": "Mars/Olympus_Mons"}, "tz 'Mars/Olympus_Mons' is not a known time zone"),
    ({"tz": "../../etc/passwd"}, "tz '../../etc/passwd' is not a known time zone"),
    ({"tz": 5}, "tz 5 is not allowed"),
    ({"tz": ""}, 'tz "" is not allowed'),
    ({"tz": "localtime"}, 'tz "localtime" is not allowed'),
    ({"rule": None}, "rule null is not allowed"),
    ({"rule": 5}, "rule 5 is not allowed"),
    ({"rule": ""}, 'rule "" is not allowed'),
    ({"rule": "2026-06-01T00:00:00Z"}, "cron expression '2026-06-01T00:00:00Z' has 1 fields"),
    ({"rule": {"tz": "UTC"}}, "cannot hold 'tz'"),
    ({"rule": {"hours": 1}}, "unknown key(s) 'hours' in a window's recurrence rule"),
    ({"rule": "* * * * *", "every": 5}, "unknown key(s) 'every' in a window"),
    ({"rule": "* * * * *", "start": "yesterday"}, "start 'yesterday' is not allowed"),
    ({"rule": "* * * * *", "end": True}, "end true is not allowed"),
    ({"rule": "* * * * *", "start": 1e300}, "start 1e+300 is out of range"),
    (
        {"rule": "* * * * *", "start": "2026-06-02T00:00Z", "end": "2026-06-01T00:00Z"},
        "end '2026-06-01T00:00Z' is before start '2026-06-02T00:00Z'",
    ),
    (float("nan"), "the time nan is out of range"),
    (float("inf"), "the time inf is out of range"),
    ("2026-13-01T00:00:00Z", "'2026-13-01T00:00:00Z' is neither"),
]


@pytest.mark.parametrize(("info", "fragment"), INVALID, ids=[repr(i) for i, _ in INVALID])
def test_invalid_values_are_named(info: Any, fragment: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse(info)
    error = caught.value
    assert fragment in str(error)
    assert str(error).startswith("schedule_info ")
    assert error.reason in str(error)
    assert error.schedule_info is info
    assert isinstance(error, PgJobsError) and isinstance(error, ValueError)


def test_the_error_quotes_long_values_briefly() -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse({"hour": list(range(1000))})
    assert "hour 24 is out of range" in str(caught.value)
    assert len(str(caught.value)) < 500


# --- Property check: many consecutive fires ---------------------------------------------------


def _cron_values(text: str, low: int, high: int) -> set[int]:
    """An independent expansion of plain numeric cron fields (no names, no aliases)."""
    values: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first, last = (int(x) for x in base.split("-"))
        else:
            first = int(base)
            last = high if step else first
        values.update(range(first, last + 1, int(step or 1)))
    return values


def _cron_matches(expression: str, reading: datetime) -> bool:
    parts = expression.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    seconds, minutes, hours = (
        _cron_values(p, 0, h) for p, h in zip(parts[:3], (59, 59, 23), strict=True)
    )
    days = _cron_values(parts[3], 1, 31)
    months = _cron_values(parts[4], 1, 12)
    weekdays = {d % 7 for d in _cron_values(parts[5], 0, 7)}
    weekday = (reading.weekday() + 1) % 7
    if len(days) < 31 and len(weekdays) < 7:
        day = reading.day in days or weekday in weekdays
    else:
        day = reading.day in days and weekday in weekdays
    return (
        day
        and reading.month in months
        and reading.hour in hours
        and reading.minute in minutes
        and reading.second in seconds
    )


PROPERTY_CRONS = [
    "* * * * *",
    "*/7 * * * *",
    "*/20 * * * * *",
    "0 2 * * *",
    "30 2 * * *",
    "15 */3 * * *",
    "0 0 13 * 5",
    "0 12 * * 1-5",
    "0 0 29 2 *",
    "59 23 31 12 *",
    "0 1-3 * 3,10,11 0",
    "30 0-3 * 3,10,11 *",
    "10,40 2 * * *",
]


@pytest.mark.parametrize("tz", [ZoneInfo("UTC"), PARIS, NEW_YORK, LORD_HOWE], ids=str)
@pytest.mark.parametrize("expression", PROPERTY_CRONS)
def test_200_consecutive_fires_increase_and_match(expression: str, tz: ZoneInfo) -> None:
    schedule = parse({"tz": tz.key, "rule": expression})
    names_hours = expression.split()[-4] != "*"
    for start in (utc(2026, 3, 27), utc(2026, 10, 23)):
        got = fires(schedule, start, 200)
        assert len(got) == 200
        assert all(a < b for a, b in zip([start, *got], got, strict=False))
        for fire in got:
            assert fire.tzinfo is UTC and fire.microsecond == 0
            reading = fire.astimezone(tz).replace(tzinfo=None)
            if _cron_matches(expression, reading):
                continue
            # Otherwise only a time-of-day rule's fire at the end of a gap it fell into.
            before = (fire - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
            assert names_hours and reading - before > timedelta(seconds=1), (fire, reading)


def test_agrees_with_croniter_in_utc() -> None:
    croniter = pytest.importorskip("croniter").croniter
    for expression in PROPERTY_CRONS:
        six = len(expression.split()) == 6
        reference = croniter(expression, utc(2026, 1, 1), second_at_beginning=six)
        ours = fires(parse(expression), utc(2026, 1, 1), 200)
        assert ours == [reference.get_next(datetime) for _ in range(200)], expression


# --- The Schedule object ----------------------------------------------------------------------


def test_describe() -> None:
    assert parse({"tz": "Europe/Paris", "rule": "0 2 * * *"}).describe() == (
        "cron '0 2 * * *' in Europe/Paris"
    )
    assert parse("0 2 * * *").describe() == "cron '0 2 * * *' in UTC"
    assert parse({"hour": 2, "tz": "UTC"}).describe() == 'rule {"hour": 2} in UTC'
    window = parse(
        {
            "tz": "Europe/Paris",
            "start": "2026-06-01T00:00:00Z",
            "end": "2099-01-01T00:00:00Z",
            "rule": {"minute": 0},
        }
    )
    assert window.describe() == (
        'rule {"minute": 0} in Europe/Paris from 2026-06-01T02:00:00+02:00 '
        "until 2099-01-01T01:00:00+01:00"
    )
    assert repr(window) == f"<Schedule {window.describe()}>"
    assert parse("2026-06-01T10:00:00Z").describe(now=NOW) == (
        "once at 2026-06-01T10:00:00+00:00 in UTC"
    )


def test_schedules_are_immutable_and_comparable() -> None:
    schedule = parse("0 2 * * *")
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.tz = PARIS  # type: ignore[misc]
    assert schedule == parse("0 2 * * *")
    assert hash(schedule) == hash(parse("0 2 * * *"))
    assert schedule != parse({"tz": "Europe/Paris", "rule": "0 2 * * *"})


def test_parse_now_must_be_aware() -> None:
    with pytest.raises(InvalidArgumentError, match="now"):
        parse_schedule("* * * * *", now=datetime(2026, 1, 1))
