"""The job functions of the SQL API: the seed README's calls, the reference Node worker's
calls, and every fix of SPEC section 2 that concerns jobs, each with the scenario in which
the reference misbehaves."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.types.json import Json
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.helpers import libpq_url, listening, notifications, raw, sql

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

TENANT_A = uuid.UUID("5b720132-17d5-424d-9bcb-ee7b17c13d43")
TENANT_B = uuid.UUID("0e4e1d64-3e54-4d2c-9d55-2f7a4d7f1c11")


def one(connection: Connection, statement: str, **params: Any) -> Row[Any]:
    return connection.execute(sql(statement), params).one()


def add(connection: Connection, task: str = "task", **params: Any) -> Row[Any]:
    """add_job with named arguments (db_id defaults to no tenant)."""
    params.setdefault("db_id", None)
    if isinstance(params.get("payload"), dict):
        params["payload"] = Json(params["payload"])
    names = ", ".join(f"{name} := :{name}" for name in params)
    return one(
        connection,
        f"SELECT * FROM app_jobs.add_job(identifier := :task, {names})",
        task=task,
        **params,
    )


def take(connection: Connection, worker: str = "worker-1", **params: Any) -> Row[Any]:
    """get_job; the row's id is None when nothing was taken (the reference's NULL row)."""
    params = {"task_identifiers": None, **params}
    names = "".join(f", {name} := :{name}" for name in params)
    return one(
        connection, f"SELECT * FROM app_jobs.get_job(:worker{names})", worker=worker, **params
    )


def job(connection: Connection, job_id: int) -> Row[Any] | None:
    return connection.execute(
        sql("SELECT * FROM app_jobs.jobs WHERE id = :id"), {"id": job_id}
    ).one_or_none()


def count(connection: Connection, where: str = "true", **params: Any) -> int:
    return int(
        connection.execute(
            sql(f"SELECT count(*) FROM app_jobs.jobs WHERE {where}"), params
        ).scalar_one()
    )


def sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


# --- The seed README, verbatim ---------------------------------------------------------


def test_seed_readme_calls_work_unchanged(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sql(
                "SELECT app_jobs.add_job("
                " db_id := '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,"
                " identifier := 'send_email',"
                ' payload := \'{"to": "user@example.com"}\'::json)'
            )
        )
        connection.execute(
            sql(
                "SELECT app_jobs.add_job("
                " db_id := '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,"
                " identifier := 'generate_report',"
                " payload := '{\"report_id\": 123}'::json,"
                " run_at := now() + interval '1 hour',"
                " priority := 10)"
            )
        )
        taken = one(
            connection,
            "SELECT * FROM app_jobs.get_job(worker_id := 'worker-1',"
            " task_identifiers := ARRAY['send_email', 'generate_report'])",
        )
        assert taken.task_identifier == "send_email"
        assert taken.payload == {"to": "user@example.com"}
        assert taken.database_id == TENANT_A
        assert (taken.attempts, taken.locked_by) == (1, "worker-1")
        # The delayed report is not due.
        assert take(connection, "worker-2").id is None

        failed = one(
            connection,
            "SELECT * FROM app_jobs.fail_job(worker_id := 'worker-1', job_id := :id,"
            " error_message := 'Connection timeout')",
            id=taken.id,
        )
        assert failed.last_error == "Connection timeout"
        assert failed.locked_by is None

        connection.execute(
            sql("UPDATE app_jobs.jobs SET run_at = now() WHERE id = :id"), {"id": taken.id}
        )
        again = take(connection)
        assert (again.id, again.attempts) == (taken.id, 2)
        done = one(
            connection,
            "SELECT * FROM app_jobs.complete_job(worker_id := 'worker-1', job_id := :id)",
            id=taken.id,
        )
        assert done.id == taken.id
        assert job(connection, taken.id) is None


def test_reference_node_worker_calls_with_untyped_parameters(engine: Engine) -> None:
    """The Node worker sends every parameter untyped and treats an all-NULL row as nothing."""
    with engine.begin() as connection:
        first = add(connection, "a")
        second = add(connection, "a")
    with psycopg.connect(libpq_url(engine.url), autocommit=True) as node:
        got = node.execute(
            raw("SELECT * FROM app_jobs.get_job(%s, %s::text[]);"), ["worker-0", None]
        )
        row = got.fetchone()
        assert row is not None and row[0] == first.id
        node.execute(
            raw("SELECT * FROM app_jobs.complete_job(%s, %s);"), ["worker-0", str(first.id)]
        )
        row = node.execute(
            raw("SELECT * FROM app_jobs.get_job(%s, %s::text[]);"), ["worker-0", "{a,b}"]
        ).fetchone()
        assert row is not None and row[0] == second.id
        node.execute(
            raw("SELECT * FROM app_jobs.fail_job(%s, %s, %s);"),
            ["worker-0", str(second.id), "boom"],
        )
        empty = node.execute(
            raw("SELECT * FROM app_jobs.get_job(%s, %s::text[]);"), ["worker-0", None]
        ).fetchone()
        assert empty is not None and all(value is None for value in empty)
        node.execute(raw("SELECT app_jobs.release_jobs(%s);"), ["worker-0"])
    with engine.connect() as connection:
        assert job(connection, first.id) is None
        failed = job(connection, second.id)
        assert failed is not None and failed.last_error == "boom"


# --- Defaults and NULL arguments (C4) --------------------------------------------------


@pytest.mark.parametrize("key", [None, "some-key"])
def test_c4_null_arguments_mean_the_defaults_on_every_path(engine: Engine, key: str | None) -> None:
    with engine.begin() as connection:
        now = connection.execute(text("SELECT now()")).scalar_one()
        created = add(
            connection,
            "task",
            payload=None,
            job_key=key,
            queue_name=None,
            run_at=None,
            max_attempts=None,
            priority=None,
        )
        assert created.payload == {}
        assert created.run_at == now
        assert (created.max_attempts, created.priority, created.attempts) == (25, 0, 0)
        assert created.key == key
        assert created.queue_name is None
        assert created.created_at == created.updated_at == now


def test_ordering_is_priority_then_run_at_then_id(engine: Engine) -> None:
    with engine.begin() as connection:
        late = add(connection, run_at=_ago(connection, seconds=1))
        early = add(connection, run_at=_ago(connection, seconds=5))
        urgent = add(connection, priority=-1)
        same_time = add(connection, run_at=early.run_at)
        order = [take(connection).id for _ in range(4)]
    assert order == [urgent.id, early.id, same_time.id, late.id]


def _ago(connection: Connection, seconds: float) -> Any:
    return connection.execute(
        text("SELECT now() - make_interval(secs => :s)"), {"s": seconds}
    ).scalar_one()


def test_task_filter_null_means_any_and_empty_means_none(engine: Engine) -> None:
    with engine.begin() as connection:
        add(connection, "a")
        assert take(connection, task_identifiers=[]).id is None
        assert take(connection, task_identifiers=["b"]).id is None
        assert take(connection, task_identifiers=None).task_identifier == "a"


def test_dead_jobs_are_never_taken(engine: Engine) -> None:
    with engine.begin() as connection:
        dead = add(connection, max_attempts=1)
        assert take(connection).id == dead.id
        one(connection, "SELECT * FROM app_jobs.fail_job('worker-1', :id, 'no')", id=dead.id)
        connection.execute(sql("UPDATE app_jobs.jobs SET run_at = now() - interval '1 day'"))
        assert take(connection).id is None
        kept = job(connection, dead.id)
        assert kept is not None and (kept.attempts, kept.last_error) == (1, "no")


def test_fail_job_backoff_is_exp_of_attempts_capped_at_10(engine: Engine) -> None:
    with engine.begin() as connection:
        created = add(connection)
        for attempts in (1, 2, 11):
            connection.execute(
                sql("UPDATE app_jobs.jobs SET run_at = now(), attempts = :a - 1 WHERE id = :id"),
                {"a": attempts, "id": created.id},
            )
            taken = take(connection)
            assert taken.attempts == attempts
            failed = one(
                connection, "SELECT * FROM app_jobs.fail_job('worker-1', :id, 'x')", id=created.id
            )
            delay = (failed.run_at - taken.run_at).total_seconds()
            assert delay == pytest.approx(math.exp(min(attempts, 10)), abs=1e-6)


def test_timestamps_are_kept_by_the_database(engine: Engine) -> None:
    with engine.begin() as connection:
        created = one(
            connection,
            "INSERT INTO app_jobs.jobs (task_identifier, created_at, updated_at) "
            "VALUES ('t', '2000-01-01', '2000-01-01') RETURNING *",
        )
        now = connection.execute(text("SELECT now()")).scalar_one()
        assert created.created_at == created.updated_at == now
        first = one(connection, "UPDATE app_jobs.jobs SET priority = 1 RETURNING *")
        second = one(connection, "UPDATE app_jobs.jobs SET created_at = '2000-01-01' RETURNING *")
        assert second.created_at == now
        assert second.updated_at - first.updated_at == timedelta(milliseconds=1)
        assert created.queue_name is None  # a direct insert gets no queue of its own (P1)


# --- Locks, expiry and release -----------------------------------------------------------


def test_attempts_go_up_when_taken_and_back_when_released(engine: Engine) -> None:
    with engine.begin() as connection:
        created = add(connection, queue_name="q")
        assert take(connection, "worker-1").attempts == 1
        connection.execute(sql("SELECT app_jobs.release_jobs('worker-1')"))
        released = job(connection, created.id)
        assert released is not None
        assert (released.attempts, released.locked_by, released.locked_at) == (0, None, None)
        queue = one(connection, "SELECT * FROM app_jobs.job_queues WHERE queue_name = 'q'")
        assert (queue.locked_by, queue.job_count) == (None, 1)
        assert take(connection, "worker-2").id == created.id


def test_expired_lock_is_taken_over_and_the_reason_recorded(engine: Engine) -> None:
    with engine.begin() as connection:
        created = add(connection)
        take(connection, "crashed-worker")
        connection.execute(sql("UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours'"))
        assert take(connection, "worker-2", job_expiry=timedelta(hours=6)).id is None
        taken = take(connection, "worker-2")
        assert (taken.id, taken.attempts, taken.locked_by) == (created.id, 2, "worker-2")
        assert "lock held by crashed-worker" in taken.last_error
        # The crashed worker, if it comes back, can no longer complete or fail it (C1).
        late = one(
            connection, "SELECT * FROM app_jobs.complete_job('crashed-worker', :id)", id=created.id
        )
        assert late.id is None
        assert job(connection, created.id) is not None


# --- C1: complete_job only completes a job this worker holds ----------------------------


def test_c1_complete_job_of_another_worker_changes_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        created = add(connection, queue_name="serial")
        take(connection, "worker-b")
        stolen = one(
            connection, "SELECT * FROM app_jobs.complete_job('worker-a', :id)", id=created.id
        )
        assert stolen.id is None
        still = job(connection, created.id)
        assert still is not None and still.locked_by == "worker-b"
        # Nor can anyone complete a job nobody holds.
        free = add(connection)
        assert (
            one(connection, "SELECT * FROM app_jobs.complete_job('worker-a', :id)", id=free.id).id
            is None
        )
        # The holder completes it, and its queue is free again.
        done = one(
            connection, "SELECT * FROM app_jobs.complete_job('worker-b', :id)", id=created.id
        )
        assert done.id == created.id
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.job_queues")).scalar_one() == 0


# --- C2: fail_job with a NULL message still fails the job --------------------------------


def test_c2_fail_job_without_a_message_still_fails(engine: Engine) -> None:
    with engine.begin() as connection:
        created = add(connection)
        taken = take(connection)
        failed = one(
            connection, "SELECT * FROM app_jobs.fail_job('worker-1', :id, NULL)", id=created.id
        )
        assert failed.id == created.id
        assert failed.locked_by is None and failed.locked_at is None
        assert failed.last_error == "job failed without an error message"
        assert failed.run_at > taken.run_at
        # The two-argument call of the seed README's "error_message optional" works too.
        created2 = add(connection)
        take(connection)
        assert (
            one(connection, "SELECT * FROM app_jobs.fail_job('worker-1', :id)", id=created2.id).id
            == created2.id
        )


# --- C3/C5: a job key survives while its job is running; never duplicates ----------------


def test_c3_job_key_survives_while_the_keyed_job_runs(engine: Engine) -> None:
    with engine.begin() as connection:
        original = add(connection, "sync", job_key="user:7", payload={"v": 1})
        assert take(connection, "worker-1").id == original.id

        replacement = add(connection, "sync", job_key="user:7", payload={"v": 2})
        assert replacement.id != original.id
        assert replacement.key == "user:7"

        again = add(connection, "sync", job_key="user:7", payload={"v": 3})
        assert again.id == replacement.id
        assert count(connection, "key = 'user:7'") == 1
        assert count(connection) == 2

        detached = job(connection, original.id)
        assert detached is not None
        assert detached.key is None
        # It finishes but is never run again: one attempt beyond max_attempts, so that not
        # even a release_jobs refund makes it runnable (tests/sql/test_schema_v2.py).
        assert detached.attempts == detached.max_attempts + 1
        assert detached.locked_by == "worker-1"
        done = one(
            connection, "SELECT * FROM app_jobs.complete_job('worker-1', :id)", id=original.id
        )
        assert done.id == original.id
        pending = job(connection, replacement.id)
        assert pending is not None and pending.payload == {"v": 3}


def test_keyed_upsert_updates_an_unlocked_job_in_place(engine: Engine) -> None:
    with engine.begin() as connection:
        first = add(connection, "a", job_key="k", payload={"v": 1}, priority=5)
        connection.execute(
            sql("UPDATE app_jobs.jobs SET attempts = 3, last_error = 'old' WHERE id = :id"),
            {"id": first.id},
        )
        second = add(connection, "b", job_key="k", payload={"v": 2}, queue_name="q")
        assert second.id == first.id
        assert (second.task_identifier, second.payload, second.priority) == ("b", {"v": 2}, 0)
        assert (second.attempts, second.last_error, second.queue_name) == (0, None, "q")
        assert (
            one(connection, "SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'q'")[0]
            == 1
        )


# --- S4: job keys are unique per tenant ---------------------------------------------------


def test_s4_tenant_b_cannot_overwrite_tenant_a_job_by_key(engine: Engine) -> None:
    with engine.begin() as connection:
        a_job = add(connection, "bill", db_id=TENANT_A, job_key="invoice-1", payload={"for": "A"})
        b_job = add(connection, "bill", db_id=TENANT_B, job_key="invoice-1", payload={"for": "B"})
        assert b_job.id != a_job.id
        kept = job(connection, a_job.id)
        assert kept is not None and (kept.database_id, kept.payload) == (TENANT_A, {"for": "A"})
        # No tenant is one tenant of its own: keys collide among NULL-tenant jobs only.
        n1 = add(connection, "bill", job_key="invoice-1", payload={"for": None})
        n2 = add(connection, "bill", job_key="invoice-1", payload={"for": "again"})
        assert n1.id == n2.id not in (a_job.id, b_job.id)
        assert count(connection, "key = 'invoice-1'") == 3


# --- C9: admin functions ----------------------------------------------------------------


def _stale(connection: Connection, hours: float, queue: str | None = None) -> Row[Any]:
    created = add(connection, queue_name=queue)
    take(connection, "dead-worker")
    connection.execute(
        sql(
            "UPDATE app_jobs.jobs SET locked_at = now() - make_interval(hours => :h) WHERE id = :id"
        ),
        {"h": hours, "id": created.id},
    )
    connection.execute(
        sql("UPDATE app_jobs.job_queues SET locked_at = now() - make_interval(hours => :h)"),
        {"h": hours},
    )
    return created


def test_c9_complete_jobs_takes_an_expiry_and_frees_the_queue(engine: Engine) -> None:
    with engine.begin() as connection:
        stale = _stale(connection, 3, queue="q")
        other = add(connection, queue_name="q")
        assert (
            connection.execute(
                sql("SELECT * FROM app_jobs.complete_jobs(ARRAY[:id]::bigint[])"), {"id": stale.id}
            ).all()
            == []
        )
        done = connection.execute(
            sql("SELECT * FROM app_jobs.complete_jobs(ARRAY[:id]::bigint[], interval '1 hour')"),
            {"id": stale.id},
        ).all()
        assert [row.id for row in done] == [stale.id]
        queue = one(connection, "SELECT * FROM app_jobs.job_queues WHERE queue_name = 'q'")
        assert (queue.locked_by, queue.job_count) == (None, 1)
        assert take(connection, "worker-2").id == other.id


def test_c9_permanently_failed_job_is_not_revived_by_release_jobs(engine: Engine) -> None:
    with engine.begin() as connection:
        stale = _stale(connection, 3)
        assert (
            connection.execute(
                sql(
                    "SELECT * FROM app_jobs.permanently_fail_jobs(ARRAY[:id]::bigint[], 'gave up')"
                ),
                {"id": stale.id},
            ).all()
            == []
        )
        failed = connection.execute(
            sql(
                "SELECT * FROM app_jobs.permanently_fail_jobs(ARRAY[:id]::bigint[], NULL,"
                " interval '2 hours')"
            ),
            {"id": stale.id},
        ).one()
        assert (failed.attempts, failed.locked_by, failed.last_error) == (
            25,
            None,
            "Manually marked as failed",
        )
        connection.execute(sql("SELECT app_jobs.release_jobs('dead-worker')"))
        revived = job(connection, stale.id)
        assert revived is not None and revived.attempts == revived.max_attempts
        connection.execute(sql("UPDATE app_jobs.jobs SET run_at = now() - interval '1 day'"))
        assert take(connection).id is None


def test_c9_reschedule_jobs_takes_an_expiry_and_clears_the_stale_lock(engine: Engine) -> None:
    with engine.begin() as connection:
        stale = _stale(connection, 3)
        fresh = add(connection)
        take(connection, "live-worker")
        rows = connection.execute(
            sql(
                "SELECT * FROM app_jobs.reschedule_jobs(ARRAY[:a, :b]::bigint[], run_at := now(),"
                " priority := 3, attempts := 0, job_expiry := interval '1 hour')"
            ),
            {"a": stale.id, "b": fresh.id},
        ).all()
        assert [(row.id, row.priority, row.attempts, row.locked_by) for row in rows] == [
            (stale.id, 3, 0, None)
        ]
        running = job(connection, fresh.id)
        assert running is not None and running.locked_by == "live-worker"


# --- C12: worker ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM app_jobs.get_job(:w)",
        "SELECT * FROM app_jobs.get_jobs(:w, NULL, NULL, 5)",
        "SELECT * FROM app_jobs.complete_job(:w, 1)",
        "SELECT * FROM app_jobs.fail_job(:w, 1, 'x')",
        "SELECT * FROM app_jobs.complete_job_batch(:w, ARRAY[1]::bigint[])",
        "SELECT * FROM app_jobs.fail_job_batch(:w, ARRAY[1]::bigint[])",
        "SELECT app_jobs.release_jobs(:w)",
    ],
)
@pytest.mark.parametrize("worker", [None, "", "abc"])
def test_c12_short_or_missing_worker_id_is_refused_up_front(
    engine: Engine, call: str, worker: str | None
) -> None:
    # The table is empty: the reference only failed when a job happened to be available.
    with pytest.raises(DBAPIError) as info, engine.connect() as connection:
        connection.execute(sql(call), {"w": worker})
    assert sqlstate(info.value) == "P0001"
    assert info.value.orig is not None
    diag = info.value.orig.diag  # type: ignore[attr-defined]
    assert diag.message_primary == "INVALID_WORKER_ID"
    assert "at least 4" in diag.message_detail
    if worker is not None:
        assert (
            repr(worker).strip('"') in diag.message_detail or f"'{worker}'" in diag.message_detail
        )


# --- Queues ---------------------------------------------------------------------------------


def test_queue_runs_its_jobs_one_at_a_time(engine: Engine) -> None:
    with engine.begin() as connection:
        first = add(connection, queue_name="serial")
        second = add(connection, queue_name="serial")
        free = add(connection)
        assert take(connection, "worker-1").id == first.id
        assert take(connection, "worker-2").id == free.id
        assert take(connection, "worker-3").id is None
        one(connection, "SELECT * FROM app_jobs.complete_job('worker-1', :id)", id=first.id)
        assert take(connection, "worker-3").id == second.id


def test_queue_counts_stay_exact(engine: Engine) -> None:
    def counts(connection: Connection) -> dict[str, int]:
        return dict(
            connection.execute(sql("SELECT queue_name, job_count FROM app_jobs.job_queues")).all()
        )

    with engine.begin() as connection:
        a1 = add(connection, queue_name="a")
        add(connection, queue_name="a")
        add(connection, queue_name="b")
        assert counts(connection) == {"a": 2, "b": 1}
        connection.execute(
            sql("UPDATE app_jobs.jobs SET queue_name = 'b' WHERE id = :id"), {"id": a1.id}
        )
        assert counts(connection) == {"a": 1, "b": 2}
        connection.execute(sql("DELETE FROM app_jobs.jobs WHERE queue_name = 'a'"))
        assert counts(connection) == {"b": 2}
        connection.execute(sql("TRUNCATE app_jobs.jobs"))
        assert counts(connection) == {}


def test_c8_job_with_a_missing_queue_row_is_still_taken(engine: Engine) -> None:
    with engine.begin() as connection:
        created = add(connection, queue_name="lost")
        add(connection, queue_name="lost")
        connection.execute(sql("DELETE FROM app_jobs.job_queues"))
        assert take(connection).id == created.id
        queue = one(connection, "SELECT * FROM app_jobs.job_queues")
        assert (queue.queue_name, queue.job_count, queue.locked_by) == ("lost", 2, "worker-1")


def test_p3_get_job_does_not_lock_queues_it_does_not_take(engine: Engine) -> None:
    """With worker 1's get_job transaction still open, worker 2 still gets a job."""
    with engine.begin() as connection:
        for queue in ("q1", "q2", "q3", "q4"):
            add(connection, queue_name=queue)
        connection.execute(text("ANALYZE"))
    with engine.connect() as worker1, engine.connect() as worker2:
        worker1.begin()
        assert take(worker1, "worker-1").queue_name == "q1"
        worker2.begin()
        assert take(worker2, "worker-2").queue_name == "q2"
        worker2.commit()
        worker1.commit()


# --- Batches (beyond the reference) -----------------------------------------------------------


def test_get_jobs_takes_a_batch_in_order_with_one_job_per_queue(engine: Engine) -> None:
    with engine.begin() as connection:
        jobs = [
            add(connection, priority=p, queue_name=q)
            for p, q in [(2, None), (1, "q"), (1, "q"), (0, None), (3, None)]
        ]
        rows = connection.execute(
            sql("SELECT * FROM app_jobs.get_jobs('worker-1', NULL, NULL, 4)")
        ).all()
        assert [row.id for row in rows] == [jobs[3].id, jobs[1].id, jobs[0].id, jobs[4].id]
        assert all(row.locked_by == "worker-1" and row.attempts == 1 for row in rows)
        assert (
            connection.execute(
                sql("SELECT * FROM app_jobs.get_jobs('worker-2', NULL, NULL, 10)")
            ).all()
            == []
        )


def cycle(connection: Connection, worker: str, **params: Any) -> Row[Any]:
    """worker_cycle, with the taken jobs' ids in order."""
    defaults = {"done": None, "failed": None, "messages": None, "n": 0}
    return one(
        connection,
        "SELECT c.completed, c.failed, c.next_run_at - c.now AS wait,"
        " ARRAY(SELECT t.id FROM unnest(c.taken) WITH ORDINALITY AS t ORDER BY ordinality)"
        " AS taken"
        " FROM app_jobs.worker_cycle(:w, :done, :failed, :messages, NULL, NULL, :n) AS c",
        w=worker,
        **{**defaults, **params},
    )


def test_worker_cycle_reports_only_held_jobs_then_takes_in_order(engine: Engine) -> None:
    with engine.begin() as connection:
        ids = [add(connection, priority=p).id for p in (2, 0, 1)]
        later = add(connection, run_at=None).id
        connection.execute(
            sql("UPDATE app_jobs.jobs SET run_at = now() + interval '1 hour' WHERE id = :id"),
            {"id": later},
        )
        first = cycle(connection, "worker-1", n=2)
        assert (first.completed, first.failed, first.taken) == (0, 0, [ids[1], ids[2]])
        assert first.wait is None  # as many taken as asked: no sleep to compute
        # Only jobs worker-1 holds are completed or failed (C1); one more is taken; the
        # earliest time a job falls due is the failed one's retry, e^1 seconds on.
        second = cycle(
            connection,
            "worker-1",
            done=[ids[1], ids[0]],
            failed=[ids[2], later],
            messages=["boom", "not mine"],
            n=5,
        )
        assert (second.completed, second.failed, second.taken) == (1, 1, [ids[0]])
        assert math.isclose(second.wait.total_seconds(), math.e, abs_tol=0.001)
        assert (
            one(connection, "SELECT last_error FROM app_jobs.jobs WHERE id = :id", id=later)[0]
            is None
        )


def test_worker_cycle_refuses_a_negative_batch_and_a_short_worker_id(engine: Engine) -> None:
    for worker, n, message in [("worker-1", -1, "max_jobs must be at least 0, got -1"),
                               ("abc", 1, "INVALID_WORKER_ID")]:  # fmt: skip
        with pytest.raises(DBAPIError, match=message), engine.connect() as connection:
            cycle(connection, worker, n=n)


def test_get_jobs_refuses_a_batch_size_below_one(engine: Engine) -> None:
    with (
        pytest.raises(DBAPIError, match="max_jobs must be at least 1, got 0") as info,
        engine.connect() as c,
    ):
        c.execute(sql("SELECT * FROM app_jobs.get_jobs('worker-1', NULL, NULL, 0)"))
    assert sqlstate(info.value) == "22023"


def test_complete_and_fail_batches_touch_only_held_jobs(engine: Engine) -> None:
    with engine.begin() as connection:
        mine = [add(connection, queue_name=f"q{i}").id for i in range(4)]
        connection.execute(sql("SELECT * FROM app_jobs.get_jobs('worker-1', NULL, NULL, 4)"))
        theirs = add(connection).id
        take(connection, "worker-2")
        done = (
            connection.execute(
                sql("SELECT id FROM app_jobs.complete_job_batch('worker-1', :ids)"),
                {"ids": [mine[0], mine[1], theirs]},
            )
            .scalars()
            .all()
        )
        assert sorted(done) == mine[:2]
        failed = connection.execute(
            sql("SELECT id, last_error FROM app_jobs.fail_job_batch('worker-1', :ids, :errors)"),
            {"ids": [mine[2], mine[3], theirs], "errors": ["e2", None, "e-theirs"]},
        ).all()
        assert sorted(failed) == [(mine[2], "e2"), (mine[3], "job failed without an error message")]
        still = job(connection, theirs)
        assert still is not None and (still.locked_by, still.last_error) == ("worker-2", None)
        locked = connection.execute(
            sql("SELECT count(*) FROM app_jobs.job_queues WHERE locked_by IS NOT NULL")
        )
        assert locked.scalar_one() == 0


def test_fail_job_batch_refuses_mismatched_messages(engine: Engine) -> None:
    with pytest.raises(DBAPIError, match="error_messages has 1 elements but job_ids has 2") as info:
        with engine.connect() as connection:
            connection.execute(
                sql(
                    "SELECT * FROM app_jobs.fail_job_batch('worker-1', ARRAY[1, 2]::bigint[],"
                    " ARRAY['x'])"
                )
            )
    assert sqlstate(info.value) == "22023"


def test_add_jobs_enqueues_thousands_in_one_statement_with_one_notify(engine: Engine) -> None:
    n = 5000
    with listening(engine.url, "jobs:insert") as listener:
        with engine.begin() as connection:
            rows = connection.execute(
                sql("SELECT * FROM app_jobs.add_jobs(:tasks, :payloads)"),
                {
                    "tasks": ["bulk"] * n,
                    "payloads": [Json({"i": i}) for i in range(n)],
                },
            ).all()
            assert notifications(listener, timeout=0.1) == []  # nothing before commit
        assert len(rows) == n
        assert [row.payload["i"] for row in rows] == list(range(n))
        assert notifications(listener) == ["jobs:insert"]


def test_add_jobs_follows_add_job_rules_for_keys_and_defaults(engine: Engine) -> None:
    with engine.begin() as connection:
        existing = add(connection, "old", job_key="k1")
        rows = connection.execute(
            sql(
                "SELECT * FROM app_jobs.add_jobs(ARRAY['a', 'b', 'c', 'd'],"
                " NULL, ARRAY[NULL, NULL, :tenant, NULL]::uuid[], ARRAY[NULL, 'k1', 'k1', 'k2'],"
                " NULL, NULL, ARRAY[NULL, 3, NULL, NULL]::int[], NULL)"
            ),
            {"tenant": TENANT_A},
        ).all()
        assert len(rows) == 4
        assert count(connection) == 4
        updated = job(connection, existing.id)
        assert updated is not None and (updated.task_identifier, updated.max_attempts) == ("b", 3)
        assert count(connection, "key = 'k1'") == 2  # one per tenant
        assert all(row.payload == {} and row.priority == 0 for row in rows)


def test_add_jobs_with_mismatched_arrays_changes_nothing(engine: Engine) -> None:
    with pytest.raises(DBAPIError, match="payloads has 1 elements but identifiers has 2") as info:
        with engine.begin() as connection:
            connection.execute(
                sql("SELECT * FROM app_jobs.add_jobs(ARRAY['a', 'b'], ARRAY['{}']::json[])")
            )
    assert sqlstate(info.value) == "22023"
    with engine.connect() as connection:
        assert count(connection) == 0


# --- NOTIFY -------------------------------------------------------------------------------------


def test_notify_on_commit_of_add_job_and_when_jobs_become_runnable(engine: Engine) -> None:
    with listening(engine.url, "jobs:insert") as listener:
        with engine.begin() as connection:
            created = add(connection)
            take(connection)
        assert notifications(listener) == ["jobs:insert"]
        with engine.begin() as connection:
            connection.execute(sql("SELECT app_jobs.release_jobs('worker-1')"))
        assert notifications(listener) == ["jobs:insert"]
        with engine.begin() as connection:
            connection.execute(
                sql("SELECT * FROM app_jobs.reschedule_jobs(ARRAY[:id]::bigint[])"),
                {"id": created.id},
            )
        assert notifications(listener) == ["jobs:insert"]


def test_p5_keyed_update_of_a_pending_job_notifies(engine: Engine) -> None:
    with engine.begin() as connection:
        add(connection, job_key="k", run_at=_ago(connection, seconds=-3600))
    with listening(engine.url, "jobs:insert") as listener:
        with engine.begin() as connection:
            moved = add(connection, job_key="k")  # now due: workers must hear of it
        assert notifications(listener) == ["jobs:insert"]
    with engine.connect() as connection:
        assert take(connection).id == moved.id
