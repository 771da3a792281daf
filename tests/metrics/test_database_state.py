"""The database-state collector (sqla_pgjobs.metrics.database_state) against direct counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqla_pgjobs import JobSpec, add_job, add_jobs, add_scheduled_job
from sqla_pgjobs.metrics import database_state
from tests.helpers import sql
from tests.metrics.workload import collected, direct_counts, execute, known_workload

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def test_the_counts_equal_a_direct_count_of_the_table(jobs_engine: Engine) -> None:
    known_workload(jobs_engine)
    with jobs_engine.connect() as connection:
        counts = database_state.job_counts(connection)
    assert not counts.estimated
    assert collected(counts) == direct_counts(jobs_engine)
    assert counts.total("due", queue="a") == 7 and counts.total("failed") == 2
    assert counts.total("delayed", task="report") == 5 and counts.total("running") == 1
    assert counts.total() == 7 + 3 + 4 + 5 + 2


def test_on_a_large_table_a_sample_is_scaled_to_the_table_and_running_jobs_stay_exact(
    jobs_engine: Engine,
) -> None:
    execute(jobs_engine, add_jobs(JobSpec("bulk", queue_name="q") for _ in range(20_000)))
    known_workload(jobs_engine)
    with jobs_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sql("VACUUM ANALYZE app_jobs.jobs"))
        exact = database_state.job_counts(connection)
        # Pretend the table is large: half its pages sampled (so never an empty sample).
        sampled = database_state.job_counts(
            connection, exact_pages=0, sample_pages=max(1, exact.pages // 2)
        )
    assert not exact.estimated and sampled.estimated and exact.pages > 20
    assert collected(exact) == direct_counts(jobs_engine)
    # Scaled to the planner's row count, the total is right whatever pages were read.
    assert abs(sampled.total() - exact.total()) <= exact.total() * 0.01
    assert sampled.total("running") == exact.total("running") == 1
    # The big group is estimated within the sample's error (a half sample: a few percent).
    assert abs(sampled.total(task="bulk") - 20_000) < 20_000 * 0.15


def test_the_oldest_due_job_is_found_across_priorities(jobs_engine: Engine) -> None:
    with jobs_engine.connect() as connection:
        assert database_state.oldest_due_seconds(connection) == 0.0
    now = datetime.now(UTC)  # not the module's import time: a suite runs for minutes
    execute(
        jobs_engine,
        add_job("late", priority=5, run_at=now - timedelta(seconds=300)),
        add_job("recent", priority=-3, run_at=now - timedelta(seconds=10)),
        add_job("future", priority=9, run_at=now + timedelta(hours=1)),
    )
    # Neither a failed-for-good job nor a running one counts, however old.
    execute(
        jobs_engine,
        sql(
            "INSERT INTO app_jobs.jobs (task_identifier, run_at, attempts, max_attempts)"
            " VALUES ('dead', now() - interval '1 day', 1, 1)"
        ),
        sql(
            "INSERT INTO app_jobs.jobs (task_identifier, run_at, locked_at, locked_by)"
            " VALUES ('held', now() - interval '1 day', now(), 'someone')"
        ),
    )
    with jobs_engine.connect() as connection:
        age = database_state.oldest_due_seconds(connection)
    assert 300 <= age < 300 + 60


def test_only_future_jobs_means_nothing_is_due(jobs_engine: Engine) -> None:
    execute(jobs_engine, add_job("future", run_at=datetime.now(UTC) + timedelta(hours=1)))
    with jobs_engine.connect() as connection:
        assert database_state.oldest_due_seconds(connection) == 0.0


def test_workers_are_alive_by_alive_until(jobs_engine: Engine) -> None:
    execute(
        jobs_engine,
        sql(
            "INSERT INTO app_jobs.workers (worker_id, heartbeat_timeout, last_heartbeat) VALUES"
            " ('fresh-worker', interval '30 seconds', now()),"
            " ('silent-worker', interval '1 second', now() - interval '1 hour')"
        ),
    )
    with jobs_engine.connect() as connection:
        workers = database_state.worker_counts(connection)
        [expected] = connection.execute(
            sql(
                "SELECT count(*) FROM app_jobs.workers"
                " WHERE app_jobs.alive_until(last_heartbeat, heartbeat_timeout) >= now()"
            )
        )
    assert workers == database_state.WorkerCounts(alive=expected[0], registered=2)
    assert workers.alive >= 1


def test_a_schedule_whose_next_fire_has_passed_is_late(jobs_engine: Engine) -> None:
    [late] = execute(jobs_engine, add_scheduled_job("tick", schedule_info="* * * * *"))
    execute(
        jobs_engine,
        add_scheduled_job("never_fired", schedule_info="* * * * *"),
        add_scheduled_job("yearly", schedule_info="0 0 1 1 *"),
    )
    execute(
        jobs_engine,
        sql(
            "UPDATE app_jobs.scheduled_jobs SET last_scheduled = now() - interval '10 minutes'"
            f" WHERE id = {int(late.id)} OR task_identifier = 'yearly'"
        ),
    )
    with jobs_engine.connect() as connection:
        lag = database_state.schedule_lag(connection)
    # Every minute, last fired 10 minutes ago: 9 minutes late. The yearly one is not due,
    # and the one that never fired fires once a scheduler claims it.
    assert (lag.schedules, lag.overdue) == (3, 1)
    assert 9 * 60 - 5 <= lag.max_lag_seconds <= 9 * 60 + 60


def test_collect_reads_everything_in_one_go(jobs_engine: Engine) -> None:
    known_workload(jobs_engine)
    with jobs_engine.connect() as connection:
        state = database_state.collect(connection)
    assert collected(state.jobs) == direct_counts(jobs_engine)
    assert state.oldest_due_seconds >= 0 and state.schedules.schedules == 0
    assert state.workers == database_state.WorkerCounts(alive=0, registered=0)
