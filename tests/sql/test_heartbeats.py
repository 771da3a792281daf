"""Crash recovery in seconds: workers heartbeat, and a silent worker's jobs are recovered
after its own heartbeat timeout, while a live worker's job is never taken however long it
runs. Holders that never heartbeat (the reference Node worker) fall back to job_expiry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.helpers import sql

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row


def one(connection: Connection, statement: str, **params: Any) -> Row[Any]:
    return connection.execute(sql(statement), params).one()


def beat(connection: Connection, worker: str, timeout: str = "30 seconds") -> bool:
    return bool(
        connection.execute(
            sql("SELECT app_jobs.heartbeat(:w, CAST(:t AS interval))"), {"w": worker, "t": timeout}
        ).scalar_one()
    )


def test_heartbeat_registers_and_says_whether_the_worker_was_known(engine: Engine) -> None:
    with engine.begin() as connection:
        assert beat(connection, "worker-1") is False
        assert beat(connection, "worker-1", "10 seconds") is True
        row = one(connection, "SELECT * FROM app_jobs.workers")
        assert (row.worker_id, row.heartbeat_timeout.total_seconds()) == ("worker-1", 10)


def test_a_live_worker_keeps_its_job_however_long_it_runs(engine: Engine) -> None:
    with engine.begin() as connection:
        job = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 'long', NULL, NULL, 'q')")
        beat(connection, "worker-1")
        one(connection, "SELECT * FROM app_jobs.get_job('worker-1')")
        # Locked for a day: far beyond any job_expiry, but the holder still heartbeats.
        connection.execute(sql("UPDATE app_jobs.jobs SET locked_at = now() - interval '1 day'"))
        connection.execute(
            sql("UPDATE app_jobs.job_queues SET locked_at = now() - interval '1 day'")
        )
        other = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 'next', NULL, NULL, 'q')")
        assert one(connection, "SELECT * FROM app_jobs.get_job('worker-2')").id is None
        still = one(connection, "SELECT * FROM app_jobs.jobs WHERE id = :id", id=job.id)
        assert still.locked_by == "worker-1"
        assert other.id != job.id


def test_a_silent_worker_is_given_up_and_its_jobs_recovered(engine: Engine) -> None:
    with engine.begin() as connection:
        job = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't', NULL, NULL, 'q')")
        beat(connection, "crashed-1", "2 seconds")
        one(connection, "SELECT * FROM app_jobs.get_job('crashed-1')")
        connection.execute(
            sql("UPDATE app_jobs.workers SET last_heartbeat = now() - interval '3 seconds'")
        )
        taken = one(connection, "SELECT * FROM app_jobs.get_job('worker-2')")
        assert (taken.id, taken.attempts, taken.locked_by) == (job.id, 2, "worker-2")
        assert "worker crashed-1 stopped heartbeating" in taken.last_error
        queue = one(connection, "SELECT * FROM app_jobs.job_queues")
        assert queue.locked_by == "worker-2"
        workers = connection.execute(sql("SELECT worker_id FROM app_jobs.workers")).scalars().all()
        assert workers == []
        # If it was only paused, its next heartbeat says it had been given up for dead,
        # and it can no longer complete the job it lost.
        assert beat(connection, "crashed-1") is False
        assert (
            one(connection, "SELECT * FROM app_jobs.complete_job('crashed-1', :id)", id=job.id).id
            is None
        )


def test_an_unregistered_holder_falls_back_to_job_expiry(engine: Engine) -> None:
    """A Node worker never heartbeats; Python and Node workers share the schema safely."""
    with engine.begin() as connection:
        job = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't')")
        one(connection, "SELECT * FROM app_jobs.get_job('node-worker')")
        connection.execute(sql("UPDATE app_jobs.jobs SET locked_at = now() - interval '3 hours'"))
        assert one(connection, "SELECT * FROM app_jobs.get_job('py-worker')").id is None
        connection.execute(sql("UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours'"))
        assert one(connection, "SELECT * FROM app_jobs.get_job('py-worker')").id == job.id


def test_release_jobs_unregisters_the_worker(engine: Engine) -> None:
    with engine.begin() as connection:
        beat(connection, "worker-1")
        connection.execute(sql("SELECT app_jobs.release_jobs('worker-1')"))
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.workers")).scalar_one() == 0


def test_next_run_at_is_the_earliest_takeable_job(engine: Engine) -> None:
    with engine.begin() as connection:
        assert connection.execute(sql("SELECT app_jobs.next_run_at()")).scalar_one() is None
        now = connection.execute(sql("SELECT now()")).scalar_one()
        for task, delay, priority in [
            ("a", "1 hour", 0),
            ("b", "10 minutes", 5),
            ("a", "2 hours", -3),
        ]:
            connection.execute(
                sql(
                    "SELECT app_jobs.add_job(NULL, :t, NULL, NULL, NULL,"
                    " now() + CAST(:d AS interval), NULL, :p)"
                ),
                {"t": task, "d": delay, "p": priority},
            )
        dead = one(
            connection, "SELECT * FROM app_jobs.add_job(NULL, 'a', NULL, NULL, NULL, NULL, 1)"
        )
        connection.execute(
            sql("UPDATE app_jobs.jobs SET attempts = 1 WHERE id = :id"), {"id": dead.id}
        )

        def next_run(tasks: list[str] | None) -> Any:
            return connection.execute(
                sql("SELECT app_jobs.next_run_at(:tasks)"), {"tasks": tasks}
            ).scalar_one()

        assert (next_run(None) - now).total_seconds() == 600
        assert (next_run(["a"]) - now).total_seconds() == 3600
        assert next_run(["c"]) is None


def test_release_jobs_can_keep_the_jobs_a_worker_still_runs(engine: Engine) -> None:
    """After a reconnect a worker gives back what a lost answer handed it, and keeps the rest."""
    with engine.begin() as connection:
        running = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't', NULL, NULL, 'q1')")
        lost = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't', NULL, NULL, 'q2')")
        beat(connection, "worker-1")
        connection.execute(sql("SELECT * FROM app_jobs.get_jobs('worker-1', NULL, NULL, 2)"))
        connection.execute(
            sql("SELECT app_jobs.release_jobs('worker-1', ARRAY[:id]::bigint[])"),
            {"id": running.id},
        )
        kept = one(connection, "SELECT * FROM app_jobs.jobs WHERE id = :id", id=running.id)
        given = one(connection, "SELECT * FROM app_jobs.jobs WHERE id = :id", id=lost.id)
        assert (kept.locked_by, kept.attempts) == ("worker-1", 1)
        assert (given.locked_by, given.attempts) == (None, 0)
        queues = dict(
            connection.execute(sql("SELECT queue_name, locked_by FROM app_jobs.job_queues")).all()
        )
        assert queues == {"q1": "worker-1", "q2": None}
        # Still registered: it keeps running.
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.workers")).scalar_one() == 1


def test_next_run_at_includes_when_a_silent_workers_jobs_become_recoverable(engine: Engine) -> None:
    with engine.begin() as connection:
        one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't')")
        beat(connection, "worker-1", "20 seconds")
        one(connection, "SELECT * FROM app_jobs.get_job('worker-1')")
        now = connection.execute(sql("SELECT now()")).scalar_one()
        at = connection.execute(sql("SELECT app_jobs.next_run_at()")).scalar_one()
        assert (at - now).total_seconds() == 20


def test_admin_functions_leave_a_live_workers_job_alone_unless_forced(engine: Engine) -> None:
    with engine.begin() as connection:
        job = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't')")
        beat(connection, "worker-1")
        one(connection, "SELECT * FROM app_jobs.get_job('worker-1')")
        # Running for a day: older than any job_expiry, but its worker is alive.
        connection.execute(sql("UPDATE app_jobs.jobs SET locked_at = now() - interval '1 day'"))
        for call in (
            "SELECT * FROM app_jobs.complete_jobs(ARRAY[:id]::bigint[])",
            "SELECT * FROM app_jobs.permanently_fail_jobs(ARRAY[:id]::bigint[])",
            "SELECT * FROM app_jobs.reschedule_jobs(ARRAY[:id]::bigint[], now())",
        ):
            assert connection.execute(sql(call), {"id": job.id}).all() == []
        still = one(connection, "SELECT * FROM app_jobs.jobs WHERE id = :id", id=job.id)
        assert (still.locked_by, still.attempts) == ("worker-1", 1)
        # Forced, the operator takes it back.
        moved = one(
            connection,
            "SELECT * FROM app_jobs.reschedule_jobs(ARRAY[:id]::bigint[], now(), NULL, 0,"
            " NULL, NULL, true)",
            id=job.id,
        )
        assert (moved.locked_by, moved.attempts) == (None, 0)
        # A silent worker's job is fair game once its heartbeat has run out.
        one(connection, "SELECT * FROM app_jobs.get_job('worker-1')")
        connection.execute(
            sql("UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 minute'")
        )
        failed = connection.execute(
            sql(
                "SELECT * FROM app_jobs.permanently_fail_jobs(ARRAY[:id]::bigint[], 'stuck',"
                " interval '1 second')"
            ),
            {"id": job.id},
        ).one()
        assert (failed.last_error, failed.locked_by) == ("stuck", None)


def test_a_restart_of_postgresql_counts_as_every_workers_heartbeat(engine: Engine) -> None:
    """No heartbeat gets through while the server is down: after a restart, a worker whose
    last heartbeat is older than its timeout keeps its jobs until heartbeat_timeout after
    the server's start, so the first worker back does not take over one still reconnecting."""
    with engine.begin() as connection:
        job = one(connection, "SELECT * FROM app_jobs.add_job(NULL, 't', NULL, NULL, 'q')")
        beat(connection, "slow-to-return")
        one(connection, "SELECT * FROM app_jobs.get_job('slow-to-return')")
        # Heard from an hour before this server started; its timeout runs out 10 minutes
        # from now if counted from the start, 50 minutes ago if counted from the heartbeat.
        connection.execute(
            sql(
                "UPDATE app_jobs.workers SET last_heartbeat ="
                " pg_postmaster_start_time() - interval '1 hour',"
                " heartbeat_timeout = now() - pg_postmaster_start_time() + interval '10 minutes'"
            )
        )
        assert one(connection, "SELECT * FROM app_jobs.get_job('first-back')").id is None
        held = one(connection, "SELECT * FROM app_jobs.jobs WHERE id = :id", id=job.id)
        assert held.locked_by == "slow-to-return"
        until = one(
            connection,
            "SELECT app_jobs.next_run_at() - now() AS wait,"
            " app_jobs.lock_is_held(now(), 'slow-to-return', now()) AS held",
        )
        assert 590 <= until.wait.total_seconds() <= 600 and until.held
