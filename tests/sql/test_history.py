"""The job history of schema version 2: what each way of finishing a job records, the
retention rules, and pruning in bounded batches (SQL functions, wrappers, a real worker).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import func, select, text, update

from sqla_pgjobs import InvalidArgumentError, TaskRegistry, Worker
from sqla_pgjobs.database import on_schema
from sqla_pgjobs.functions import (
    add_job,
    complete_job,
    complete_jobs,
    discard_jobs,
    fail_job,
    get_jobs,
    permanently_fail_jobs,
    prune_job_history,
    recover_jobs,
    set_history_retention,
)
from sqla_pgjobs.history import MIN_BATCH, prune
from sqla_pgjobs.schema import install
from sqla_pgjobs.tables import history_retention, job_history, jobs
from tests.helpers import SCHEMA, libpq_url, raw, sql, wait_for

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

WORKER = "worker-1"
NODE = "node-worker-1"  # a holder that never heartbeats, as the reference Node worker


def history(connection: Connection, **where: Any) -> list[Any]:
    """History rows, oldest first, optionally filtered by column values."""
    statement = select(job_history).order_by(job_history.c.id)
    for name, value in where.items():
        statement = statement.where(job_history.c[name] == value)
    return list(connection.execute(statement))


def take(connection: Connection, worker: str = WORKER, n: int = 10) -> list[int]:
    return [row.id for row in connection.execute(get_jobs(worker, max_jobs=n))]


def make_due(connection: Connection, job_id: int) -> None:
    connection.execute(
        update(jobs).where(jobs.c.id == job_id).values(run_at=func.now() - timedelta(seconds=1))
    )


# --- What each way of finishing records -------------------------------------------------------


def test_a_completed_job_leaves_one_row_with_what_an_operator_asks(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        job = connection.execute(
            add_job(
                "send_receipt",
                {"order_id": 42},
                job_key="receipt:42",
                queue_name="mail",
                priority=3,
                max_attempts=5,
            )
        ).one()
    with jobs_engine.begin() as connection:
        [taken] = connection.execute(get_jobs(WORKER, max_jobs=1)).all()
    time.sleep(0.01)  # the run takes a measurable time
    with jobs_engine.begin() as connection:
        assert [row.id for row in connection.execute(complete_job(WORKER, job.id))] == [job.id]
    with jobs_engine.begin() as connection:
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 0
        [row] = history(connection)
        now = connection.execute(select(func.now())).scalar_one()
    assert (row.job_id, row.task_identifier, row.queue_name, row.payload, row.key) == (
        job.id,
        "send_receipt",
        "mail",
        {"order_id": 42},
        "receipt:42",
    )
    assert (row.priority, row.attempts, row.max_attempts, row.outcome) == (3, 1, 5, "completed")
    assert (row.created_at, row.run_at) == (job.created_at, job.run_at)
    assert row.started_at == row.first_started_at == taken.locked_at
    assert row.worker_id == WORKER and row.last_error is None
    assert timedelta(seconds=0.01) <= row.finished_at - row.started_at < timedelta(seconds=30)
    assert row.finished_at <= now
    assert row.expires_at == row.finished_at + timedelta(days=1)


def test_the_worker_cycle_records_its_whole_batch_in_its_own_statement(
    jobs_engine: Engine,
) -> None:
    with jobs_engine.begin() as connection:
        ids = [connection.execute(add_job("t", {"n": n})).one().id for n in range(5)]
        taken = take(connection)
    assert sorted(taken) == ids
    with jobs_engine.begin() as connection:
        cycle = connection.execute(
            sql(
                "SELECT completed, failed FROM app_jobs.worker_cycle(:worker,"
                " CAST(:done AS bigint[]), CAST(:failed AS bigint[]), CAST(:errors AS text[]))"
            ),
            {
                "worker": WORKER,
                "done": ids[:4],
                "failed": ids[4:],
                "errors": ["Traceback (most recent call last):\n  boom"],
            },
        ).one()
        assert (cycle.completed, cycle.failed) == (4, 1)
        rows = sorted(history(connection), key=lambda row: row.job_id)
    # The failed job will be retried: it is not finished, so it has no row yet.
    assert [(row.job_id, row.outcome) for row in rows] == [(i, "completed") for i in ids[:4]]


def test_a_job_retried_then_completed_keeps_its_first_start_and_earlier_error(
    jobs_engine: Engine,
) -> None:
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("flaky")).one().id
        [first] = connection.execute(get_jobs(WORKER)).all()
        connection.execute(fail_job(WORKER, job_id, "first try: timeout"))
        assert (
            connection.execute(
                text(raw("SELECT count(*) FROM app_jobs.job_first_starts"))
            ).scalar_one()
            == 1
        )
    with jobs_engine.begin() as connection:
        make_due(connection, job_id)
        [second] = connection.execute(get_jobs(WORKER)).all()
        connection.execute(complete_job(WORKER, job_id))
        [row] = history(connection)
        left = connection.execute(text(raw("SELECT count(*) FROM app_jobs.job_first_starts")))
        assert left.scalar_one() == 0
    assert row.first_started_at == first.locked_at < row.started_at == second.locked_at
    assert (row.attempts, row.outcome, row.last_error) == (2, "completed", "first try: timeout")


def test_a_job_whose_last_attempt_fails_is_recorded_failed_and_stays_visibly_failed(
    jobs_engine: Engine,
) -> None:
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("doomed", max_attempts=2)).one().id
    for attempt in (1, 2):
        with jobs_engine.begin() as connection:
            make_due(connection, job_id)
            [taken] = connection.execute(get_jobs(WORKER)).all()
            connection.execute(fail_job(WORKER, job_id, f"attempt {attempt} failed"))
            rows = history(connection)
        assert len(rows) == attempt - 1
    [row] = rows
    assert (row.outcome, row.attempts, row.last_error, row.worker_id) == (
        "failed",
        2,
        "attempt 2 failed",
        WORKER,
    )
    assert row.run_at == taken.run_at  # when it was due, not a retry that will never come
    assert row.started_at == taken.locked_at and row.first_started_at < row.started_at
    assert row.expires_at == row.finished_at + timedelta(days=14)
    with jobs_engine.begin() as connection:
        [kept] = connection.execute(select(jobs)).all()
    assert (kept.id, kept.attempts, kept.locked_by) == (job_id, 2, None)


def test_permanently_failing_records_once_even_when_called_again(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        pending = connection.execute(add_job("a")).one().id
        held = connection.execute(add_job("b")).one().id
    with jobs_engine.begin() as connection:
        connection.execute(
            update(jobs).where(jobs.c.id == pending).values(run_at=func.now() + timedelta(hours=1))
        )
        [taken] = connection.execute(get_jobs(WORKER)).all()
        assert taken.id == held
        done = connection.execute(permanently_fail_jobs([pending, held], "bad data", force=True))
        assert sorted(row.id for row in done) == [pending, held]
    with jobs_engine.begin() as connection:
        again = connection.execute(permanently_fail_jobs([pending, held], "still bad"))
        assert sorted(row.id for row in again) == [pending, held]
        rows = sorted(history(connection), key=lambda row: row.job_id)
    assert [(r.job_id, r.outcome, r.last_error) for r in rows] == [
        (pending, "failed", "bad data"),
        (held, "failed", "bad data"),
    ]
    # The job no one ran has no start and no worker; the held one has its worker's.
    assert (rows[0].started_at, rows[0].worker_id) == (None, None)
    assert (rows[1].started_at, rows[1].worker_id) == (taken.locked_at, WORKER)


def test_complete_jobs_by_an_operator_records_completed(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("a")).one().id
        assert [row.id for row in connection.execute(complete_jobs([job_id]))] == [job_id]
        [row] = history(connection)
    assert (row.job_id, row.outcome, row.attempts, row.started_at) == (job_id, "completed", 0, None)


def test_discarding_a_job_records_it_discarded(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("a", {"n": 1})).one().id
        assert [row.id for row in connection.execute(discard_jobs([job_id]))] == [job_id]
        [row] = history(connection)
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 0
    assert (row.job_id, row.outcome, row.payload) == (job_id, "discarded", {"n": 1})
    assert row.expires_at == row.finished_at + timedelta(days=7)


def test_a_holder_that_dies_on_the_last_attempt_leaves_a_failed_row(jobs_engine: Engine) -> None:
    """Both ways recover_jobs frees jobs: a registered worker gone silent, and a holder that
    never heartbeats whose lock expired. Only jobs with no attempt left are finished."""
    with jobs_engine.begin() as connection:
        a = connection.execute(add_job("a", max_attempts=1)).one().id
        b = connection.execute(add_job("b", max_attempts=1)).one().id
        c = connection.execute(add_job("c", max_attempts=3)).one().id
        [by_gone] = connection.execute(get_jobs("gone-1", max_jobs=1)).all()
        by_node = connection.execute(get_jobs(NODE, max_jobs=2)).all()
        assert (by_gone.id, sorted(row.id for row in by_node)) == (a, [b, c])
        connection.execute(
            sql(
                "INSERT INTO app_jobs.workers (worker_id, heartbeat_timeout, last_heartbeat)"
                " VALUES ('gone-1', interval '1 second', now() - interval '1 minute')"
            )
        )
        connection.execute(
            update(jobs)
            .where(jobs.c.locked_by == NODE)
            .values(locked_at=jobs.c.locked_at - timedelta(hours=5))
        )
    with jobs_engine.begin() as connection:
        connection.execute(recover_jobs(job_expiry=timedelta(hours=1)))
        rows = sorted(history(connection), key=lambda row: row.job_id)
        left = {row.id: row for row in connection.execute(select(jobs))}
    assert set(left) == {a, b, c} and {row.locked_by for row in left.values()} == {None}
    assert [(r.job_id, r.outcome, r.attempts, r.worker_id) for r in rows] == [
        (a, "failed", 1, "gone-1"),
        (b, "failed", 1, NODE),
    ]
    assert rows[0].started_at == by_gone.locked_at
    assert rows[1].started_at == by_node[0].locked_at - timedelta(hours=5)
    assert [row.last_error for row in rows] == [left[a].last_error, left[b].last_error]
    assert "stopped heartbeating" in rows[0].last_error and "expired" in rows[1].last_error


def test_the_node_workers_calls_are_recorded_too(jobs_engine: Engine) -> None:
    """The reference worker's exact calls: SELECT * FROM get_job($1, $2), complete_job,
    fail_job (through psycopg, as a client that knows nothing of version 2)."""
    with jobs_engine.begin() as connection:
        ok = connection.execute(add_job("node_task", max_attempts=1)).one().id
        bad = connection.execute(add_job("node_task", max_attempts=1)).one().id
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        for _ in range(2):
            job = db.execute(
                raw("SELECT * FROM app_jobs.get_job(%s, %s)"), (NODE, ["node_task"]), prepare=False
            ).fetchone()
            assert job is not None
            if job[0] == ok:
                db.execute(raw("SELECT * FROM app_jobs.complete_job(%s, %s)"), (NODE, ok))
            else:
                db.execute(
                    raw("SELECT * FROM app_jobs.fail_job(%s, %s, %s)"), (NODE, bad, "node says no")
                )
    with jobs_engine.begin() as connection:
        rows = history(connection)
    assert sorted((r.job_id, r.outcome, r.worker_id) for r in rows) == [
        (ok, "completed", NODE),
        (bad, "failed", NODE),
    ]


# --- Retention rules --------------------------------------------------------------------------


def finish(connection: Connection, task: str, queue: str | None = None) -> None:
    job_id = connection.execute(add_job(task, queue_name=queue)).one().id
    connection.execute(complete_jobs([job_id]))


def test_the_most_specific_rule_wins_and_zero_records_nothing(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        connection.execute(
            set_history_retention("completed", timedelta(0), task_identifier="noisy")
        )
        connection.execute(set_history_retention("completed", timedelta(hours=2), queue_name="q"))
        connection.execute(
            set_history_retention(
                "completed", timedelta(hours=3), task_identifier="noisy", queue_name="q"
            )
        )
        connection.execute(set_history_retention("completed", None, task_identifier="audit"))
        for task, queue in [
            ("noisy", None),
            ("noisy", "q"),
            ("other", "q"),
            ("other", None),
            ("audit", "q"),
        ]:
            finish(connection, task, queue)
        rows = history(connection)
    kept = [
        (
            r.task_identifier,
            r.queue_name,
            "forever" if r.expires_at is None else r.expires_at - r.finished_at,
        )
        for r in rows
    ]
    assert kept == [
        ("noisy", "q", timedelta(hours=3)),
        ("other", "q", timedelta(hours=2)),
        ("other", None, timedelta(days=1)),
        ("audit", "q", "forever"),
    ]


def test_setting_a_rule_again_replaces_it(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        connection.execute(set_history_retention("failed", timedelta(days=30)))
        [rule] = connection.execute(set_history_retention("failed", timedelta(days=2))).all()
        rules = connection.execute(
            select(history_retention).where(history_retention.c.outcome == "failed")
        ).all()
    assert (rule.outcome, rule.keep, rule.task_identifier) == ("failed", timedelta(days=2), None)
    assert [tuple(r) for r in rules] == [(None, None, "failed", timedelta(days=2))]


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        (("finished", timedelta(days=1)), "outcome"),
        (("completed", timedelta(days=-1)), "keep"),
        (("completed", timedelta(days=400_000)), "keep"),
        (("completed", 3600), "keep"),
    ],
)
def test_bad_retention_is_refused_by_the_wrapper_naming_the_argument(
    jobs_engine: Engine, arguments: tuple[Any, Any], argument: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        set_history_retention(*arguments)
    bad = arguments[0] if argument == "outcome" else arguments[1]
    assert (info.value.argument, info.value.value) == (argument, bad)
    assert "it must be" in str(info.value)


@pytest.mark.parametrize(
    ("call", "argument", "message"),
    [
        (
            "'finished', interval '1 day'",
            "outcome",
            "outcome 'finished' is not one of completed, failed, cancelled, discarded",
        ),
        ("NULL, interval '1 day'", "outcome", "outcome NULL is not one of"),
        ("'completed', interval '-1 day'", "keep", "keep must be zero (record nothing), NULL"),
    ],
)
def test_raw_sql_refuses_bad_retention_and_changes_nothing(
    jobs_engine: Engine, call: str, argument: str, message: str
) -> None:
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        before = db.execute(
            raw("SELECT * FROM app_jobs.history_retention ORDER BY 1, 2, 3")
        ).fetchall()
        with pytest.raises(psycopg.Error) as info:
            db.execute(raw(f"SELECT app_jobs.set_history_retention({call})"))
        after = db.execute(
            raw("SELECT * FROM app_jobs.history_retention ORDER BY 1, 2, 3")
        ).fetchall()
    assert (info.value.sqlstate, info.value.diag.column_name) == ("22023", argument)
    assert message in (info.value.diag.message_primary or "")
    assert before == after and len(before) == 4


# --- Pruning ------------------------------------------------------------------------------------


def fill_history(connection: Connection, rows: int, *, expired: bool) -> None:
    """rows history rows, expired or kept for a day, written directly (the owner may)."""
    connection.execute(
        sql(
            "INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,"
            " attempts, max_attempts, created_at, run_at, finished_at, outcome, expires_at)"
            " SELECT g, 't', '{}', 0, 1, 25, now(), now(), now() - interval '2 days',"
            " 'completed', CASE WHEN :expired THEN now() - interval '1 day'"
            " ELSE now() + interval '1 day' END FROM generate_series(1, :rows) g"
        ),
        {"rows": rows, "expired": expired},
    )


def count_history(connection: Connection) -> int:
    return connection.execute(select(func.count()).select_from(job_history)).scalar_one()


def remaining_history(engine: Engine) -> int:
    with engine.begin() as connection:
        return count_history(connection)


def test_one_prune_call_deletes_at_most_max_rows_of_the_expired_rows(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        fill_history(connection, 250, expired=True)
        fill_history(connection, 10, expired=False)
    with jobs_engine.begin() as connection:
        assert connection.execute(prune_job_history(max_rows=100)).scalar_one() == 100
        assert count_history(connection) == 160
    with jobs_engine.begin() as connection:
        assert connection.execute(prune_job_history()).scalar_one() == 150
        assert connection.execute(prune_job_history()).scalar_one() == 0
        assert count_history(connection) == 10
        # older_than ignores expiry: the kept rows finished two days ago.
        assert connection.execute(prune_job_history(older_than=timedelta(days=3))).scalar_one() == 0
        assert (
            connection.execute(prune_job_history(older_than=timedelta(days=1))).scalar_one() == 10
        )


def test_prune_runs_batches_until_nothing_expired_is_left(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        fill_history(connection, 1050, expired=True)
        fill_history(connection, 7, expired=False)
    result = prune(jobs_engine, batch=MIN_BATCH * 2, pause=0)
    assert (result.deleted, result.batches, result.timeouts) == (1050, 6, 0)
    assert result.longest_batch > 0
    with jobs_engine.begin() as connection:
        assert count_history(connection) == 7
    assert prune(jobs_engine, pause=0).deleted == 0


def test_prune_skips_rows_another_pruner_holds(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        fill_history(connection, 300, expired=True)
    with jobs_engine.connect() as holder:
        held = holder.execute(
            select(job_history.c.id).order_by(job_history.c.expires_at).limit(100).with_for_update()
        ).all()
        assert len(held) == 100
        done = threading.Event()

        def other() -> None:
            with jobs_engine.begin() as connection:
                assert connection.execute(prune_job_history()).scalar_one() == 200
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert done.is_set(), "prune waited for rows another transaction holds"
        holder.rollback()
    with jobs_engine.begin() as connection:
        assert count_history(connection) == 100


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"batch": 10}, "batch"),
        ({"batch": True}, "batch"),
        ({"pause": -1}, "pause"),
        ({"older_than": timedelta(0)}, "older_than"),
        ({"max_batches": 0}, "max_batches"),
        ({"batch_timeout": timedelta(0)}, "batch_timeout"),
    ],
)
def test_prune_refuses_bad_options_before_deleting_anything(
    jobs_engine: Engine, options: dict[str, Any], argument: str
) -> None:
    with jobs_engine.begin() as connection:
        fill_history(connection, 10, expired=True)
    with pytest.raises(InvalidArgumentError) as info:
        prune(jobs_engine, **options)
    assert info.value.argument == argument
    with jobs_engine.begin() as connection:
        assert count_history(connection) == 10


def test_raw_prune_refuses_zero_max_rows_and_a_bad_older_than(jobs_engine: Engine) -> None:
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        for call, argument in [("0", "max_rows"), ("10, interval '-1 day'", "older_than")]:
            with pytest.raises(psycopg.Error) as info:
                db.execute(raw(f"SELECT app_jobs.prune_job_history({call})"))
            assert (info.value.sqlstate, info.value.diag.column_name) == ("22023", argument)


# --- A real worker: nothing lost --------------------------------------------------------------


def test_every_job_a_worker_drains_ends_in_history_or_stays_visibly_failed(
    jobs_engine: Engine,
) -> None:
    tasks = TaskRegistry()

    def sometimes(payload: dict[str, int]) -> None:
        if payload["n"] % 7 == 0:
            raise ValueError(f"job {payload['n']} refuses")

    tasks.add("sometimes", sometimes)
    with jobs_engine.begin() as connection:
        for n in range(200):
            connection.execute(add_job("sometimes", {"n": n}, max_attempts=1))
    worker = Worker(jobs_engine, tasks, schema=SCHEMA)
    stats = worker.run(drain=True, install_signal_handlers=False)
    assert stats.processed == 200
    with jobs_engine.begin() as connection:
        rows = history(connection)
        left = connection.execute(select(jobs)).all()
    outcomes = {row.payload["n"]: row.outcome for row in rows}
    assert len(rows) == 200 == len(outcomes)
    assert outcomes == {n: "failed" if n % 7 == 0 else "completed" for n in range(200)}
    assert sorted(job.payload["n"] for job in left) == [n for n in range(200) if n % 7 == 0]
    failed = next(row for row in rows if row.outcome == "failed")
    assert "Traceback (most recent call last)" in failed.last_error
    assert "ValueError: job" in failed.last_error
    assert {row.worker_id for row in rows} == {worker.worker_id}


# --- One pruner at a time: the maintenance lease and the worker's pruning ---------------------


def claim(connection: Connection, worker: str, every: str = "1 hour") -> bool:
    return bool(
        connection.execute(
            sql(f"SELECT app_jobs.claim_maintenance('prune_job_history', :w, interval '{every}')"),
            {"w": worker},
        ).scalar_one()
    )


def test_one_claimer_per_interval_gets_the_prune_lease(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        assert claim(connection, "worker-a") is True
        assert claim(connection, "worker-b") is False
        by = connection.execute(sql("SELECT last_run_by FROM app_jobs.maintenance")).scalar_one()
    assert by == "worker-a"
    # Concurrent claims once the interval is over: exactly one wins.
    with jobs_engine.begin() as connection:
        connection.execute(sql("UPDATE app_jobs.maintenance SET last_run_at = 'epoch'"))
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race(name: str) -> None:
        with jobs_engine.begin() as connection:
            barrier.wait()
            results.append(claim(connection, name))

    threads = [threading.Thread(target=race, args=(f"racer-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [False, False, False, True]


def test_claiming_an_unknown_task_or_a_bad_interval_is_refused(jobs_engine: Engine) -> None:
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        for call, argument in [
            ("'vacuum', 'worker-a', interval '1 hour'", "name"),
            ("'prune_job_history', 'worker-a', interval '0'", "every"),
        ]:
            with pytest.raises(psycopg.Error) as info:
                db.execute(raw(f"SELECT app_jobs.claim_maintenance({call})"))
            assert (info.value.sqlstate, info.value.diag.column_name) == ("22023", argument)
        last = db.execute(raw("SELECT last_run_by FROM app_jobs.maintenance")).fetchone()
    assert last == (None,)


def test_running_workers_prune_expired_history_one_at_a_time(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        fill_history(connection, 2500, expired=True)
        fill_history(connection, 5, expired=False)
    workers = [
        Worker(
            jobs_engine, TaskRegistry(), schema=SCHEMA, prune_interval=0.3, worker_id=f"pruner-{n}"
        )
        for n in range(2)
    ]
    threads = [
        threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}) for w in workers
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: remaining_history(jobs_engine) == 5, describe=lambda: "pruned")
    finally:
        for w in workers:
            w.stop()
        for thread in threads:
            thread.join(30)
    with jobs_engine.begin() as connection:
        assert count_history(connection) == 5
        by = connection.execute(sql("SELECT last_run_by FROM app_jobs.maintenance")).scalar_one()
    assert by in {"pruner-0", "pruner-1"}


def test_a_worker_on_a_version_1_schema_runs_jobs_and_leaves_pruning_off(
    empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Mid-way through a rolling upgrade the schema may still be at version 1."""
    with empty_engine.begin() as connection:
        install(connection, SCHEMA, version=1)
    v1 = on_schema(empty_engine, SCHEMA)
    done = threading.Event()
    tasks = TaskRegistry()
    tasks.add("ping", lambda payload: done.set())
    worker = Worker(v1, tasks, schema=SCHEMA, prune_interval=0.1)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    with caplog.at_level(logging.INFO, logger="sqla_pgjobs.worker"):
        thread.start()
        try:
            wait_for(lambda: "no history to prune" in caplog.text)
            with v1.begin() as connection:
                connection.execute(add_job("ping"))
            assert done.wait(20)
        finally:
            worker.stop()
            thread.join(30)
    assert "no history to prune (version 1)" in caplog.text
    assert worker.stats.processed == 1
