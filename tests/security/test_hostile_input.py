"""Bad input (issue 8, part 2): every call either succeeds with the documented result or
raises the package's own exception naming the bad argument and value; a refusal changes
nothing in the database; no call hangs.

- Written cases (a table of call, argument, message fragment) for hostile values the
  wrappers must refuse before the database, and for refusals that only the database can
  make (checked to change nothing).
- Properties (hypothesis) over the wrappers' arguments against an independent statement
  of the documented rules, over payloads (deep, huge, unicode, NUL, surrogates) and
  schedule_info values, and over the SQL functions on a real database: valid arguments
  round-trip exactly, any mix of valid and invalid ones adds one job or changes nothing,
  and worker calls with hostile arguments keep the queue's bookkeeping exact.

Database properties run each example in a transaction that is rolled back, so the one
database of a test function starts every example empty.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Integer, Interval, Text, bindparam, literal, null, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

import sqla_pgjobs as pgjobs
from sqla_pgjobs import InvalidArgumentError, InvalidWorkerIdError, JobSpec, PgJobsError
from sqla_pgjobs.errors import translate
from sqla_pgjobs.scheduler import Scheduler
from sqla_pgjobs.worker import TaskRegistry, Worker
from tests.helpers import sql

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Connection, Engine

WORKER = "worker-1"
TENANT = uuid.UUID("5b720132-17d5-424d-9bcb-ee7b17c13d43")
NAIVE = datetime(2026, 1, 1, 12, 0)
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # never connected to: refused first
FAR_EAST = timezone(timedelta(hours=14))
FAR_WEST = timezone(timedelta(hours=-12))
#: Database properties make a statement per example: fewer of them than pure ones.
DB_EXAMPLES = max(10, settings.default.max_examples // 2)
DB_SETTINGS = settings(
    max_examples=DB_EXAMPLES,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- Written cases: refused before the database ---------------------------------------------

#: (case, call, argument named, fragment of what is allowed). Cases already in
#: python/test_wrappers.py's BAD_CALLS are not repeated.
BAD_CALLS: list[tuple[str, Callable[[], object], str, str]] = [
    # Texts: lone surrogates (a bad decode) cannot be encoded for the server.
    ("surrogate in task", lambda: pgjobs.add_job("a\ud800"), "identifier", "valid Unicode"),
    ("surrogate in key", lambda: pgjobs.add_job("t", job_key="\udfff"), "job_key", "Unicode"),
    ("surrogate in queue", lambda: pgjobs.add_job("t", queue_name="q\udc80"), "queue_name", "Uni"),
    ("surrogate in payload", lambda: pgjobs.add_job("t", {"a": "\ud83d"}), "payload", "Unicode"),
    ("surrogate payload key", lambda: pgjobs.add_job("t", {"\udfff": 1}), "payload", "Unicode"),
    ("surrogate worker id", lambda: pgjobs.get_job("work\ud800"), "worker_id", "Unicode"),
    ("surrogate message", lambda: pgjobs.fail_job(WORKER, 1, "\ud800"), "error_message", "Uni"),
    ("surrogate in filter", lambda: pgjobs.get_jobs(WORKER, ["\ud800"]), "task_identifiers[0]", "Uni"),
    ("surrogate info", lambda: pgjobs.heartbeat(WORKER, None, ["\ud800"]), "info", "Unicode"),
    ("surrogate role", lambda: pgjobs.grant_access("r\ud800", "worker"), "role_name", "Unicode"),
    # Texts: NUL, wrong types, lengths in characters.
    ("NUL in key", lambda: pgjobs.add_job("t", job_key="k\x00"), "job_key", "NUL"),
    ("NUL in queue", lambda: pgjobs.add_job("t", queue_name="\x00"), "queue_name", "NUL"),
    ("NUL in worker id", lambda: pgjobs.get_job("work\x00er"), "worker_id", "NUL"),
    ("NUL in role", lambda: pgjobs.grant_access("ro\x00le", "worker"), "role_name", "NUL"),
    ("bytes task", lambda: pgjobs.add_job(b"task"), "identifier", "must be a str"),  # type: ignore[arg-type]
    ("bytes worker id", lambda: pgjobs.get_job(b"worker"), "worker_id", "at least 4"),  # type: ignore[arg-type]
    ("empty queue", lambda: pgjobs.add_job("t", queue_name=""), "queue_name", "1 to 126"),
    ("127 wide chars", lambda: pgjobs.add_job("é" * 127), "identifier", "1 to 126"),
    ("513 emoji key", lambda: pgjobs.add_job("t", job_key="😀" * 513), "job_key", "1 to 512"),
    ("3 wide chars id", lambda: pgjobs.get_job("日本語"), "worker_id", "at least 4"),
    ("empty role", lambda: pgjobs.grant_access("", "worker"), "role_name", "1 to 63 bytes"),
    ("int error message", lambda: pgjobs.fail_job(WORKER, 1, 42), "error_message", "str"),  # type: ignore[arg-type]
    # Payloads: deep, huge, not JSON.
    ("payload 5000 deep", lambda: pgjobs.add_job("t", nested(5000)), "payload", "too deeply"),
    ("payload 5000 digits", lambda: pgjobs.add_job("t", 10**5000), "payload", "JSON-serializable"),
    ("payload infinity", lambda: pgjobs.add_job("t", [math.inf]), "payload", "JSON-serializable"),
    ("payload bytes", lambda: pgjobs.add_job("t", b"\x00"), "payload", "JSON-serializable"),
    ("payload Decimal", lambda: pgjobs.add_job("t", Decimal("1.5")), "payload", "JSON"),
    ("payload tuple key", lambda: pgjobs.add_job("t", {(1, 2): 3}), "payload", "JSON"),
    ("payload self cycle", lambda: pgjobs.add_job("t", cyclic()), "payload", "JSON"),
    ("info too deep", lambda: pgjobs.heartbeat(WORKER, None, nested(5000)), "info", "deeply"),
    ("bulk deep payload", lambda: pgjobs.add_jobs([JobSpec("t", nested(5000))]), "jobs[0].payload", "deep"),
    # Integers: bounds, bools, floats, other number types.
    ("priority below int32", lambda: pgjobs.add_job("t", priority=-(2**31) - 1), "priority", "from"),
    ("priority float", lambda: pgjobs.add_job("t", priority=1.0), "priority", "integer"),  # type: ignore[arg-type]
    ("priority Decimal", lambda: pgjobs.add_job("t", priority=Decimal(1)), "priority", "int"),  # type: ignore[arg-type]
    ("priority str", lambda: pgjobs.add_job("t", priority="1"), "priority", "integer"),  # type: ignore[arg-type]
    ("max_attempts 2**31", lambda: pgjobs.add_job("t", max_attempts=2**31), "max_attempts", "1 to"),
    ("max_attempts negative", lambda: pgjobs.add_job("t", max_attempts=-5), "max_attempts", "1"),
    ("job id below int64", lambda: pgjobs.complete_job(WORKER, -(2**63) - 1), "job_id", "64-bit"),
    ("job id bool", lambda: pgjobs.fail_job(WORKER, True), "job_id", "64-bit"),
    ("job id float", lambda: pgjobs.complete_job(WORKER, 1.5), "job_id", "64-bit"),  # type: ignore[arg-type]
    ("schedule id str", lambda: pgjobs.run_scheduled_job("1"), "scheduled_job_id", "64-bit"),  # type: ignore[arg-type]
    ("max_jobs None", lambda: pgjobs.get_jobs(WORKER, max_jobs=None), "max_jobs", "from 1"),  # type: ignore[arg-type]
    ("max_jobs bool", lambda: pgjobs.get_scheduled_jobs(WORKER, max_jobs=True), "max_jobs", "1"),
    ("attempts 2**31", lambda: pgjobs.reschedule_jobs([1], attempts=2**31), "attempts", "from 0"),
    ("force 1", lambda: pgjobs.complete_jobs([1], force=1), "force", "True or False"),  # type: ignore[arg-type]
    ("force 'yes'", lambda: pgjobs.reschedule_jobs([1], force="yes"), "force", "True or False"),  # type: ignore[arg-type]
    # Times: out of range once in UTC, dates, strings.
    ("run_at year 1 east", lambda: pgjobs.add_job("t", run_at=datetime(1, 1, 1, tzinfo=FAR_EAST)), "run_at", "years 1 to 9999"),
    ("run_at 9999 west", lambda: pgjobs.add_job("t", run_at=datetime.max.replace(tzinfo=FAR_WEST)), "run_at", "years 1 to 9999"),
    ("run_at a date", lambda: pgjobs.add_job("t", run_at=date(2026, 1, 1)), "run_at", "datetime"),  # type: ignore[arg-type]
    ("run_at epoch int", lambda: pgjobs.add_job("t", run_at=0), "run_at", "datetime"),  # type: ignore[arg-type]
    ("run_at tz of 30 hours", lambda: pgjobs.add_job("t", run_at=datetime(2026, 1, 1, tzinfo=ThirtyHours())), "run_at", "time zone is invalid"),
    ("reschedule naive", lambda: pgjobs.reschedule_jobs([1], run_at=NAIVE), "run_at", "time zone"),
    ("fire_time year 1", lambda: pgjobs.run_scheduled_job(1, fire_time=datetime(1, 1, 1, tzinfo=FAR_EAST)), "fire_time", "9999"),
    # Durations: zero, negative, huge (now() minus it would leave the timestamp range).
    ("expiry max", lambda: pgjobs.get_jobs(WORKER, job_expiry=timedelta.max), "job_expiry", "365000 days"),
    ("expiry 1000 years", lambda: pgjobs.recover_jobs(job_expiry=timedelta(days=366_000)), "job_expiry", "at most"),
    ("lease huge", lambda: pgjobs.renew_scheduled_jobs(WORKER, lease=timedelta(days=10**6)), "lease", "at most"),
    ("lease negative", lambda: pgjobs.get_scheduled_jobs(WORKER, lease=-timedelta(seconds=1)), "lease", "positive"),
    ("heartbeat 0", lambda: pgjobs.heartbeat(WORKER, timedelta(0)), "heartbeat_timeout", "positive"),
    ("heartbeat huge", lambda: pgjobs.heartbeat(WORKER, timedelta(days=999_999_999)), "heartbeat_timeout", "at most"),
    ("expiry float", lambda: pgjobs.complete_jobs([1], job_expiry=3.5), "job_expiry", "timedelta"),  # type: ignore[arg-type]
    ("worker poll NaN", lambda: Worker(UNREACHABLE, TaskRegistry(), poll_interval=math.nan), "poll_interval", "seconds"),
    ("worker expiry 1e20 s", lambda: Worker(UNREACHABLE, TaskRegistry(), job_expiry=1e20), "job_expiry", "seconds"),
    ("worker concurrency 0", lambda: Worker(UNREACHABLE, TaskRegistry(), concurrency=0), "concurrency", "from 1"),
    ("worker id 3 chars", lambda: Worker(UNREACHABLE, TaskRegistry(), worker_id="abc"), "worker_id", "at least 4"),
    ("scheduler lease inf", lambda: Scheduler(UNREACHABLE, lease=math.inf), "lease", "seconds"),
    ("scheduler id surrogate", lambda: Scheduler(UNREACHABLE, scheduler_id="sch\ud800"), "scheduler_id", "Unicode"),
    ("task timeout -inf", lambda: TaskRegistry().task("t", timeout=-math.inf), "timeout", "seconds"),
    # Tenants.
    ("tenant int", lambda: pgjobs.add_job("t", db_id=1), "db_id", "UUID"),  # type: ignore[arg-type]
    ("tenant bytes", lambda: pgjobs.add_job("t", db_id=TENANT.bytes), "db_id", "UUID"),  # type: ignore[arg-type]
    ("tenant injection", lambda: pgjobs.add_scheduled_job("t", db_id="'; DROP TABLE x; --"), "db_id", "UUID"),
    ("tenant empty", lambda: pgjobs.add_job("t", db_id=""), "db_id", "UUID"),
    # Collections: non-iterables, texts passing for lists, bad elements.
    ("task filter int", lambda: pgjobs.get_job(WORKER, 5), "task_identifiers", "list"),  # type: ignore[arg-type]
    ("task filter bytes", lambda: pgjobs.next_run_at(b"ab"), "task_identifiers", "list"),  # type: ignore[arg-type]
    ("task filter NUL", lambda: pgjobs.next_run_at(["a", "b\x00"]), "task_identifiers[1]", "NUL"),
    ("messages a str", lambda: pgjobs.fail_job_batch(WORKER, [1, 2], "ab"), "error_messages", "list"),  # type: ignore[arg-type]
    ("messages an int", lambda: pgjobs.fail_job_batch(WORKER, [1], 5), "error_messages", "list"),  # type: ignore[arg-type]
    ("jobs None", lambda: pgjobs.add_jobs(None), "jobs", "iterable of JobSpec"),  # type: ignore[arg-type]
    ("jobs an int", lambda: pgjobs.add_jobs(3), "jobs", "iterable of JobSpec"),  # type: ignore[arg-type]
    ("jobs a str", lambda: pgjobs.add_jobs("send"), "jobs", "iterable of JobSpec"),  # type: ignore[arg-type]
    ("jobs a mapping", lambda: pgjobs.add_jobs({"identifier": "t"}), "jobs[0]", "JobSpec or a mapping"),  # type: ignore[arg-type]
    ("spec None task", lambda: pgjobs.add_jobs([JobSpec(None)]), "jobs[0].identifier", "str"),  # type: ignore[arg-type]
    ("keep ids a str", lambda: pgjobs.release_jobs(WORKER, "12"), "keep_job_ids", "iterable"),  # type: ignore[arg-type]
    ("ids a set of str", lambda: pgjobs.complete_jobs({"1"}), "job_ids[0]", "64-bit"),  # type: ignore[arg-type]
    ("ids None", lambda: pgjobs.permanently_fail_jobs(None), "job_ids", "iterable"),  # type: ignore[arg-type]
    ("renew ids huge", lambda: pgjobs.renew_scheduled_jobs(WORKER, [2**64]), "ids[0]", "64-bit"),
    # Access levels.
    ("access capitalised", lambda: pgjobs.revoke_access("app", "Worker"), "access", "enqueue"),
    ("access None", lambda: pgjobs.grant_access("app", None), "access", "enqueue"),  # type: ignore[arg-type]
    # schedule_info.
    ("schedule empty text", lambda: pgjobs.add_scheduled_job("t", None, ""), "schedule_info", "empty"),
    ("schedule 4 fields", lambda: pgjobs.add_scheduled_job("t", None, "* * * *"), "schedule_info", "5"),
    ("schedule step 0", lambda: pgjobs.add_scheduled_job("t", None, "*/0 * * * *"), "schedule_info", "step of 0"),
    ("schedule tz int", lambda: pgjobs.add_scheduled_job("t", None, {"tz": 5}), "schedule_info", "tz"),
    ("schedule tz path", lambda: pgjobs.add_scheduled_job("t", None, {"tz": "../../etc/passwd"}), "schedule_info", "tz"),
    ("schedule unknown key", lambda: pgjobs.add_scheduled_job("t", None, {"often": 1}), "schedule_info", "often"),
    ("schedule true", lambda: pgjobs.add_scheduled_job("t", None, True), "schedule_info", "not a schedule"),
    ("schedule huge minute", lambda: pgjobs.add_scheduled_job("t", None, {"minute": 10**30}), "schedule_info", "range"),
    ("schedule deep", lambda: pgjobs.add_scheduled_job("t", None, {"minute": nested(5000)}), "schedule_info", "deep"),
    ("schedule NaN", lambda: pgjobs.add_scheduled_job("t", None, math.nan), "schedule_info", "JSON"),
    ("schedule L extension", lambda: pgjobs.add_scheduled_job("t", None, "0 0 L * *"), "schedule_info", "L"),
    ("window end first", lambda: pgjobs.add_scheduled_job("t", None, {"rule": "* * * * *", "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}), "schedule_info", "before start"),
]  # fmt: skip


class ThirtyHours(tzinfo):
    """A time zone whose offset Python itself refuses."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


def cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("call", "argument", "fragment"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
def test_written_bad_input_is_refused_naming_the_argument_and_value(
    call: Callable[[], object], argument: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        call()
    error = info.value
    assert isinstance(error, PgJobsError)
    assert error.argument == argument
    assert fragment in str(error)
    assert str(error).startswith(f"{argument} ")
    assert " is not allowed: " in str(error)


def test_there_are_at_least_fifty_written_cases() -> None:
    assert len(BAD_CALLS) >= 50
    assert len({case[0] for case in BAD_CALLS}) == len(BAD_CALLS)


def test_a_huge_value_is_named_shortened_not_in_full() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        pgjobs.add_job("t", job_key="k" * 100_000)
    assert len(str(info.value)) < 1000
    assert str(info.value).startswith("job_key 'kkkk")


# --- Written cases: refused by the database, changing nothing -------------------------------


def snapshot(connection: Connection) -> list[Any]:
    """Every row of every job table, as text."""
    return [
        connection.execute(
            sql(f"SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text FROM app_jobs.{t} t")
        ).scalar_one()
        for t in ("jobs", "scheduled_jobs", "job_queues", "workers", "migrations")
    ]


#: (case, statement: a wrapper call or raw SQL, the package exception, argument named).
DB_REFUSALS: list[tuple[str, Any, type[PgJobsError], str]] = [
    ("select: NULL task", lambda: pgjobs.add_jobs(select(null().label("identifier"))), InvalidArgumentError, "identifier"),
    ("select: long task", lambda: pgjobs.add_jobs(select(literal("t" * 127).label("identifier"))), InvalidArgumentError, "identifier"),
    ("select: 0 attempts", lambda: pgjobs.add_jobs(select(literal("t").label("identifier"), literal(0).label("max_attempts"))), InvalidArgumentError, "max_attempts"),
    ("select: long queue", lambda: pgjobs.add_jobs(select(literal("t").label("identifier"), literal("q" * 200).label("queue_name"))), InvalidArgumentError, "queue_name"),
    ("select: long key", lambda: pgjobs.add_jobs(select(literal("t").label("identifier"), literal("k" * 600).label("job_key"))), InvalidArgumentError, "job_key"),
    ("missing role", lambda: pgjobs.grant_access(f"no_such_{uuid.uuid4().hex[:8]}", "worker"), InvalidArgumentError, "role_name"),
    ("sql: short worker id", "SELECT * FROM app_jobs.get_jobs('abc')", InvalidWorkerIdError, "worker_id"),
    ("sql: NULL worker id", "SELECT * FROM app_jobs.complete_job(NULL, 1)", InvalidWorkerIdError, "worker_id"),
    ("sql: fail short id", "SELECT * FROM app_jobs.fail_job('ab', 1, 'x')", InvalidWorkerIdError, "worker_id"),
    ("sql: release short id", "SELECT app_jobs.release_jobs('')", InvalidWorkerIdError, "worker_id"),
    ("sql: heartbeat short id", "SELECT app_jobs.heartbeat('w')", InvalidWorkerIdError, "worker_id"),
    ("sql: renew short id", "SELECT * FROM app_jobs.renew_scheduled_jobs('abc')", InvalidWorkerIdError, "worker_id"),
    ("sql: max_jobs 0", "SELECT * FROM app_jobs.get_jobs('worker-1', NULL, NULL, 0)", InvalidArgumentError, "max_jobs"),
    ("sql: schedules max_jobs -1", "SELECT * FROM app_jobs.get_scheduled_jobs('worker-1', NULL, NULL, -1)", InvalidArgumentError, "max_jobs"),
    ("sql: heartbeat timeout 0", "SELECT app_jobs.heartbeat('worker-1', interval '0')", InvalidArgumentError, "heartbeat_timeout"),
    ("sql: heartbeat timeout huge", "SELECT app_jobs.heartbeat('worker-1', interval '999999999 days')", InvalidArgumentError, "heartbeat_timeout"),
    ("sql: get_jobs expiry huge", "SELECT * FROM app_jobs.get_jobs('worker-1', NULL, interval '1000000 years')", InvalidArgumentError, "job_expiry"),
    ("sql: get_job expiry huge", "SELECT * FROM app_jobs.get_job('worker-1', NULL, interval '400000 days')", InvalidArgumentError, "job_expiry"),
    ("sql: recover expiry huge", "SELECT app_jobs.recover_jobs(interval '999999999 days')", InvalidArgumentError, "job_expiry"),
    ("sql: long task", "SELECT * FROM app_jobs.add_job(NULL, repeat('t', 127))", InvalidArgumentError, "identifier"),
    ("sql: long key", "SELECT * FROM app_jobs.add_job(NULL, 't', '{}', repeat('k', 513))", InvalidArgumentError, "job_key"),
    ("sql: long queue", "SELECT * FROM app_jobs.add_job(NULL, 't', '{}', NULL, repeat('q', 127))", InvalidArgumentError, "queue_name"),
    ("sql: 0 attempts", "SELECT * FROM app_jobs.add_job(NULL, 't', '{}', NULL, NULL, NULL, 0)", InvalidArgumentError, "max_attempts"),
    ("sql: schedule 0 attempts", "SELECT * FROM app_jobs.add_scheduled_job(NULL, 't', '{}', '{}', NULL, NULL, -1)", InvalidArgumentError, "max_attempts"),
    ("sql: bulk mismatch", "SELECT * FROM app_jobs.add_jobs(ARRAY['a', 'b'], NULL, NULL, ARRAY['k'])", InvalidArgumentError, "job_keys"),
    ("sql: messages mismatch", "SELECT * FROM app_jobs.fail_job_batch('worker-1', ARRAY[1, 2], ARRAY['x'])", InvalidArgumentError, "error_messages"),
    ("sql: unknown level", "SELECT app_jobs.grant_access('postgres', 'root')", InvalidArgumentError, "access"),
]  # fmt: skip


def test_database_refusals_raise_package_errors_and_change_nothing(jobs_engine: Engine) -> None:
    """Each refusal happens in a transaction that already wrote: the savepoint around it
    rolls back to exactly the state before it."""
    failures: list[str] = []
    with jobs_engine.connect() as connection, connection.begin():
        connection.execute(pgjobs.add_job("before", {"n": 1}, queue_name="q", job_key="k"))
        connection.execute(pgjobs.add_scheduled_job("tick", None, "0 3 * * *"))
        connection.execute(pgjobs.heartbeat(WORKER))
        before = snapshot(connection)
        for case, statement, expected, argument in DB_REFUSALS:
            savepoint = connection.begin_nested()
            try:
                if isinstance(statement, str):
                    try:
                        connection.execute(sql(statement))
                    except DBAPIError as exc:
                        raise translate(exc) or exc from exc
                else:
                    connection.execute(statement())
                failures.append(f"{case}: not refused")
            except PgJobsError as error:
                if type(error) is not expected or getattr(error, "argument", None) != argument:
                    failures.append(f"{case}: {type(error).__name__} {error}")
            except DBAPIError as error:
                failures.append(f"{case}: untranslated {error.orig!r}")
            savepoint.rollback()
            if snapshot(connection) != before:
                failures.append(f"{case}: the database changed")
    assert failures == []


def test_add_jobs_from_a_select_with_a_text_tenant_fails_with_the_database_error(
    jobs_engine: Engine,
) -> None:
    """Not translated: the bad value is a row of the caller's own query, which the package
    cannot name. It stays the database's clear error and changes nothing."""
    statement = pgjobs.add_jobs(
        select(literal("t").label("identifier"), literal("tenant-a").label("db_id"))
    )
    with pytest.raises(DBAPIError, match='invalid input syntax for type uuid: "tenant-a"'):
        with jobs_engine.begin() as connection:
            connection.execute(statement)
    with jobs_engine.connect() as connection:
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one() == 0


# --- Properties of the wrappers' arguments (no database) ------------------------------------


def encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_text(value: object) -> bool:
    return isinstance(value, str) and "\x00" not in value and encodable(value)


def is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def in_utc_range(value: datetime) -> bool:
    offset = value.utcoffset()
    assert offset is not None
    try:
        value.replace(tzinfo=None) - offset
    except OverflowError:
        return False
    return True


def is_aware(value: object) -> bool:
    return (
        isinstance(value, datetime)
        and value.tzinfo is not None
        and value.utcoffset() is not None
        and in_utc_range(value)
    )


def is_duration(value: object) -> bool:
    return isinstance(value, timedelta) and timedelta(0) < value <= timedelta(days=365_000)


def is_tenant(value: object) -> bool:
    if value is None or isinstance(value, uuid.UUID):
        return True
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


INT32, INT64 = 2**31 - 1, 2**63 - 1

#: (wrapper and argument, how to call it with a value, the documented rule).
SLOTS: dict[str, tuple[Callable[[Any], object], Callable[[Any], bool]]] = {
    "add_job identifier": (
        lambda v: pgjobs.add_job(v),
        lambda v: is_text(v) and 1 <= len(v) <= 126,
    ),
    "add_job job_key": (
        lambda v: pgjobs.add_job("t", job_key=v),
        lambda v: v is None or (is_text(v) and 1 <= len(v) <= 512),
    ),
    "add_job queue_name": (
        lambda v: pgjobs.add_job("t", queue_name=v),
        lambda v: v is None or (is_text(v) and 1 <= len(v) <= 126),
    ),
    "add_job db_id": (lambda v: pgjobs.add_job("t", db_id=v), is_tenant),
    "add_job run_at": (lambda v: pgjobs.add_job("t", run_at=v), lambda v: v is None or is_aware(v)),
    "add_job max_attempts": (
        lambda v: pgjobs.add_job("t", max_attempts=v),
        lambda v: v is None or is_int(v, 1, INT32),
    ),
    "add_job priority": (
        lambda v: pgjobs.add_job("t", priority=v),
        lambda v: v is None or is_int(v, -INT32 - 1, INT32),
    ),
    "get_jobs worker_id": (lambda v: pgjobs.get_jobs(v), lambda v: is_text(v) and len(v) >= 4),
    "get_jobs max_jobs": (
        lambda v: pgjobs.get_jobs(WORKER, max_jobs=v),
        lambda v: is_int(v, 1, INT32),
    ),
    "get_job job_expiry": (
        lambda v: pgjobs.get_job(WORKER, job_expiry=v),
        lambda v: v is None or is_duration(v),
    ),
    "complete_job job_id": (
        lambda v: pgjobs.complete_job(WORKER, v),
        lambda v: is_int(v, -INT64 - 1, INT64),
    ),
    "fail_job error_message": (
        lambda v: pgjobs.fail_job(WORKER, 1, v),
        lambda v: v is None or is_text(v),
    ),
    "reschedule_jobs attempts": (
        lambda v: pgjobs.reschedule_jobs([1], attempts=v),
        lambda v: v is None or is_int(v, 0, INT32),
    ),
    "get_scheduled_job lease": (
        lambda v: pgjobs.get_scheduled_job(WORKER, lease=v),
        lambda v: v is None or is_duration(v),
    ),
    "heartbeat heartbeat_timeout": (
        lambda v: pgjobs.heartbeat(WORKER, v),
        lambda v: v is None or is_duration(v),
    ),
    "run_scheduled_job fire_time": (
        lambda v: pgjobs.run_scheduled_job(1, fire_time=v),
        lambda v: v is None or is_aware(v),
    ),
    "complete_jobs force": (
        lambda v: pgjobs.complete_jobs([1], force=v),
        lambda v: isinstance(v, bool),
    ),
    "grant_access access": (
        lambda v: pgjobs.grant_access("app", v),
        lambda v: isinstance(v, str) and v in ("read", "enqueue", "worker", "operator"),
    ),
}

HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.integers(0, 600).map(lambda n: "x" * n),
    st.integers(0, 600).map(lambda n: "é" * n),
    st.tuples(st.text(max_size=5), st.sampled_from(["\x00", "\ud800", "\udfff", "'", "$$"])).map(
        "".join
    ),
    st.sampled_from(["", "abc", "abcd", "read", "enqueue", "worker", "Worker", "operator"]),
)
INTEGERS = st.one_of(
    st.integers(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, 1, -1, INT32, INT32 + 1, -INT32 - 1, -INT32 - 2, INT64, INT64 + 1]),
    st.booleans(),
)
OFFSETS = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)
DATETIMES = st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), OFFSETS.map(timezone)))
TIMEDELTAS = st.one_of(
    st.timedeltas(),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400_000)),
    st.sampled_from(
        [timedelta(0), timedelta(days=365_000), timedelta(days=365_000, microseconds=1)]
    ),
)
ANYTHING = st.one_of(
    st.none(),
    INTEGERS,
    st.floats(),
    HOSTILE_TEXT,
    st.binary(max_size=8),
    DATETIMES,
    st.dates(),
    TIMEDELTAS,
    st.uuids(),
    st.uuids().map(str),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.decimals(allow_nan=False),
)  # fmt: skip


@given(slot=st.sampled_from(sorted(SLOTS)), value=ANYTHING)
def test_each_argument_is_accepted_exactly_when_the_documented_rule_allows_it(
    slot: str, value: Any
) -> None:
    call, allowed = SLOTS[slot]
    argument = slot.split()[1]
    if allowed(value):
        call(value)
        return
    with pytest.raises(InvalidArgumentError) as info:
        call(value)
    assert info.value.argument == argument
    assert info.value.value is value
    assert str(info.value).startswith(f"{argument} ")


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["\x00", "a\x00b", "'; DROP TABLE x; --", "\u2028", "😀", "\\u0000"]),
)
BAD_LEAVES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, b"x", {1, 2}, "\ud800"]),
    st.integers(4300, 5000).map(lambda digits: 10**digits),
    st.datetimes(),
    st.decimals(allow_nan=False),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    )


def payloads(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, containers, max_leaves=25)


def json_valid(value: Any) -> bool:
    """The documented rule for payloads: JSON values (dict keys texts) with finite numbers
    and valid Unicode, nested at most a few hundred deep (checked by the caller)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 10**4300  # Python converts at most 4300 digits to text
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        return all(json_valid(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and encodable(k) and json_valid(v) for k, v in value.items())
    return False


@given(payload=st.one_of(payloads(JSON_LEAVES), payloads(st.one_of(JSON_LEAVES, BAD_LEAVES))))
def test_payloads_are_kept_exactly_or_refused_naming_the_payload(payload: Any) -> None:
    if payload is None:  # the default, {} (C4)
        assert pgjobs.add_job("t", payload).compile().params["payload"] is None
        return
    if json_valid(payload):
        statement = pgjobs.add_job("t", payload)
        assert json.loads(statement.compile().params["payload"]) == payload
        return
    with pytest.raises(InvalidArgumentError) as info:
        pgjobs.add_job("t", payload)
    assert info.value.argument == "payload"


@given(depth=st.integers(0, 6000))
def test_nesting_is_kept_up_to_hundreds_deep_and_refused_cleanly_beyond(depth: int) -> None:
    try:
        statement = pgjobs.add_job("t", nested(depth))
    except InvalidArgumentError as error:
        assert error.argument == "payload" and "too deeply" in str(error)
        assert depth > 500
    else:
        # Compared as text: == on lists nested this deep would itself recurse too far.
        assert statement.compile().params["payload"] == "[" * depth + "0" + "]" * depth


def within(seconds: float, call: Callable[[], object]) -> None:
    """Run ``call()`` in a thread; fail if it has not finished after ``seconds`` (a hang),
    re-raise what it raised. (No SIGALRM: pytest-timeout owns that.)"""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s: a hang"
    if outcome[0] is not None:
        raise outcome[0]


CRON_FIELD = st.one_of(
    st.just("*"),
    st.just("?"),
    st.integers(-3, 70).map(str),
    st.tuples(st.integers(-1, 62), st.integers(-1, 62)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.integers(-1, 100).map(lambda n: f"*/{n}"),
    st.lists(st.integers(0, 61).map(str), min_size=1, max_size=3).map(",".join),
    st.sampled_from(["jan", "MON", "L", "5W", "1#2", "H", "", "1-", "/5", "**"]),
)
CRON = st.lists(CRON_FIELD, min_size=0, max_size=7).map(" ".join)
RULE_VALUE = st.one_of(
    st.none(),
    st.integers(-100, 100),
    st.integers(),
    st.lists(st.integers(-5, 70), max_size=4),
    st.text(max_size=5),
    st.floats(),
    st.booleans(),
)
RULES = st.dictionaries(
    st.sampled_from(["second", "minute", "hour", "date", "month", "year", "dayOfWeek", "x"]),
    RULE_VALUE,
    max_size=4,
)
INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.integers(-(2**53), 2**53),
    st.text(max_size=12),
    st.floats(),
)
SCHEDULES = st.one_of(
    CRON,
    st.text(max_size=20),
    st.sampled_from(["@daily", "@hourly", "@reboot", "@every 5m", "@yearly"]),
    INSTANTS,
    RULES,
    st.builds(lambda r, tz: {**r, "tz": tz}, RULES, st.sampled_from(["UTC", "Europe/Paris", "Mars/Olympus", "", 3])),
    st.fixed_dictionaries(
        {"rule": st.one_of(CRON, RULES, st.integers())},
        optional={"start": INSTANTS, "end": INSTANTS, "tz": st.sampled_from(["UTC", "Asia/Tokyo", "x"])},
    ),
    ANYTHING,
)  # fmt: skip


@given(schedule_info=SCHEDULES)
def test_schedule_info_is_accepted_or_refused_naming_it_and_never_hangs(
    schedule_info: Any,
) -> None:
    try:
        within(5, lambda: pgjobs.add_scheduled_job("t", None, schedule_info))
    except InvalidArgumentError as error:
        assert error.argument == "schedule_info"
        assert str(error).startswith("schedule_info ")


# --- Properties on the database ---------------------------------------------------------------


@pytest.fixture
def db(jobs_engine: Engine) -> Iterator[Connection]:
    """One connection for a test's examples, with a statement timeout: a call that hangs
    fails instead."""
    with jobs_engine.connect() as connection:
        connection.execute(text("SET statement_timeout = '10s'"))
        connection.commit()
        yield connection


VALID_NAMES = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=126
)
VALID_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS.map(timezone)
)
VALID_PAYLOADS = st.one_of(
    payloads(JSON_LEAVES),
    st.integers(0, 400).map(nested),
    st.integers(1, 2_000_000).map(lambda n: {"big": "é" * n}),
)


@DB_SETTINGS
@given(
    identifier=VALID_NAMES,
    payload=VALID_PAYLOADS,
    db_id=st.one_of(st.none(), st.uuids()),
    job_key=st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=512)),
    queue_name=st.one_of(st.none(), VALID_NAMES),
    run_at=st.one_of(st.none(), VALID_DATETIMES),
    max_attempts=st.one_of(st.none(), st.integers(1, INT32)),
    priority=st.one_of(st.none(), st.integers(-INT32 - 1, INT32)),
)  # fmt: skip
def test_add_job_keeps_any_valid_arguments_exactly(
    db: Connection,
    identifier: str,
    payload: Any,
    db_id: uuid.UUID | None,
    job_key: str | None,
    queue_name: str | None,
    run_at: datetime | None,
    max_attempts: int | None,
    priority: int | None,
) -> None:
    with db.begin() as transaction:
        job = db.execute(
            pgjobs.add_job(
                identifier,
                payload,
                db_id=db_id,
                job_key=job_key,
                queue_name=queue_name,
                run_at=run_at,
                max_attempts=max_attempts,
                priority=priority,
            )
        ).one()
        stored = db.execute(
            sql("SELECT task_identifier, payload, key, queue_name FROM app_jobs.jobs")
        ).one()
        queues = db.execute(sql("SELECT queue_name, job_count FROM app_jobs.job_queues")).all()
        transaction.rollback()
    expected = {} if payload is None else payload
    assert (job.task_identifier, job.payload, job.database_id) == (identifier, expected, db_id)
    assert (job.key, job.queue_name) == (job_key, queue_name)
    assert (job.max_attempts, job.priority) == (max_attempts or 25, priority or 0)
    assert run_at is None or job.run_at == run_at
    assert tuple(stored) == (identifier, expected, job_key, queue_name)
    assert queues == ([] if queue_name is None else [(queue_name, 1)])


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid value most of the time, anything at all sometimes."""
    return st.one_of(valid, valid, valid, ANYTHING)


@DB_SETTINGS
@given(
    identifier=maybe(VALID_NAMES),
    payload=st.one_of(payloads(JSON_LEAVES), payloads(st.one_of(JSON_LEAVES, BAD_LEAVES))),
    db_id=maybe(st.one_of(st.none(), st.uuids())),
    job_key=maybe(st.sampled_from([None, "k1", "k2"])),
    queue_name=maybe(st.sampled_from([None, "q1"])),
    run_at=maybe(st.one_of(st.none(), VALID_DATETIMES)),
    max_attempts=maybe(st.one_of(st.none(), st.integers(1, 30))),
    priority=maybe(st.one_of(st.none(), st.integers(-5, 5))),
)  # fmt: skip
def test_any_add_job_call_adds_its_job_or_changes_nothing(
    db: Connection,
    identifier: Any,
    payload: Any,
    db_id: Any,
    job_key: Any,
    queue_name: Any,
    run_at: Any,
    max_attempts: Any,
    priority: Any,
) -> None:
    with db.begin() as transaction:
        db.execute(pgjobs.add_job("existing", job_key="k1"))
        before = snapshot(db)
        savepoint = db.begin_nested()
        try:
            job = db.execute(
                pgjobs.add_job(
                    identifier,
                    payload,
                    db_id=db_id,
                    job_key=job_key,
                    queue_name=queue_name,
                    run_at=run_at,
                    max_attempts=max_attempts,
                    priority=priority,
                )
            ).one()
        except PgJobsError:
            savepoint.rollback()
            assert snapshot(db) == before
        else:
            savepoint.commit()
            ids = db.execute(sql("SELECT id FROM app_jobs.jobs")).scalars().all()
            replaced = job_key == "k1" and db_id is None
            assert len(ids) == (1 if replaced else 2) and job.id in ids
        finally:
            transaction.rollback()


WORKER_IDS = st.one_of(
    st.sampled_from([WORKER, "worker-2", "node-w"]), st.text(max_size=6), HOSTILE_TEXT
)
IDS = st.one_of(st.integers(0, 12), INTEGERS)


def call(wrapper: Callable[..., Any], *arguments: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A statement from ``wrapper`` with drawn arguments, or the package's refusal to build
    it (any other exception from a wrapper fails the test when hypothesis draws it)."""

    def build(*values: Any) -> Any:
        try:
            return wrapper(*values)
        except InvalidArgumentError as error:
            return error

    return st.builds(build, *arguments)


EXPIRIES = maybe(st.one_of(st.none(), st.timedeltas(timedelta(seconds=1), timedelta(days=9))))
CALLS = st.one_of(
    call(lambda w, n: pgjobs.get_jobs(w, max_jobs=n), WORKER_IDS, maybe(st.integers(1, 4))),
    call(pgjobs.get_job, WORKER_IDS, st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "zz"]), max_size=2))),
    call(pgjobs.complete_job, WORKER_IDS, IDS),
    call(pgjobs.fail_job, WORKER_IDS, IDS, st.one_of(st.none(), HOSTILE_TEXT)),
    call(pgjobs.complete_job_batch, WORKER_IDS, st.lists(IDS, max_size=4)),
    call(pgjobs.fail_job_batch, WORKER_IDS, st.lists(IDS, max_size=3)),
    call(pgjobs.release_jobs, WORKER_IDS, st.one_of(st.none(), st.lists(IDS, max_size=2))),
    call(pgjobs.heartbeat, WORKER_IDS, EXPIRIES),
    call(lambda ids, p, a: pgjobs.reschedule_jobs(ids, priority=p, attempts=a, force=True), st.lists(IDS, max_size=3), maybe(st.integers(-3, 3)), maybe(st.one_of(st.none(), st.integers(0, 3)))),
    call(lambda ids: pgjobs.permanently_fail_jobs(ids, "no", force=True), st.lists(IDS, max_size=2)),
    call(lambda e: pgjobs.recover_jobs(job_expiry=e), EXPIRIES),
    call(pgjobs.next_run_at, st.one_of(st.none(), st.lists(HOSTILE_TEXT, max_size=2))),
    call(pgjobs.complete_job, ANYTHING, ANYTHING),
    call(pgjobs.get_jobs, ANYTHING),
)  # fmt: skip

BOOKKEEPING = """
SELECT
  -- job_queues.job_count is exact, and a queue is held by at most the holder of its job
  (SELECT count(*) FROM (
     SELECT queue_name, count(*) AS n FROM app_jobs.jobs WHERE queue_name IS NOT NULL GROUP BY 1
   ) c FULL JOIN app_jobs.job_queues q USING (queue_name)
   WHERE c.n IS DISTINCT FROM q.job_count),
  -- locks come in pairs and only from valid worker ids; attempts stay within bounds
  (SELECT count(*) FROM app_jobs.jobs
    WHERE (locked_by IS NULL) <> (locked_at IS NULL) OR length(locked_by) < 4
       OR attempts < 0),
  -- at most one job of a queue is held
  (SELECT count(*) FROM (SELECT queue_name FROM app_jobs.jobs
                          WHERE queue_name IS NOT NULL AND locked_by IS NOT NULL
                          GROUP BY 1 HAVING count(*) > 1) x)
"""


@DB_SETTINGS
@given(calls=st.lists(CALLS, min_size=1, max_size=12))
def test_worker_calls_with_hostile_arguments_keep_the_bookkeeping_exact(
    db: Connection, calls: list[Any]
) -> None:
    with db.begin() as transaction:
        db.execute(
            pgjobs.add_jobs(
                [
                    JobSpec(task, {"i": i}, queue_name=queue, max_attempts=2)
                    for i, (task, queue) in enumerate(
                        [("a", None), ("a", "q1"), ("b", "q1"), ("b", None), ("zz", "q2")]
                    )
                ]
            )
        )
        try:
            for call in calls:
                if isinstance(call, InvalidArgumentError):
                    continue  # refused before the database: nothing to run
                before = snapshot(db)
                savepoint = db.begin_nested()
                try:
                    db.execute(call).all()
                except PgJobsError:
                    savepoint.rollback()
                    assert snapshot(db) == before
                else:
                    savepoint.commit()
                assert tuple(db.execute(sql(BOOKKEEPING)).one()) == (0, 0, 0)
        finally:
            transaction.rollback()


@DB_SETTINGS
@given(
    identifier=st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=130)),
    job_key=st.one_of(st.none(), st.integers(0, 520).map(lambda n: "k" * n)),
    queue_name=st.one_of(st.none(), st.integers(0, 130).map(lambda n: "q" * n)),
    max_attempts=st.one_of(st.none(), st.integers(-INT32 - 1, INT32)),
    priority=st.one_of(st.none(), st.integers(-INT32 - 1, INT32)),
)  # fmt: skip
def test_sql_add_job_refuses_what_its_checks_refuse_and_names_the_argument(
    db: Connection,
    identifier: str | None,
    job_key: str | None,
    queue_name: str | None,
    max_attempts: int | None,
    priority: int | None,
) -> None:
    """Raw SQL with NULLs meaning the defaults (C4) and no checks in Python: the database's
    own refusals translate to the package's exceptions, and change nothing."""
    broken = {
        "identifier": identifier is None or len(identifier) > 126,
        "job_key": job_key is not None and len(job_key) > 512,
        "queue_name": queue_name is not None and len(queue_name) > 126,
        "max_attempts": max_attempts is not None and max_attempts < 1,
    }
    with db.begin() as transaction:
        before = snapshot(db)
        savepoint = db.begin_nested()
        try:
            row = db.execute(
                sql(
                    "SELECT * FROM app_jobs.add_job(NULL, :identifier, NULL, :job_key,"
                    " :queue_name, NULL, :max_attempts, :priority)"
                ),
                {
                    "identifier": identifier,
                    "job_key": job_key,
                    "queue_name": queue_name,
                    "max_attempts": max_attempts,
                    "priority": priority,
                },
            ).one()
        except DBAPIError as error:
            savepoint.rollback()
            assert snapshot(db) == before
            translated = translate(error)
            assert isinstance(translated, InvalidArgumentError), error
            assert broken[translated.argument], translated
        else:
            savepoint.commit()
            assert not any(broken.values())
            assert (row.max_attempts, row.priority) == (max_attempts or 25, priority or 0)
        finally:
            transaction.rollback()


#: The worker-side SQL functions, called as the reference Node worker and others call them:
#: raw SQL, typed parameters, no checks in Python.
SQL_CALLS = {
    "get_jobs": "SELECT * FROM app_jobs.get_jobs(:w, NULL, :e, :n)",
    "get_job": "SELECT * FROM app_jobs.get_job(:w, NULL, :e)",
    "complete_job": "SELECT * FROM app_jobs.complete_job(:w, :id)",
    "fail_job": "SELECT * FROM app_jobs.fail_job(:w, :id, NULL)",
    "complete_job_batch": "SELECT * FROM app_jobs.complete_job_batch(:w, :ids)",
    "fail_job_batch": "SELECT * FROM app_jobs.fail_job_batch(:w, :ids)",
    "release_jobs": "SELECT app_jobs.release_jobs(:w, :ids)",
    "heartbeat": "SELECT app_jobs.heartbeat(:w, :e)",
    "recover_jobs": "SELECT app_jobs.recover_jobs(:e)",
    "get_scheduled_jobs": "SELECT * FROM app_jobs.get_scheduled_jobs(:w, NULL, :e, :n)",
    "renew_scheduled_jobs": "SELECT * FROM app_jobs.renew_scheduled_jobs(:w, :ids, :e)",
    "release_scheduled_jobs": "SELECT app_jobs.release_scheduled_jobs(:w, :ids)",
    "run_scheduled_job": "SELECT * FROM app_jobs.run_scheduled_job(:id, :e)",
}
SQL_PARAMETER_TYPES: dict[str, Any] = {
    "w": Text,
    "id": BigInteger,
    "ids": ARRAY(BigInteger),
    "e": Interval,
    "n": Integer,
}
SQL_WORKER_IDS = st.one_of(
    st.none(), st.sampled_from([WORKER, "abc", ""]), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
)  # fmt: skip


@DB_SETTINGS
@given(
    function=st.sampled_from(sorted(SQL_CALLS)),
    worker=SQL_WORKER_IDS,
    job_id=st.one_of(st.none(), st.integers(-3, 6), st.integers(-(2**63), 2**63 - 1)),
    ids=st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(-3, 6)), max_size=4)),
    expiry=st.one_of(st.none(), st.timedeltas(timedelta(seconds=1), timedelta(days=400_000))),
    max_jobs=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
)  # fmt: skip
def test_sql_worker_functions_succeed_or_refuse_naming_the_argument(
    db: Connection,
    function: str,
    worker: str | None,
    job_id: int | None,
    ids: list[int | None] | None,
    expiry: timedelta | None,
    max_jobs: int | None,
) -> None:
    """With any worker id, ids, expiry or lease and batch size, each SQL function either
    works or raises an error the package translates into its own exception, naming the
    argument (a refusal changing nothing); nothing raises a bare database error."""
    with db.begin() as transaction:
        db.execute(pgjobs.add_jobs([JobSpec("a", queue_name="q"), JobSpec("b"), JobSpec("c")]))
        db.execute(pgjobs.add_scheduled_job("tick"))
        db.execute(pgjobs.get_jobs(WORKER, max_jobs=2))
        db.execute(pgjobs.get_scheduled_jobs(WORKER))
        before = snapshot(db)
        savepoint = db.begin_nested()
        text_ = SQL_CALLS[function]
        used = [name for name in SQL_PARAMETER_TYPES if re.search(rf":{name}\b", text_)]
        statement = sql(text_).bindparams(
            *(bindparam(name, type_=SQL_PARAMETER_TYPES[name]) for name in used)
        )
        params = {"w": worker, "id": job_id, "ids": ids, "e": expiry, "n": max_jobs}
        try:
            db.execute(statement, {name: params[name] for name in used})
        except DBAPIError as error:
            savepoint.rollback()
            assert snapshot(db) == before
            translated = translate(error)
            assert isinstance(translated, InvalidArgumentError), error.orig
            assert translated.argument in ("worker_id", "max_jobs", "job_expiry"), translated
        else:
            savepoint.commit()
        finally:
            transaction.rollback()


JOB_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # task
        st.integers(-2, 2),  # priority
        st.booleans(),  # due (a day ago) or not (in a day)
        st.sampled_from([None, "q1", "q2"]),  # queue
    ),
    max_size=8,
)


@DB_SETTINGS
@given(
    rows=JOB_ROWS,
    tasks=st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)),
    max_jobs=st.integers(1, 5),
)
def test_get_jobs_then_fail_and_complete_give_the_documented_results(
    db: Connection,
    rows: list[tuple[str, int, bool, str | None]],
    tasks: list[str] | None,
    max_jobs: int,
) -> None:
    """get_jobs takes the due jobs of the listed tasks in (priority, run_at, id) order, at
    most one per queue and at most max_jobs; fail_job pushes a job back by exp(attempts)
    seconds with its message; complete_job deletes it; both free its queue."""
    now = datetime.now(UTC)
    with db.begin() as transaction:
        jobs = []
        for i, (task, priority, due, queue) in enumerate(rows):
            run_at = now - timedelta(days=1, seconds=i) if due else now + timedelta(days=1)
            job = db.execute(
                pgjobs.add_job(task, {"i": i}, queue_name=queue, priority=priority, run_at=run_at)
            ).one()
            jobs.append(job)
        taken = db.execute(pgjobs.get_jobs(WORKER, tasks, max_jobs=max_jobs)).all()
        expected, queues = [], set()
        for job in sorted(jobs, key=lambda j: (j.priority, j.run_at, j.id)):
            if job.run_at > now or (tasks is not None and job.task_identifier not in tasks):
                continue
            if job.queue_name is not None and job.queue_name in queues:
                continue
            queues.add(job.queue_name)
            expected.append(job.id)
        assert [job.id for job in taken] == expected[:max_jobs]
        assert all((job.locked_by, job.attempts) == (WORKER, 1) for job in taken)
        if taken:
            failed = db.execute(pgjobs.fail_job(WORKER, taken[0].id, "boom'); --")).one()
            database_now = db.execute(text("SELECT now()")).scalar_one()
            backoff = failed.run_at - database_now
            assert abs(backoff.total_seconds() - math.exp(1)) < 0.001
            assert (failed.locked_by, failed.last_error) == (None, "boom'); --")
        if len(taken) > 1:
            done = db.execute(pgjobs.complete_job(WORKER, taken[1].id)).one()
            assert done.id == taken[1].id
            assert (
                db.execute(
                    sql("SELECT count(*) FROM app_jobs.jobs WHERE id = :id"), {"id": done.id}
                ).scalar_one()
                == 0
            )
        held = db.execute(
            sql("SELECT count(*) FROM app_jobs.job_queues WHERE locked_by IS NOT NULL")
        ).scalar_one()
        assert held == len([job for job in taken[2:] if job.queue_name is not None])
        transaction.rollback()
