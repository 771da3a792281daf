"""The Python wrappers of the SQL functions, executed by Connection, Session, AsyncConnection
and AsyncSession alike; their argument checks; the translation of the database's errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import sqla_pgjobs as pgjobs
from sqla_pgjobs import (
    AlreadyScheduledError,
    InvalidArgumentError,
    InvalidWorkerIdError,
    JobSpec,
    PgJobsError,
)
from sqla_pgjobs.database import translate_map
from sqla_pgjobs.errors import translate
from sqla_pgjobs.schema import install, render
from tests.helpers import SCHEMA, sql, translated

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL, Engine, Row
    from sqlalchemy.sql import Executable

    Run = Callable[[Executable], list[Row[Any]]]

TENANT = uuid.UUID("5b720132-17d5-424d-9bcb-ee7b17c13d43")


@pytest.fixture(params=["connection", "session", "async_connection", "async_session"])
def run(request: pytest.FixtureRequest, database_url: URL) -> Iterator[Run]:
    """Execute a statement in a transaction of its own and return its rows, through each of
    the four ways SQLAlchemy executes statements."""
    kind: str = request.param
    if kind.startswith("async"):
        runner = asyncio.Runner()
        async_engine = create_async_engine(
            database_url, execution_options={"schema_translate_map": translate_map(SCHEMA)}
        )

        async def execute(statement: Executable) -> list[Row[Any]]:
            if kind == "async_connection":
                async with async_engine.begin() as connection:
                    return list((await connection.execute(statement)).all())
            async with AsyncSession(async_engine) as session, session.begin():
                return list((await session.execute(statement)).all())

        yield lambda statement: runner.run(execute(statement))
        runner.run(async_engine.dispose())
        runner.close()
        return

    sync_engine = translated(create_engine(database_url))

    def execute_sync(statement: Executable) -> list[Row[Any]]:
        if kind == "connection":
            with sync_engine.begin() as connection:
                return list(connection.execute(statement).all())
        with Session(sync_engine) as session, session.begin():
            return list(session.execute(statement).all())

    yield execute_sync
    sync_engine.dispose()


def count_jobs(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one())


# --- Every wrapper, through every executor ---------------------------------------------------


def test_enqueue_and_take_return_typed_rows(run: Run) -> None:
    [job] = run(pgjobs.add_job("send_email", {"to": "a@b.c"}, db_id=str(TENANT), priority=2))
    assert isinstance(job.id, int)
    assert job.task_identifier == "send_email"
    assert job.payload == {"to": "a@b.c"}
    assert job.database_id == TENANT
    assert isinstance(job.run_at, datetime) and job.run_at.tzinfo is not None
    assert (job.priority, job.attempts, job.max_attempts) == (2, 0, 25)

    later = datetime.now(UTC) + timedelta(hours=1)
    [delayed] = run(pgjobs.add_job("report", [1, "two"], run_at=later, job_key="k", max_attempts=3))
    assert (delayed.payload, delayed.key, delayed.max_attempts) == ([1, "two"], "k", 3)
    assert delayed.run_at == later

    [taken] = run(pgjobs.get_job("worker-1", ["send_email", "report"]))
    assert (taken.id, taken.attempts, taken.locked_by) == (job.id, 1, "worker-1")
    assert run(pgjobs.get_job("worker-1")) == []  # nothing due: no row, not a row of NULLs
    [done] = run(pgjobs.complete_job("worker-1", job.id))
    assert done.id == job.id
    assert run(pgjobs.complete_job("worker-1", job.id)) == []


def test_batches_and_bulk_enqueue(run: Run) -> None:
    created = run(
        pgjobs.add_jobs(
            [
                JobSpec("a", {"i": 0}),
                {"identifier": "a", "payload": {"i": 1}, "priority": -1},
                JobSpec("b", queue_name="q"),
                {"identifier": "a", "job_key": "unique-a"},
            ]
        )
    )
    assert [row.task_identifier for row in created] == ["a", "a", "b", "a"]
    taken = run(pgjobs.get_jobs("worker-1", ["a", "b"], max_jobs=3, job_expiry=timedelta(hours=1)))
    assert [row.payload for row in taken] == [{"i": 1}, {"i": 0}, {}]
    done = run(pgjobs.complete_job_batch("worker-1", [taken[0].id]))
    assert [row.id for row in done] == [taken[0].id]
    failed = run(pgjobs.fail_job_batch("worker-1", [taken[1].id], ["boom"]))
    assert [(row.id, row.last_error) for row in failed] == [(taken[1].id, "boom")]
    [failed_one] = run(pgjobs.fail_job("worker-1", taken[2].id))
    assert failed_one.last_error == "job failed without an error message"
    [unlocked] = run(pgjobs.add_jobs([JobSpec("c")]))
    [held] = run(pgjobs.get_jobs("worker-1", ["c"]))
    run(pgjobs.release_jobs("worker-1"))
    [again] = run(pgjobs.get_jobs("worker-2", ["c"]))
    assert held.id == again.id == unlocked.id and again.attempts == 1  # the attempt came back
    assert run(pgjobs.add_jobs([])) == []


def test_worker_bookkeeping_wrappers(run: Run) -> None:
    assert run(pgjobs.heartbeat("worker-1", timedelta(seconds=20), {"pid": 1})) == [(False,)]
    assert run(pgjobs.heartbeat("worker-1")) == [(True,)]
    assert run(pgjobs.next_run_at()) == [(None,)]
    later = datetime.now(UTC) + timedelta(minutes=5)
    run(pgjobs.add_jobs([JobSpec("a", run_at=later), JobSpec("b")]))
    [(next_at,)] = run(pgjobs.next_run_at(["a"]))
    assert next_at == later
    [first, second] = run(pgjobs.get_jobs("worker-1", ["b"], max_jobs=2)) + run(
        pgjobs.add_jobs([JobSpec("b")])
    )
    run(pgjobs.get_jobs("worker-1", ["b"]))
    run(pgjobs.release_jobs("worker-1", keep_job_ids=[first.id]))
    [again] = run(pgjobs.get_jobs("worker-2", ["b"]))
    assert again.id == second.id
    run(pgjobs.recover_jobs(job_expiry=timedelta(hours=1)))


def test_admin_wrappers(run: Run) -> None:
    created = run(pgjobs.add_jobs([JobSpec("a"), JobSpec("b"), JobSpec("c")]))
    ids = [row.id for row in created]
    [moved] = run(pgjobs.reschedule_jobs([ids[0]], priority=5, attempts=0, max_attempts=9))
    assert (moved.priority, moved.max_attempts) == (5, 9)
    [dead] = run(pgjobs.permanently_fail_jobs([ids[1]], "not needed"))
    assert (dead.attempts, dead.last_error) == (dead.max_attempts, "not needed")
    gone = run(pgjobs.complete_jobs(ids, job_expiry=timedelta(minutes=5)))
    assert sorted(row.id for row in gone) == ids


def test_scheduled_job_wrappers(run: Run) -> None:
    [schedule] = run(
        pgjobs.add_scheduled_job("cleanup", {"days": 7}, "0 2 * * *", job_key="nightly")
    )
    assert (schedule.schedule_info, schedule.payload, schedule.key) == (
        "0 2 * * *",
        {"days": 7},
        "nightly",
    )
    [claimed] = run(pgjobs.get_scheduled_job("scheduler-1", lease=timedelta(seconds=30)))
    assert claimed.id == schedule.id and claimed.locked_by == "scheduler-1"
    assert run(pgjobs.get_scheduled_jobs("scheduler-2", max_jobs=5)) == []
    [renewed] = run(
        pgjobs.renew_scheduled_jobs("scheduler-1", [schedule.id], lease=timedelta(minutes=1))
    )
    assert renewed.lease_expires_at > claimed.lease_expires_at
    fire = datetime.now(UTC).replace(microsecond=0)
    [job] = run(pgjobs.run_scheduled_job(schedule.id, fire_time=fire))
    assert (job.task_identifier, job.payload) == ("cleanup", {"days": 7})
    with pytest.raises(AlreadyScheduledError, match="ALREADY_SCHEDULED") as info:
        run(pgjobs.run_scheduled_job(schedule.id, fire_time=fire))
    assert isinstance(info.value.__cause__, DBAPIError)
    assert run(pgjobs.run_scheduled_job(10**12)) == []  # a schedule that is gone: no row
    run(pgjobs.release_scheduled_jobs("scheduler-1"))
    [again] = run(pgjobs.get_scheduled_jobs("scheduler-2", ["cleanup"], max_jobs=5))
    assert again.id == schedule.id


def test_add_jobs_from_a_select_enqueues_inside_the_database(run: Run, jobs_engine: Engine) -> None:
    metadata = MetaData()
    orders = Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("status", Text),
        Column("details", JSONB),
    )
    metadata.create_all(jobs_engine)
    with jobs_engine.begin() as connection:
        connection.execute(
            orders.insert(),
            [
                {"id": i, "status": "paid" if i % 2 else "new", "details": {"n": i}}
                for i in range(1, 7)
            ],
        )
    created = run(
        pgjobs.add_jobs(
            select(
                literal("ship").label("identifier"),
                func.json_build_object("order_id", orders.c.id).label("payload"),
                (orders.c.id * -1).label("priority"),
                orders.c.details.op("->>")("n").label("job_key"),
            ).where(orders.c.status == "paid")
        )
    )
    assert sorted((row.payload["order_id"], row.priority, row.key) for row in created) == [
        (1, -1, "1"),
        (3, -3, "3"),
        (5, -5, "5"),
    ]
    jsonb_payloads = run(
        pgjobs.add_jobs(select(literal("x").label("identifier"), orders.c.details.label("payload")))
    )
    assert sorted(row.payload["n"] for row in jsonb_payloads) == list(range(1, 7))


def test_add_jobs_enqueues_ten_thousand_in_one_statement(jobs_engine: Engine) -> None:
    statement = pgjobs.add_jobs(JobSpec("bulk", {"i": i}) for i in range(10_000))
    statements: list[str] = []
    with jobs_engine.begin() as connection:
        event.listen(connection, "before_cursor_execute", lambda *args: statements.append(args[2]))
        rows = connection.execute(statement).all()
    assert len(rows) == 10_000
    assert len(statements) == 1
    assert count_jobs(jobs_engine) == 10_000


def test_add_job_returning_id_returns_the_id_only(run: Run, jobs_engine: Engine) -> None:
    [row] = run(pgjobs.add_job("send_email", {"to": "a@b.c"}, job_key="k", returning="id"))
    assert list(row._mapping) == ["id"]
    [again] = run(pgjobs.add_job("send_email", {"to": "b@c.d"}, job_key="k", returning="id"))
    assert again.id == row.id  # the same keyed job, updated
    with jobs_engine.connect() as connection:
        payload = connection.execute(sql("SELECT payload FROM app_jobs.jobs")).scalar_one()
    assert payload == {"to": "b@c.d"}


def test_add_jobs_without_returning_counts_the_jobs_added(run: Run, jobs_engine: Engine) -> None:
    [row] = run(
        pgjobs.add_jobs(
            [JobSpec("bulk", {"i": i}, priority=i % 3) for i in range(500)], returning=False
        )
    )
    assert row._asdict() == {"added": 500}
    [keyed] = run(
        pgjobs.add_jobs(
            [JobSpec("bulk", job_key="k"), JobSpec("bulk", job_key="k")], returning=False
        )
    )
    assert keyed.added == 2  # the second replaced the first, as add_job does
    [selected] = run(
        pgjobs.add_jobs(select(literal("from_select").label("identifier")), returning=False)
    )
    assert selected.added == 1
    assert count_jobs(jobs_engine) == 500 + 1 + 1


def test_enqueue_belongs_to_the_callers_transaction(jobs_engine: Engine) -> None:
    """The headline promise: a job exists exactly when the data that caused it does."""
    metadata = MetaData()
    orders = Table("orders", metadata, Column("id", Integer, primary_key=True))
    metadata.create_all(jobs_engine)
    with Session(jobs_engine) as session:
        session.execute(orders.insert().values(id=1))
        session.execute(pgjobs.add_job("send_receipt", {"order_id": 1}))
        session.rollback()
        assert count_jobs(jobs_engine) == 0
        session.execute(orders.insert().values(id=1))
        session.execute(pgjobs.add_job("send_receipt", {"order_id": 1}))
        assert count_jobs(jobs_engine) == 0  # not visible before commit
        session.commit()
    assert count_jobs(jobs_engine) == 1


def test_wrappers_follow_schema_translate_map_to_another_schema(engine: Engine) -> None:
    other = 'Tenant\'s "Jobs"'
    with engine.begin() as connection:
        install(connection, other)
    assert "FROM app_jobs.add_job(" in str(pgjobs.add_job("x"))
    mapped = engine.execution_options(schema_translate_map={"app_jobs": other})
    with mapped.begin() as connection:
        created = connection.execute(pgjobs.add_job("elsewhere")).one()
        taken = connection.execute(pgjobs.get_job("worker-1")).one()
        assert taken.id == created.id
    with engine.connect() as connection:
        in_other = (
            connection.execute(text(render("SELECT task_identifier FROM app_jobs.jobs", other)))
            .scalars()
            .all()
        )
        assert in_other == ["elsewhere"]
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one() == 0


def test_statements_are_independent(jobs_engine: Engine) -> None:
    first, second = pgjobs.add_job("one", {"n": 1}), pgjobs.add_job("two", {"n": 2})
    with jobs_engine.begin() as connection:
        rows = [connection.execute(s).one() for s in (second, first, second)]
    assert [(row.task_identifier, row.payload) for row in rows] == [
        ("two", {"n": 2}),
        ("one", {"n": 1}),
        ("two", {"n": 2}),
    ]


# --- Bad input: refused before the database, naming the value and the rule ----------------------

NAIVE = datetime(2026, 1, 1, 12, 0)
BAD_CALLS: list[tuple[str, Callable[[], object], str, str]] = [
    ("empty task name", lambda: pgjobs.add_job(""), "identifier", "1 to 126 characters"),
    ("task name too long", lambda: pgjobs.add_job("t" * 127), "identifier", "1 to 126 characters"),
    ("task name not a str", lambda: pgjobs.add_job(42), "identifier", "must be a str"),  # type: ignore[arg-type]
    ("NUL in task name", lambda: pgjobs.add_job("a\x00b"), "identifier", "NUL"),
    (
        "payload not JSON",
        lambda: pgjobs.add_job("t", {"when": NAIVE}),
        "payload",
        "JSON-serializable",
    ),
    (
        "payload with NaN",
        lambda: pgjobs.add_job("t", {"x": float("nan")}),
        "payload",
        "JSON-serializable",
    ),
    ("payload with a set", lambda: pgjobs.add_job("t", {1, 2}), "payload", "JSON-serializable"),
    ("key too long", lambda: pgjobs.add_job("t", job_key="k" * 513), "job_key", "512 characters"),
    ("empty key", lambda: pgjobs.add_job("t", job_key=""), "job_key", "512 characters"),
    ("queue name too long", lambda: pgjobs.add_job("t", queue_name="q" * 127), "queue_name", "126"),
    ("max_attempts zero", lambda: pgjobs.add_job("t", max_attempts=0), "max_attempts", "from 1"),
    ("max_attempts bool", lambda: pgjobs.add_job("t", max_attempts=True), "max_attempts", "from 1"),
    ("priority too big", lambda: pgjobs.add_job("t", priority=2**31), "priority", "integer from"),
    ("naive run_at", lambda: pgjobs.add_job("t", run_at=NAIVE), "run_at", "time zone"),
    ("run_at not a datetime", lambda: pgjobs.add_job("t", run_at="tomorrow"), "run_at", "datetime"),  # type: ignore[arg-type]
    ("bad tenant", lambda: pgjobs.add_job("t", db_id="tenant-a"), "db_id", "UUID"),
    ("worker id too short", lambda: pgjobs.get_job("abc"), "worker_id", "at least 4"),
    ("worker id None", lambda: pgjobs.get_jobs(None), "worker_id", "at least 4"),  # type: ignore[arg-type]
    (
        "task filter a str",
        lambda: pgjobs.get_job("worker-1", "send_email"),
        "task_identifiers",
        "list",
    ),
    (
        "empty name in filter",
        lambda: pgjobs.get_job("worker-1", ["a", ""]),
        "task_identifiers[1]",
        "1 to 126",
    ),
    ("max_jobs zero", lambda: pgjobs.get_jobs("worker-1", max_jobs=0), "max_jobs", "from 1"),
    (
        "negative expiry",
        lambda: pgjobs.get_job("worker-1", job_expiry=timedelta(-1)),
        "job_expiry",
        "positive",
    ),
    (
        "expiry in seconds",
        lambda: pgjobs.get_job("worker-1", job_expiry=30),
        "job_expiry",
        "timedelta",
    ),  # type: ignore[arg-type]
    ("job id not int", lambda: pgjobs.complete_job("worker-1", "7"), "job_id", "64-bit"),  # type: ignore[arg-type]
    ("job id too big", lambda: pgjobs.complete_job("worker-1", 2**63), "job_id", "64-bit"),
    ("ids a str", lambda: pgjobs.complete_job_batch("worker-1", "12"), "job_ids", "iterable"),  # type: ignore[arg-type]
    (
        "bad id in batch",
        lambda: pgjobs.complete_job_batch("worker-1", [1, None]),
        "job_ids[1]",
        "64-bit",
    ),  # type: ignore[list-item]
    (
        "messages mismatch",
        lambda: pgjobs.fail_job_batch("worker-1", [1, 2], ["x"]),
        "error_messages",
        "one message per job id",
    ),
    (
        "NUL in error message",
        lambda: pgjobs.fail_job("worker-1", 1, "a\x00"),
        "error_message",
        "NUL",
    ),
    ("negative attempts", lambda: pgjobs.reschedule_jobs([1], attempts=-1), "attempts", "from 0"),
    (
        "naive fire time",
        lambda: pgjobs.run_scheduled_job(1, fire_time=NAIVE),
        "fire_time",
        "time zone",
    ),
    (
        "lease zero",
        lambda: pgjobs.get_scheduled_job("sched-1", lease=timedelta(0)),
        "lease",
        "positive",
    ),
    (
        "schedule_info not JSON",
        lambda: pgjobs.add_scheduled_job("t", None, {"at": NAIVE}),
        "schedule_info",
        "JSON",
    ),
    (
        "cron minute out of range",
        lambda: pgjobs.add_scheduled_job("t", None, "61 * * * *"),
        "schedule_info",
        "minute",
    ),
    (
        "rule that never fires",
        lambda: pgjobs.add_scheduled_job("t", None, {"month": 1, "date": 31}),
        "schedule_info",
        "never",
    ),
    (
        "unknown time zone",
        lambda: pgjobs.add_scheduled_job("t", None, {"tz": "Mars/Olympus"}),
        "schedule_info",
        "Mars/Olympus",
    ),
    (
        "unknown returning",
        lambda: pgjobs.add_job("t", returning="row"),  # type: ignore[arg-type]
        "returning",
        "'job' or 'id'",
    ),
    (
        "bulk element bad payload",
        lambda: pgjobs.add_jobs([JobSpec("a"), JobSpec("b", {2, 3})]),
        "jobs[1].payload",
        "JSON",
    ),
    (
        "bulk element unknown key",
        lambda: pgjobs.add_jobs([{"identifier": "a", "when": 1}]),
        "jobs[0]",
        "keys must be among",
    ),
    ("bulk element no task", lambda: pgjobs.add_jobs([{"payload": {}}]), "jobs[0]", "identifier"),
    ("bulk element not a spec", lambda: pgjobs.add_jobs(["a"]), "jobs[0]", "JobSpec or a mapping"),  # type: ignore[list-item]
    (
        "select without identifier",
        lambda: pgjobs.add_jobs(select(literal(1).label("payload"))),
        "jobs",
        "labelled identifier",
    ),
    (
        "select with unknown column",
        lambda: pgjobs.add_jobs(select(literal("a").label("identifier"), literal(1).label("x"))),
        "jobs",
        "unknown: x",
    ),
    (
        "unknown access level",
        lambda: pgjobs.grant_access("app", "admin"),
        "access",
        "read, enqueue, worker, operator",
    ),
]


@pytest.mark.parametrize(
    ("call", "argument", "rule"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
def test_bad_input_is_refused_before_the_database(
    call: Callable[[], object], argument: str, rule: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        call()
    error = info.value
    assert isinstance(error, PgJobsError) and isinstance(error, ValueError)
    assert error.argument == argument
    assert rule in str(error)
    assert str(error).startswith(f"{argument} ")
    if not argument.startswith("jobs") or "." in argument:
        shown = (repr(error.value), json.dumps(error.value, ensure_ascii=False, default=str))
        assert any(form in str(error) for form in shown)


def test_worker_id_errors_have_their_own_class() -> None:
    with pytest.raises(InvalidWorkerIdError, match="worker_id 'abc' is not allowed"):
        pgjobs.complete_job("abc", 1)


# --- Refusals by the database arrive as the package's exceptions --------------------------------


@pytest.mark.parametrize(
    ("statement", "expected", "argument"),
    [
        ("SELECT * FROM app_jobs.get_job('abc')", InvalidWorkerIdError, "worker_id"),
        (
            "SELECT * FROM app_jobs.get_jobs('worker-1', NULL, NULL, 0)",
            InvalidArgumentError,
            "max_jobs",
        ),
        (
            "INSERT INTO app_jobs.jobs (task_identifier, max_attempts) VALUES ('t', 0)",
            InvalidArgumentError,
            "max_attempts",
        ),
        (
            "INSERT INTO app_jobs.jobs (task_identifier) VALUES (repeat('t', 127))",
            InvalidArgumentError,
            "identifier",
        ),
        (
            "SELECT * FROM app_jobs.add_jobs(ARRAY['a'], ARRAY['{}', '{}']::json[])",
            InvalidArgumentError,
            "payloads",
        ),
    ],
)
def test_database_errors_translate_by_sqlstate_and_constraint(
    jobs_engine: Engine, statement: str, expected: type[InvalidArgumentError], argument: str
) -> None:
    with pytest.raises(DBAPIError) as info, jobs_engine.begin() as connection:
        connection.execute(sql(statement))
    translated = translate(info.value)
    assert type(translated) is expected
    assert isinstance(translated, InvalidArgumentError) and translated.argument == argument


def test_unrelated_errors_are_not_translated(jobs_engine: Engine) -> None:
    with pytest.raises(DBAPIError) as info, jobs_engine.connect() as connection:
        connection.execute(text("SELECT 1/0"))
    assert translate(info.value) is None


def test_database_refusal_through_a_wrapper_changes_nothing(jobs_engine: Engine) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        with Session(jobs_engine) as session, session.begin():
            session.execute(pgjobs.add_job("before"))
            session.execute(pgjobs.grant_access(f"no_such_role_{uuid.uuid4().hex[:6]}", "worker"))
    assert info.value.argument == "role_name"
    assert "does not exist" in str(info.value)
    assert count_jobs(jobs_engine) == 0
