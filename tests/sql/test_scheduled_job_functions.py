"""The scheduled-job SQL functions on a real PostgreSQL: registering schedules, leases, firing.

Covers SPEC section 2 for ``add_scheduled_job``, ``get_scheduled_job(s)``,
``renew_scheduled_jobs``, ``release_scheduled_jobs`` and ``run_scheduled_job``, including the
fixes C4, C5, C6, C7, C12 and S4, and the call shapes of the seed's Node scheduler.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from sqla_pgjobs import database
from tests.helpers import raw, sql, wait_for

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

TENANT_A = uuid.UUID("5b720132-17d5-424d-9bcb-ee7b17c13d43")
TENANT_B = uuid.UUID("0e3a8a5c-4c1f-4a43-9d5e-2f1d6c1e9b77")


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def rows(engine: Engine, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Run one statement (written with ``app_jobs``) in its own transaction; rows as dicts."""
    with engine.begin() as connection:
        result = connection.execute(sql(statement), params)
        return [dict(row._mapping) for row in result] if result.returns_rows else []


def one(engine: Engine, statement: str, **params: Any) -> dict[str, Any]:
    found = rows(engine, statement, **params)
    assert len(found) == 1, found
    return found[0]


def pg_error(engine: Engine, statement: str, **params: Any) -> psycopg.Error:
    """The driver error a statement raises (its transaction is rolled back)."""
    with pytest.raises(DBAPIError) as info, engine.begin() as connection:
        connection.execute(sql(statement), params)
    error = info.value.orig
    assert isinstance(error, psycopg.Error)
    return error


def assert_raised(error: psycopg.Error, sqlstate: str, message: str | None = None) -> None:
    assert error.sqlstate == sqlstate, error
    if message is not None:
        assert error.diag.message_primary == message, error


def schedule(engine: Engine, identifier: str = "cron_task", **options: Any) -> dict[str, Any]:
    """add_scheduled_job with named arguments (tenant ``db_id`` defaults to none)."""
    options.setdefault("db_id", None)
    arguments = ", ".join(f"{name} => :{name}" for name in options if name != "db_id")
    statement = (
        "SELECT * FROM app_jobs.add_scheduled_job(CAST(:db_id AS uuid), :identifier"
        + (f", {arguments}" if arguments else "")
        + ")"
    )
    return one(engine, statement, identifier=identifier, **options)


def schedule_row(engine: Engine, schedule_id: int) -> dict[str, Any]:
    return one(engine, "SELECT * FROM app_jobs.scheduled_jobs WHERE id = :id", id=schedule_id)


def job_row(engine: Engine, job_id: int) -> dict[str, Any] | None:
    found = rows(engine, "SELECT * FROM app_jobs.jobs WHERE id = :id", id=job_id)
    return found[0] if found else None


def all_jobs(engine: Engine) -> list[dict[str, Any]]:
    return rows(engine, "SELECT * FROM app_jobs.jobs ORDER BY id")


def run(engine: Engine, schedule_id: int, fire_time: datetime | None = None) -> dict[str, Any]:
    return one(
        engine,
        "SELECT * FROM app_jobs.run_scheduled_job(:id, NULL, :fire_time)",
        id=schedule_id,
        fire_time=fire_time,
    )


def run_error(engine: Engine, schedule_id: int, fire_time: datetime | None = None) -> psycopg.Error:
    return pg_error(
        engine,
        "SELECT * FROM app_jobs.run_scheduled_job(:id, NULL, :fire_time)",
        id=schedule_id,
        fire_time=fire_time,
    )


def assert_already_scheduled(error: psycopg.Error) -> None:
    assert_raised(error, "P0001", "ALREADY_SCHEDULED")


def age_last_fire(engine: Engine, schedule_id: int) -> None:
    """Move the schedule's last fire a minute back, so that only the state of the previous
    job decides whether the next fire may run. (Schema version 1 also refused a call without
    fire_time within 500 ms of the last fire; version 2 does not: tests/sql/test_schema_v2.py.)"""
    rows(
        engine,
        "UPDATE app_jobs.scheduled_jobs SET last_scheduled = last_scheduled - interval '1 minute'"
        " WHERE id = :id",
        id=schedule_id,
    )


def take_job(engine: Engine, worker: str = "worker-1") -> dict[str, Any]:
    job = one(engine, "SELECT * FROM app_jobs.get_job(:w)", w=worker)
    assert job["id"] is not None
    return job


def claim(engine: Engine, worker: str, **extra: Any) -> dict[str, Any]:
    """get_scheduled_job, with the transaction's now() alongside the row."""
    return one(
        engine,
        "SELECT s.*, now() AS now FROM app_jobs.get_scheduled_job(:w) s",
        w=worker,
        **extra,
    )


@pytest.fixture
def libpq_url(engine: Engine) -> str:
    return database.libpq_url(engine)


# ------------------------------------------------------------------------------------------
# The seed README and add_scheduled_job
# ------------------------------------------------------------------------------------------


def test_seed_readme_direct_insert_then_run_scheduled_job_creates_a_copy(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sql(
                "INSERT INTO app_jobs.scheduled_jobs (database_id, task_identifier, schedule_info)"
                " VALUES ('5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid, 'cleanup_task',"
                ' \'{"hour": [2], "minute": [0]}\'::json)'
            )
        )
        job = dict(
            connection.execute(sql("SELECT * FROM app_jobs.run_scheduled_job(1)")).one()._mapping
        )

    scheduled = schedule_row(engine, 1)
    assert scheduled["schedule_info"] == {"hour": [2], "minute": [0]}
    # A direct insert gets the column default: a queue of its own, named by a random uuid.
    assert uuid.UUID(scheduled["queue_name"])
    assert job["id"] is not None
    for column in ("task_identifier", "payload", "priority", "max_attempts", "queue_name"):
        assert job[column] == scheduled[column], column
    assert job["database_id"] == TENANT_A
    assert (job["task_identifier"], job["payload"], job["priority"], job["max_attempts"]) == (
        "cleanup_task",
        {},
        0,
        25,
    )
    assert job["attempts"] == 0
    assert job["locked_at"] is None
    assert scheduled["last_scheduled_id"] == job["id"]
    assert scheduled["last_scheduled"] is not None
    assert [j["id"] for j in all_jobs(engine)] == [job["id"]]
    queue = one(
        engine,
        "SELECT job_count FROM app_jobs.job_queues WHERE queue_name = :q",
        q=scheduled["queue_name"],
    )
    assert queue["job_count"] == 1


def test_add_scheduled_job_defaults(engine: Engine) -> None:
    row = one(engine, "SELECT * FROM app_jobs.add_scheduled_job(NULL, 'cron_task')")
    assert row["id"] is not None
    assert row == schedule_row(engine, row["id"])
    assert row["task_identifier"] == "cron_task"
    assert row["payload"] == {}
    assert row["schedule_info"] == {}
    assert row["max_attempts"] == 25
    assert row["priority"] == 0
    assert row["queue_name"] is None  # not the random uuid of a direct insert
    assert row["database_id"] is None
    assert row["key"] is None
    assert row["locked_at"] is None
    assert row["locked_by"] is None
    assert row["last_scheduled"] is None
    assert row["last_scheduled_id"] is None


@pytest.mark.parametrize("job_key", [None, "nightly"])
def test_c4_null_arguments_of_add_scheduled_job_mean_defaults(
    engine: Engine, job_key: str | None
) -> None:
    statement = (
        "SELECT * FROM app_jobs.add_scheduled_job(CAST(:db AS uuid), 'cron_task', NULL, NULL,"
        " :key, NULL, NULL, NULL)"
    )
    first = one(engine, statement, db=TENANT_A, key=job_key)
    assert (first["payload"], first["schedule_info"]) == ({}, {})
    assert (first["max_attempts"], first["priority"], first["queue_name"]) == (25, 0, None)
    assert first["key"] == job_key
    assert first["database_id"] == TENANT_A
    if job_key is not None:
        # The keyed update path: NULLs also mean the defaults, not "keep" and not a violation.
        schedule(
            engine,
            db_id=TENANT_A,
            payload='{"x": 1}',
            schedule_info='{"minute": [5]}',
            job_key=job_key,
            max_attempts=3,
            priority=7,
        )
        again = one(engine, statement, db=TENANT_A, key=job_key)
        assert again["id"] == first["id"]
        assert (again["payload"], again["schedule_info"]) == ({}, {})
        assert (again["max_attempts"], again["priority"]) == (25, 0)
    assert len(rows(engine, "SELECT id FROM app_jobs.scheduled_jobs")) == 1


def test_add_scheduled_job_notifies_scheduled_jobs_insert_on_commit(
    engine: Engine, libpq_url: str
) -> None:
    def received(listener: psycopg.Connection[Any]) -> list[tuple[str, str]]:
        return [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=1)]

    with psycopg.connect(libpq_url, autocommit=True) as listener:
        listener.execute('LISTEN "scheduled_jobs:insert"')
        with engine.begin() as connection:
            connection.execute(sql("SELECT app_jobs.add_scheduled_job(NULL, 'cron_task')"))
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        assert received(listener) == [("scheduled_jobs:insert", "")]
        # A keyed schedule replaced while claimed is a new row: schedulers hear of it too.
        keyed = schedule(engine, job_key="nightly")
        assert received(listener) == [("scheduled_jobs:insert", "")]
        everything = "SELECT id FROM app_jobs.get_scheduled_jobs('sched-1', max_jobs => 9)"
        claimed = rows(engine, everything)
        assert {"id": keyed["id"]} in claimed
        assert schedule(engine, job_key="nightly")["id"] != keyed["id"]
        assert received(listener) == [("scheduled_jobs:insert", "")]


# ------------------------------------------------------------------------------------------
# C5 and S4: job keys of schedules
# ------------------------------------------------------------------------------------------


LEASE = ("locked_by", "locked_at", "lease_expires_at")


def keyed_rows(engine: Engine, key: str) -> list[dict[str, Any]]:
    return rows(engine, "SELECT * FROM app_jobs.scheduled_jobs WHERE key = :k ORDER BY id", k=key)


def test_c5_keyed_schedule_is_updated_in_place_while_unclaimed(engine: Engine) -> None:
    first = schedule(engine, "report", job_key="daily-report", schedule_info='{"hour": [1]}')
    second = schedule(
        engine,
        "report_v2",
        job_key="daily-report",
        payload='{"format": "pdf"}',
        schedule_info='{"hour": [3]}',
        queue_name="reports",
        max_attempts=4,
        priority=2,
    )
    assert second["id"] == first["id"]
    assert keyed_rows(engine, "daily-report") == [second]
    assert (second["task_identifier"], second["payload"], second["schedule_info"]) == (
        "report_v2",
        {"format": "pdf"},
        {"hour": [3]},
    )
    assert (second["queue_name"], second["max_attempts"], second["priority"]) == ("reports", 4, 2)
    assert len(rows(engine, "SELECT id FROM app_jobs.scheduled_jobs")) == 1


def test_c5_keyed_schedule_survives_while_claimed(engine: Engine) -> None:
    first = schedule(engine, "report", job_key="daily-report", schedule_info='{"hour": [1]}')
    assert claim(engine, "sched-1")["id"] == first["id"]
    job = run(engine, first["id"])
    before = schedule_row(engine, first["id"])
    assert before["last_scheduled_id"] == job["id"]

    # Claimed: the row is replaced by a new, unclaimed one that keeps the key and bookkeeping.
    second = schedule(engine, "report", job_key="daily-report", schedule_info='{"hour": [2]}')
    assert second["id"] != first["id"]
    assert keyed_rows(engine, "daily-report") == [second]
    assert second["schedule_info"] == {"hour": [2]}
    assert second["locked_by"] is None
    assert second["locked_at"] is None
    assert second["last_scheduled"] == before["last_scheduled"]
    assert second["last_scheduled_id"] == job["id"]
    # The old holder learns that its schedule is gone: renewal drops it, and firing the old
    # id gives the NULL row (the Node scheduler then cancels its timer).
    assert rows(engine, "SELECT * FROM app_jobs.renew_scheduled_jobs('sched-1')") == []
    assert run(engine, first["id"])["id"] is None
    # The kept bookkeeping still guards the next fire: the previous job is pending.
    age_last_fire(engine, second["id"])
    assert_already_scheduled(run_error(engine, second["id"]))

    # A third call, unclaimed: in place; a fourth, claimed by another scheduler: replaced.
    third = schedule(engine, "report", job_key="daily-report", schedule_info='{"hour": [3]}')
    assert third["id"] == second["id"]
    assert claim(engine, "sched-2")["id"] == third["id"]
    fourth = schedule(engine, "report", job_key="daily-report", schedule_info='{"hour": [4]}')
    assert fourth["id"] != third["id"]
    assert keyed_rows(engine, "daily-report") == [fourth]
    assert fourth["last_scheduled_id"] == job["id"]
    assert len(rows(engine, "SELECT id FROM app_jobs.scheduled_jobs")) == 1


def test_s4_schedule_keys_are_per_tenant(engine: Engine) -> None:
    a = schedule(engine, "a_task", db_id=TENANT_A, job_key="shared", payload='{"t": "a"}')
    assert claim(engine, "sched-1")["id"] == a["id"]
    b = schedule(engine, "b_task", db_id=TENANT_B, job_key="shared", payload='{"t": "b"}')
    assert b["id"] != a["id"]
    assert b["database_id"] == TENANT_B
    # A's schedule is untouched: same definition, still claimed, still A's.
    a_now = schedule_row(engine, a["id"])
    assert {k: v for k, v in a_now.items() if k not in LEASE} == {
        k: v for k, v in a.items() if k not in LEASE
    }
    assert a_now["locked_by"] == "sched-1"
    # B again: B's own row is updated, A's still untouched.
    b2 = schedule(engine, "b_task", db_id=TENANT_B, job_key="shared", payload='{"t": "b2"}')
    assert b2["id"] == b["id"]
    assert schedule_row(engine, a["id"])["payload"] == {"t": "a"}
    # No tenant counts as one tenant of its own: two calls, one row.
    n1 = schedule(engine, "n_task", job_key="shared", payload='{"t": "n1"}')
    n2 = schedule(engine, "n_task", job_key="shared", payload='{"t": "n2"}')
    assert n2["id"] == n1["id"]
    assert n1["id"] not in (a["id"], b["id"])
    tenants = rows(
        engine,
        "SELECT database_id, payload FROM app_jobs.scheduled_jobs WHERE key = 'shared' ORDER BY id",
    )
    assert tenants == [
        {"database_id": TENANT_A, "payload": {"t": "a"}},
        {"database_id": TENANT_B, "payload": {"t": "b2"}},
        {"database_id": None, "payload": {"t": "n2"}},
    ]


# ------------------------------------------------------------------------------------------
# C7: claims are leases
# ------------------------------------------------------------------------------------------


def test_c7_get_scheduled_job_claims_in_priority_id_order_with_a_lease(engine: Engine) -> None:
    late = schedule(engine, "t", priority=5)["id"]
    first_of_zero = schedule(engine, "t", priority=0)["id"]
    second_of_zero = schedule(engine, "t", priority=0)["id"]
    urgent = schedule(engine, "t", priority=-1)["id"]

    claimed = claim(engine, "sched-1")
    assert claimed["id"] == urgent
    assert claimed["locked_by"] == "sched-1"
    assert claimed["locked_at"] == claimed["now"]
    assert claimed["lease_expires_at"] == claimed["now"] + timedelta(minutes=5)
    stored = schedule_row(engine, urgent)
    assert (stored["locked_by"], stored["locked_at"], stored["lease_expires_at"]) == (
        "sched-1",
        claimed["now"],
        claimed["now"] + timedelta(minutes=5),
    )

    # Another scheduler gets the next one, not the claimed one.
    assert claim(engine, "sched-2")["id"] == first_of_zero
    assert claim(engine, "sched-1")["id"] == second_of_zero
    custom = one(
        engine,
        "SELECT s.*, now() AS now FROM app_jobs.get_scheduled_job('sched-2', NULL, "
        "interval '30 seconds') s",
    )
    assert custom["id"] == late
    assert custom["lease_expires_at"] == custom["now"] + timedelta(seconds=30)
    # Nothing left: the NULL row.
    assert claim(engine, "sched-3")["id"] is None
    holders = rows(engine, "SELECT id, locked_by FROM app_jobs.scheduled_jobs ORDER BY id")
    assert holders == [
        {"id": late, "locked_by": "sched-2"},
        {"id": first_of_zero, "locked_by": "sched-2"},
        {"id": second_of_zero, "locked_by": "sched-1"},
        {"id": urgent, "locked_by": "sched-1"},
    ]


def test_c7_concurrent_claims_skip_a_row_being_claimed(engine: Engine, libpq_url: str) -> None:
    first_id = schedule(engine)["id"]
    second_id = schedule(engine)["id"]
    statement = raw("SELECT id FROM app_jobs.get_scheduled_job(%s)")
    with psycopg.connect(libpq_url) as first, psycopg.connect(libpq_url) as second:
        # The first claim is not committed yet; the second scheduler neither waits nor
        # takes the same row.
        assert first.execute(statement, ("sched-1",)).fetchone() == (first_id,)
        assert second.execute(statement, ("sched-2",)).fetchone() == (second_id,)
        second.commit()
        first.commit()
    holders = rows(engine, "SELECT id, locked_by FROM app_jobs.scheduled_jobs ORDER BY id")
    assert holders == [
        {"id": first_id, "locked_by": "sched-1"},
        {"id": second_id, "locked_by": "sched-2"},
    ]


def end_lease(engine: Engine, schedule_id: int) -> None:
    rows(
        engine,
        "UPDATE app_jobs.scheduled_jobs SET lease_expires_at = now() - interval '1 second'"
        " WHERE id = :id",
        id=schedule_id,
    )


def test_c7_lapsed_lease_goes_to_another_scheduler_not_back_to_its_holder(
    engine: Engine,
) -> None:
    sid = schedule(engine)["id"]
    assert claim(engine, "sched-1")["id"] == sid
    # While the lease runs, nobody else gets it.
    assert claim(engine, "sched-2")["id"] is None
    end_lease(engine, sid)
    # Its own lapsed claim is not handed back to the same worker id (it still runs a timer).
    assert claim(engine, "sched-1")["id"] is None
    assert schedule_row(engine, sid)["locked_by"] == "sched-1"
    # A scheduler that is alive takes it over.
    taken = claim(engine, "sched-2")
    assert taken["id"] == sid
    assert taken["locked_by"] == "sched-2"
    assert taken["locked_at"] == taken["now"]
    assert taken["lease_expires_at"] == taken["now"] + timedelta(minutes=5)
    assert schedule_row(engine, sid)["locked_by"] == "sched-2"


def test_c7_renew_extends_leases_and_returns_only_rows_still_held(engine: Engine) -> None:
    kept = schedule(engine)["id"]
    lost = schedule(engine)["id"]
    other = schedule(engine)["id"]
    assert [
        r["id"]
        for r in rows(engine, "SELECT * FROM app_jobs.get_scheduled_jobs('sched-1', NULL, NULL, 2)")
    ] == [kept, lost]
    assert claim(engine, "sched-2")["id"] == other
    end_lease(engine, lost)
    assert claim(engine, "sched-3")["id"] == lost
    end_lease(engine, kept)  # lapsed but not taken over: still held, renewable

    with engine.begin() as connection:
        renewed = [
            dict(r._mapping)
            for r in connection.execute(
                sql(
                    "SELECT s.*, now() AS now FROM app_jobs.renew_scheduled_jobs('sched-1', NULL,"
                    " interval '10 minutes') s"
                )
            )
        ]
    assert [r["id"] for r in renewed] == [kept]
    now = renewed[0]["now"]
    stored = schedule_row(engine, kept)
    assert (stored["locked_by"], stored["locked_at"], stored["lease_expires_at"]) == (
        "sched-1",
        now,
        now + timedelta(minutes=10),
    )
    # The renewed lease holds against other schedulers again.
    assert claim(engine, "sched-4")["id"] is None
    # The default lease is 5 minutes; ids limit the renewal; others' rows are never renewed.
    with engine.begin() as connection:
        renewed_default = [
            dict(r._mapping)
            for r in connection.execute(
                sql(
                    "SELECT s.*, now() AS now FROM app_jobs.renew_scheduled_jobs('sched-1',"
                    " ARRAY[CAST(:kept AS bigint), CAST(:other AS bigint)]) s"
                ),
                {"kept": kept, "other": other},
            )
        ]
    assert [r["id"] for r in renewed_default] == [kept]
    assert renewed_default[0]["lease_expires_at"] == renewed_default[0]["now"] + timedelta(
        minutes=5
    )
    assert rows(engine, "SELECT * FROM app_jobs.renew_scheduled_jobs('sched-1', '{}')") == []
    assert schedule_row(engine, lost)["locked_by"] == "sched-3"
    assert schedule_row(engine, other)["locked_by"] == "sched-2"


def test_release_scheduled_jobs_frees_only_the_callers_rows(engine: Engine) -> None:
    mine = [schedule(engine)["id"] for _ in range(3)]
    theirs = schedule(engine)["id"]
    claimed = rows(engine, "SELECT id FROM app_jobs.get_scheduled_jobs('sched-1', NULL, NULL, 3)")
    assert [r["id"] for r in claimed] == mine
    assert claim(engine, "sched-2")["id"] == theirs

    def holders() -> dict[int, tuple[str | None, bool, bool]]:
        found = rows(engine, "SELECT * FROM app_jobs.scheduled_jobs")
        return {
            r["id"]: (r["locked_by"], r["locked_at"] is None, r["lease_expires_at"] is None)
            for r in found
        }

    # ids name one of mine and the other scheduler's: only mine is freed.
    rows(
        engine,
        "SELECT app_jobs.release_scheduled_jobs('sched-1', ARRAY[CAST(:a AS bigint),"
        " CAST(:b AS bigint)])",
        a=mine[0],
        b=theirs,
    )
    assert holders() == {
        mine[0]: (None, True, True),
        mine[1]: ("sched-1", False, False),
        mine[2]: ("sched-1", False, False),
        theirs: ("sched-2", False, False),
    }
    # NULL ids: all of mine.
    rows(engine, "SELECT app_jobs.release_scheduled_jobs('sched-1', NULL)")
    assert holders() == {
        mine[0]: (None, True, True),
        mine[1]: (None, True, True),
        mine[2]: (None, True, True),
        theirs: ("sched-2", False, False),
    }
    # Freed rows can be claimed at once.
    assert claim(engine, "sched-3")["id"] == mine[0]


def test_get_scheduled_jobs_claims_up_to_max_jobs(engine: Engine) -> None:
    ids = [schedule(engine, priority=p)["id"] for p in (3, 1, 2, 0, 4)]
    statement = "SELECT * FROM app_jobs.get_scheduled_jobs(:w, NULL, interval '1 minute', :n)"
    first = rows(engine, statement, w="sched-1", n=3)
    assert [r["id"] for r in first] == [ids[3], ids[1], ids[2]]
    assert all(r["locked_by"] == "sched-1" for r in first)
    rest = rows(engine, statement, w="sched-2", n=10)
    assert [r["id"] for r in rest] == [ids[0], ids[4]]
    assert rows(engine, statement, w="sched-3", n=10) == []
    # max_jobs NULL means 1.
    rows(engine, "SELECT app_jobs.release_scheduled_jobs('sched-2')")
    assert [r["id"] for r in rows(engine, statement, w="sched-3", n=None)] == [ids[0]]


def test_task_filter_null_means_any_and_empty_array_means_none(engine: Engine) -> None:
    a = schedule(engine, "task_a")["id"]
    b = schedule(engine, "task_b")["id"]
    statement = "SELECT * FROM app_jobs.get_scheduled_job(:w, CAST(:tasks AS text[]))"
    assert one(engine, statement, w="sched-1", tasks=[])["id"] is None
    assert one(engine, statement, w="sched-1", tasks=["task_b", "other"])["id"] == b
    assert one(engine, statement, w="sched-1", tasks=["task_b"])["id"] is None
    assert one(engine, statement, w="sched-1", tasks=None)["id"] == a
    many = "SELECT * FROM app_jobs.get_scheduled_jobs('sched-2', CAST(:tasks AS text[]), NULL, 5)"
    rows(engine, "SELECT app_jobs.release_scheduled_jobs('sched-1')")
    assert rows(engine, many, tasks=[]) == []
    assert [r["id"] for r in rows(engine, many, tasks=None)] == [a, b]


SCHEDULER_CALLS = {
    "get_scheduled_job": "SELECT * FROM app_jobs.get_scheduled_job(:w)",
    "get_scheduled_jobs": "SELECT * FROM app_jobs.get_scheduled_jobs(:w, NULL, NULL, 5)",
    "renew_scheduled_jobs": "SELECT * FROM app_jobs.renew_scheduled_jobs(:w)",
    "release_scheduled_jobs": "SELECT app_jobs.release_scheduled_jobs(:w)",
}


def test_c12_short_or_null_worker_id_is_rejected_by_every_schedule_function(
    engine: Engine,
) -> None:
    # First with nothing claimable (the reference only failed once a row was there), then
    # with a claimable schedule, which must not be claimed.
    for with_schedule in (False, True):
        if with_schedule:
            sid = schedule(engine)["id"]
        for name, statement in SCHEDULER_CALLS.items():
            for worker in (None, "", "a", "abc"):
                error = pg_error(engine, statement, w=worker)
                assert error.sqlstate == "P0001", (name, worker, error)
                assert error.diag.message_primary == "INVALID_WORKER_ID", (name, worker)
    row = schedule_row(engine, sid)
    assert (row["locked_by"], row["locked_at"], row["lease_expires_at"]) == (None, None, None)
    # Four characters is enough.
    assert claim(engine, "abcd")["id"] == sid


@pytest.mark.parametrize("max_jobs", [0, -1])
def test_max_jobs_below_one_is_rejected(engine: Engine, max_jobs: int) -> None:
    sid = schedule(engine)["id"]
    error = pg_error(
        engine,
        "SELECT * FROM app_jobs.get_scheduled_jobs('sched-1', NULL, NULL, :n)",
        n=max_jobs,
    )
    assert_raised(error, "22023")
    assert schedule_row(engine, sid)["locked_by"] is None


# ------------------------------------------------------------------------------------------
# C6: run_scheduled_job
# ------------------------------------------------------------------------------------------


def test_c6_pending_previous_job_blocks_the_next_fire(engine: Engine) -> None:
    sid = schedule(engine, "cron_task", max_attempts=3)["id"]
    job = run(engine, sid)
    age_last_fire(engine, sid)
    # Queued, not yet taken.
    assert_already_scheduled(run_error(engine, sid))
    # Waiting for a retry (failed once, attempts left).
    assert take_job(engine)["id"] == job["id"]
    one(engine, "SELECT * FROM app_jobs.fail_job('worker-1', :id, 'boom')", id=job["id"])
    failed = job_row(engine, job["id"])
    assert failed is not None
    assert (failed["locked_at"], failed["attempts"]) == (None, 1)
    assert_already_scheduled(run_error(engine, sid))
    assert [j["id"] for j in all_jobs(engine)] == [job["id"]]
    assert schedule_row(engine, sid)["last_scheduled_id"] == job["id"]


def test_c6_running_previous_job_blocks_until_its_lock_is_older_than_expiry(
    engine: Engine,
) -> None:
    sid = schedule(engine)["id"]
    job = run(engine, sid)
    age_last_fire(engine, sid)
    assert take_job(engine)["id"] == job["id"]
    # Running and fresh.
    assert_already_scheduled(run_error(engine, sid))

    def lock_age(minutes: int) -> None:
        rows(
            engine,
            "UPDATE app_jobs.jobs SET locked_at = now() - make_interval(mins => :m) WHERE id = :id",
            m=minutes,
            id=job["id"],
        )

    lock_age(59)
    assert_already_scheduled(run_error(engine, sid))
    # C4: a NULL job_expiry means the default hour, not "any lock is finished".
    error = pg_error(engine, "SELECT * FROM app_jobs.run_scheduled_job(:id, NULL)", id=sid)
    assert_already_scheduled(error)
    # An explicit shorter expiry is honoured.
    shorter = one(
        engine, "SELECT * FROM app_jobs.run_scheduled_job(:id, interval '30 minutes')", id=sid
    )
    assert shorter["id"] not in (None, job["id"])
    rows(engine, "DELETE FROM app_jobs.jobs WHERE id = :id", id=shorter["id"])
    rows(
        engine,
        "UPDATE app_jobs.scheduled_jobs SET last_scheduled = now() - interval '1 minute',"
        " last_scheduled_id = :job WHERE id = :id",
        job=job["id"],
        id=sid,
    )
    # Older than the default hour: the previous run is taken to be dead.
    lock_age(61)
    fresh = run(engine, sid)
    assert fresh["id"] not in (None, job["id"])
    assert schedule_row(engine, sid)["last_scheduled_id"] == fresh["id"]
    assert [j["id"] for j in all_jobs(engine)] == [job["id"], fresh["id"]]


def test_c6_completed_previous_job_lets_the_schedule_fire_again(engine: Engine) -> None:
    sid = schedule(engine)["id"]
    job = run(engine, sid)
    age_last_fire(engine, sid)
    assert take_job(engine)["id"] == job["id"]
    done = one(engine, "SELECT * FROM app_jobs.complete_job('worker-1', :id)", id=job["id"])
    assert done["id"] == job["id"]
    assert all_jobs(engine) == []
    again = run(engine, sid)
    assert again["id"] not in (None, job["id"])
    assert schedule_row(engine, sid)["last_scheduled_id"] == again["id"]
    assert [j["id"] for j in all_jobs(engine)] == [again["id"]]


def fail_for_good(engine: Engine, job_id: int) -> None:
    assert take_job(engine)["id"] == job_id
    one(engine, "SELECT * FROM app_jobs.fail_job('worker-1', :id, 'boom')", id=job_id)
    dead = job_row(engine, job_id)
    assert dead is not None
    assert dead["locked_at"] is None
    assert dead["attempts"] == dead["max_attempts"]


def test_c6_permanently_failed_previous_job_does_not_block_the_schedule(engine: Engine) -> None:
    sid = schedule(engine, max_attempts=1)["id"]
    job = run(engine, sid)
    fail_for_good(engine, job["id"])
    age_last_fire(engine, sid)
    again = run(engine, sid)  # the reference raised ALREADY_SCHEDULED here, forever
    assert again["id"] not in (None, job["id"])
    assert (again["attempts"], again["locked_at"]) == (0, None)
    assert schedule_row(engine, sid)["last_scheduled_id"] == again["id"]
    assert [j["id"] for j in all_jobs(engine)] == [job["id"], again["id"]]


def test_c6_keyed_schedule_with_dead_previous_job_reuses_the_keyed_job(engine: Engine) -> None:
    sid = schedule(engine, max_attempts=1, job_key="nightly")["id"]
    job = run(engine, sid)
    assert job["key"] == "nightly"
    fail_for_good(engine, job["id"])
    age_last_fire(engine, sid)
    again = run(engine, sid)
    # The key's rules (add_job): an unlocked keyed job is replaced in place, runnable again.
    assert again["key"] == "nightly"
    assert (again["attempts"], again["locked_at"], again["last_error"]) == (0, None, None)
    jobs = all_jobs(engine)
    assert [j["id"] for j in jobs] == [again["id"]]
    assert schedule_row(engine, sid)["last_scheduled_id"] == again["id"]


def wait_until_waiting_for_a_lock(engine: Engine, pid: int) -> None:
    def waiting() -> bool:
        query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"
        state = rows(engine, query, pid=pid)
        return bool(state) and state[0]["wait_event_type"] == "Lock"

    wait_for(waiting, 10, lambda: f"backend {pid} never waited for a lock", interval=0.01)


@pytest.mark.parametrize(
    "fire_times",
    [(None, None), (0, 60)],
    ids=["without-fire-time", "different-fire-times"],
)
def test_c6_concurrent_runs_of_one_schedule_create_one_job(
    engine: Engine, libpq_url: str, fire_times: tuple[int | None, int | None]
) -> None:
    sid = schedule(engine)["id"]
    base = datetime.now(UTC).replace(microsecond=0)
    first_fire, second_fire = (
        None if offset is None else base + timedelta(seconds=offset) for offset in fire_times
    )
    statement = raw("SELECT id FROM app_jobs.run_scheduled_job(%s::bigint, NULL, %s)")
    outcome: dict[str, Any] = {}

    with psycopg.connect(libpq_url) as first, psycopg.connect(libpq_url) as second:
        # The first call's transaction stays open, holding whatever it holds.
        first_row = first.execute(statement, (sid, first_fire)).fetchone()
        assert first_row is not None
        assert first_row[0] is not None

        def call_second() -> None:
            try:
                outcome["row"] = second.execute(statement, (sid, second_fire)).fetchone()
            except psycopg.Error as exc:
                outcome["error"] = exc
            finally:
                second.rollback()

        thread = threading.Thread(target=call_second)
        thread.start()
        try:
            wait_until_waiting_for_a_lock(engine, second.info.backend_pid)
        finally:
            first.commit()
            thread.join(10)
        assert not thread.is_alive()

    assert "row" not in outcome, outcome
    error = outcome["error"]
    assert isinstance(error, psycopg.Error)
    assert_already_scheduled(error)
    assert [j["id"] for j in all_jobs(engine)] == [first_row[0]]
    assert schedule_row(engine, sid)["last_scheduled_id"] == first_row[0]


def test_c6_keyed_schedule_with_stale_previous_job_moves_the_key(engine: Engine) -> None:
    sid = schedule(engine, "nightly_task", job_key="nightly")["id"]
    stale = run(engine, sid)
    assert stale["key"] == "nightly"
    assert take_job(engine)["id"] == stale["id"]
    rows(
        engine,
        "UPDATE app_jobs.jobs SET locked_at = now() - interval '2 hours' WHERE id = :id",
        id=stale["id"],
    )
    age_last_fire(engine, sid)
    fresh = run(engine, sid)  # the reference failed with a unique violation (23505)
    assert fresh["id"] not in (None, stale["id"])
    assert fresh["key"] == "nightly"
    assert (fresh["attempts"], fresh["locked_at"]) == (0, None)
    detached = job_row(engine, stale["id"])
    assert detached is not None
    assert detached["key"] is None
    assert detached["locked_by"] == "worker-1"  # it may still finish; it is not retried
    keyed = rows(engine, "SELECT id FROM app_jobs.jobs WHERE key = 'nightly'")
    assert keyed == [{"id": fresh["id"]}]
    assert schedule_row(engine, sid)["last_scheduled_id"] == fresh["id"]


def test_c6_missing_schedule_returns_the_null_row(engine: Engine) -> None:
    found = rows(engine, "SELECT * FROM app_jobs.run_scheduled_job(999)")
    assert len(found) == 1
    assert found[0]["id"] is None
    assert all(value is None for value in found[0].values())
    assert all_jobs(engine) == []


def test_c6_fire_time_dedupes_a_fire(engine: Engine) -> None:
    sid = schedule(engine)["id"]
    fire = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
    job = run(engine, sid, fire)
    assert job["id"] is not None
    assert schedule_row(engine, sid)["last_scheduled"] == fire
    rows(engine, "DELETE FROM app_jobs.jobs WHERE id = :id", id=job["id"])
    # The same fire again (a second scheduler, a retry after a lost reply): refused, even
    # though the previous job is finished.
    assert_already_scheduled(run_error(engine, sid, fire))
    assert_already_scheduled(run_error(engine, sid, fire - timedelta(minutes=1)))
    assert all_jobs(engine) == []
    later = fire + timedelta(minutes=1)
    next_job = run(engine, sid, later)
    assert next_job["id"] not in (None, job["id"])
    row = schedule_row(engine, sid)
    assert (row["last_scheduled"], row["last_scheduled_id"]) == (later, next_job["id"])
    assert [j["id"] for j in all_jobs(engine)] == [next_job["id"]]


# ------------------------------------------------------------------------------------------
# The seed's Node scheduler, exactly as it calls us
# ------------------------------------------------------------------------------------------


def test_reference_node_scheduler_calls_work_with_untyped_parameters(
    engine: Engine, libpq_url: str
) -> None:
    with engine.begin() as connection:
        connection.execute(
            sql(
                "INSERT INTO app_jobs.scheduled_jobs (database_id, task_identifier, schedule_info)"
                " VALUES ('5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid, 'cleanup_task',"
                ' \'{"hour": [2], "minute": [0]}\'::json)'
            )
        )
    # node-postgres's $1, $2 are psycopg's %s.
    get = raw("SELECT * FROM app_jobs.get_scheduled_job(%s, %s::text[])")
    run_sql = raw("SELECT * FROM app_jobs.run_scheduled_job(%s)")
    release = raw("SELECT app_jobs.release_scheduled_jobs(%s, %s::bigint[])")
    worker = "scheduler-0"
    # Every parameter is a str or None: psycopg sends them with no type, as node-postgres does.
    with psycopg.connect(libpq_url, autocommit=True) as node:
        node.execute(release, (worker, None))  # initialize()
        cursor = node.execute(get, (worker, None))
        names = [c.name for c in cursor.description or ()]
        claimed = dict(zip(names, cursor.fetchone() or (), strict=True))
        assert claimed["id"] is not None
        assert claimed["task_identifier"] == "cleanup_task"
        assert claimed["payload"] == {}
        assert claimed["schedule_info"] == {"hour": [2], "minute": [0]}
        nothing = node.execute(get, (worker, None)).fetchone()
        assert nothing is not None
        assert nothing[names.index("id")] is None
        # Releasing and claiming by task name (node-postgres sends a JS array as this text).
        node.execute(release, (worker, None))
        other = node.execute(get, (worker, '{"other_task"}')).fetchone()
        assert other is not None
        assert other[names.index("id")] is None
        again = node.execute(get, (worker, '{"cleanup_task","other_task"}')).fetchone()
        assert again is not None
        assert again[names.index("id")] == claimed["id"]

        # The timer fires.
        cursor = node.execute(run_sql, (str(claimed["id"]),))
        job_names = [c.name for c in cursor.description or ()]
        job = dict(zip(job_names, cursor.fetchone() or (), strict=True))
        assert job["id"] is not None
        assert job["task_identifier"] == "cleanup_task"
        assert job["database_id"] == TENANT_A
        # A second fire at once: exactly the message the scheduler matches.
        with pytest.raises(psycopg.Error) as info:
            node.execute(run_sql, (str(claimed["id"]),))
        assert info.value.sqlstate == "P0001"
        assert info.value.diag.message_primary == "ALREADY_SCHEDULED"
        # A deleted schedule: the NULL row, which makes the scheduler cancel its timer.
        gone = node.execute(run_sql, ("999",)).fetchone()
        assert gone is not None
        assert gone[job_names.index("id")] is None

        node.execute(release, (worker, None))  # stop()
    released = schedule_row(engine, claimed["id"])
    assert (released["locked_by"], released["locked_at"]) == (None, None)
    assert [j["id"] for j in all_jobs(engine)] == [job["id"]]
