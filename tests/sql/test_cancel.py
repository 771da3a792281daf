"""Cancellation (schema version 2): cancel_jobs in SQL and as a wrapper, what each way a
requested job can end records, and a real worker stopping what it runs (async handlers
cancelled, plain ones polling ``job.cancel_requested``, prefetched jobs never started)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB

from sqla_pgjobs import InvalidArgumentError, Job, JobCancelledError, TaskRegistry, Worker
from sqla_pgjobs.functions import (
    CANCEL_RESULTS,
    add_job,
    cancel_jobs,
    complete_job,
    discard_jobs,
    fail_job,
    fail_job_batch,
    heartbeat,
    permanently_fail_jobs,
    release_jobs,
    reschedule_jobs,
)
from sqla_pgjobs.tables import cancel_requests, job_history, job_queues, jobs
from tests.helpers import libpq_url, listening, notifications, raw, sql, wait_for
from tests.sql.test_history import NODE, WORKER, history, take
from tests.worker.test_in_process import make_worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import URL, Connection, Engine


def cancel(connection: Connection, *job_ids: int) -> dict[int, str]:
    return {row.job_id: row.result for row in connection.execute(cancel_jobs(job_ids))}


def requests(connection: Connection) -> dict[int, str]:
    rows = connection.execute(select(cancel_requests.c.job_id, cancel_requests.c.worker_id))
    return {row.job_id: row.worker_id for row in rows}


def outcomes(connection: Connection) -> dict[int, str]:
    return {row.job_id: row.outcome for row in history(connection)}


def registered(connection: Connection, worker: str = WORKER) -> None:
    connection.execute(heartbeat(worker)).scalar_one()


# --- cancel_jobs ----------------------------------------------------------------------------


def test_cancel_reports_each_id_and_ends_waiting_jobs_at_once(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        registered(connection)
        waiting = connection.execute(add_job("a", {"n": 1}, queue_name="q")).one().id
        running = connection.execute(add_job("b", max_attempts=3)).one().id
        failed = connection.execute(add_job("c", max_attempts=1)).one().id
        done = connection.execute(add_job("d")).one().id
        connection.execute(
            update(jobs).where(jobs.c.id == waiting).values(run_at=func.now() + timedelta(days=1))
        )
    with jobs_engine.begin() as connection:
        assert sorted(take(connection)) == [running, failed, done]
        connection.execute(fail_job(WORKER, failed, "boom")).one()
        connection.execute(complete_job(WORKER, done)).one()
    with listening(jobs_engine.url, "jobs:cancel") as listener:
        with jobs_engine.begin() as connection:
            results = cancel(connection, done, running, waiting, failed, 999_999, waiting)
        assert notifications(listener) == ["jobs:cancel"]
    assert results == {
        waiting: "cancelled",
        running: "cancel_requested",
        failed: "already_failed",
        done: "already_finished",
        999_999: "not_found",
    }
    assert set(results.values()) == set(CANCEL_RESULTS)
    with jobs_engine.begin() as connection:
        assert outcomes(connection) == {failed: "failed", done: "completed", waiting: "cancelled"}
        [row] = history(connection, job_id=waiting)
        left = set(connection.execute(select(jobs.c.id)).scalars())
        assert requests(connection) == {running: WORKER}
    assert (row.payload, row.queue_name, row.attempts, row.started_at) == ({"n": 1}, "q", 0, None)
    assert left == {running, failed}  # the running one goes on until its worker stops it


def test_the_notification_names_the_holding_worker(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        for worker in (WORKER, "worker-2"):
            registered(connection, worker)
            connection.execute(add_job("t"))
            take(connection, worker, n=1)
        held = list(connection.execute(select(jobs.c.id)).scalars())
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as listener:
        listener.execute('LISTEN "jobs:cancel"')
        with jobs_engine.begin() as connection:
            cancel(connection, *held)
        payloads = sorted(n.payload for n in listener.notifies(timeout=0.5, stop_after=2))
    assert payloads == [WORKER, "worker-2"]


def test_cancelling_again_is_reported_the_same_and_keeps_the_first_request(
    jobs_engine: Engine,
) -> None:
    with jobs_engine.begin() as connection:
        registered(connection)
        job_id = connection.execute(add_job("t")).one().id
        take(connection)
        assert cancel(connection, job_id) == {job_id: "cancel_requested"}
        first = connection.execute(select(cancel_requests.c.requested_at)).scalar_one()
    with jobs_engine.begin() as connection:
        assert cancel(connection, job_id) == {job_id: "cancel_requested"}
        assert connection.execute(select(cancel_requests.c.requested_at)).scalar_one() == first


def test_a_select_of_ids_cancels_by_key_or_by_any_filter_in_one_statement(
    jobs_engine: Engine,
) -> None:
    with jobs_engine.begin() as connection:
        keyed = connection.execute(add_job("receipt", {"order": 42}, job_key="receipt:42")).one()
        other = connection.execute(add_job("receipt", {"order": 43})).one().id
        by_key = connection.execute(
            cancel_jobs(select(jobs.c.id).where(jobs.c.key == "receipt:42"))
        ).all()
        assert [(row.job_id, row.result) for row in by_key] == [(keyed.id, "cancelled")]
        assert (
            connection.execute(cancel_jobs(select(jobs.c.id).where(jobs.c.key == "x"))).all() == []
        )
        contains = cast(jobs.c.payload, JSONB).contains({"order": 43})
        by_payload = connection.execute(cancel_jobs(select(jobs.c.id).where(contains))).all()
        assert [(row.job_id, row.result) for row in by_payload] == [(other, "cancelled")]


def test_bad_arguments_are_refused_naming_them_and_change_nothing(jobs_engine: Engine) -> None:
    for call, argument in [
        (lambda: cancel_jobs(["1"]), "job_ids[0]"),  # type: ignore[list-item]
        (lambda: cancel_jobs(5), "job_ids"),  # type: ignore[arg-type]
        (lambda: cancel_jobs([1], job_expiry=timedelta(0)), "job_expiry"),
        (lambda: cancel_jobs(select(jobs.c.id, jobs.c.key)), "job_ids"),
    ]:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert info.value.argument == argument
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("t")).one().id
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        with pytest.raises(psycopg.Error) as raised:
            db.execute(
                raw("SELECT * FROM app_jobs.cancel_jobs(%s, interval '-1 hour')"), ([job_id],)
            )
        assert (raised.value.sqlstate, raised.value.diag.column_name) == ("22023", "job_expiry")
        assert db.execute(raw("SELECT * FROM app_jobs.cancel_jobs(NULL)")).fetchall() == []
        assert db.execute(raw("SELECT * FROM app_jobs.cancel_jobs('{}')")).fetchall() == []
    with jobs_engine.begin() as connection:
        assert connection.execute(select(jobs.c.id)).scalars().all() == [job_id]
        assert history(connection) == []


# --- How a requested job ends ---------------------------------------------------------------


def requested(engine: Engine, *, holder: str = WORKER, queue: str | None = None) -> int:
    """A job ``holder`` runs, whose cancellation has been requested."""
    with engine.begin() as connection:
        if holder != NODE:
            registered(connection, holder)
        job_id = connection.execute(add_job("long", queue_name=queue, max_attempts=5)).one().id
        assert take(connection, holder, n=1) == [job_id]
        assert cancel(connection, job_id) == {job_id: "cancel_requested"}
    return job_id


def ended(engine: Engine, job_id: int) -> tuple[bool, dict[int, str], list[Any]]:
    """Whether the job is still in the table, the requests left, and its history rows."""
    with engine.begin() as connection:
        present = connection.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first()
        return present is not None, requests(connection), history(connection, job_id=job_id)


def test_a_failed_run_of_a_requested_job_ends_it_cancelled_not_retried(
    jobs_engine: Engine,
) -> None:
    job_id = requested(jobs_engine, queue="serial")
    with jobs_engine.begin() as connection:
        failed = connection.execute(
            fail_job_batch(WORKER, [job_id], ["JobCancelledError: stop\n\nTraceback ..."])
        ).all()
        assert [row.id for row in failed] == [job_id]
        queue = connection.execute(select(job_queues).where(job_queues.c.queue_name == "serial"))
        assert all(row.locked_by is None for row in queue)
    present, left, [row] = ended(jobs_engine, job_id)
    assert (present, left) == (False, {})
    assert (row.outcome, row.attempts, row.worker_id) == ("cancelled", 1, WORKER)
    assert row.last_error.startswith("JobCancelledError: stop")
    assert row.started_at is not None


def test_a_requested_job_that_completes_anyway_is_recorded_completed(jobs_engine: Engine) -> None:
    job_id = requested(jobs_engine)
    with jobs_engine.begin() as connection:
        connection.execute(complete_job(WORKER, job_id)).one()
    present, left, [row] = ended(jobs_engine, job_id)
    assert (present, left, row.outcome) == (False, {}, "completed")


def test_a_requested_job_given_back_ends_cancelled_and_the_kept_ones_stay(
    jobs_engine: Engine,
) -> None:
    job_id = requested(jobs_engine)
    kept = requested(jobs_engine)
    with jobs_engine.begin() as connection:
        connection.execute(release_jobs(WORKER, [kept]))
    present, left, [row] = ended(jobs_engine, job_id)
    assert (present, left, row.outcome) == (False, {kept: WORKER}, "cancelled")
    assert "gave it back" in row.last_error
    with jobs_engine.begin() as connection:
        connection.execute(release_jobs(WORKER))
    assert ended(jobs_engine, kept)[0] is False


def test_a_requested_job_whose_worker_dies_ends_cancelled(jobs_engine: Engine) -> None:
    silent = requested(jobs_engine, holder="silent-worker")
    expired = requested(jobs_engine, holder=NODE)
    with jobs_engine.begin() as connection:
        connection.execute(
            sql(
                "UPDATE app_jobs.workers SET heartbeat_timeout = interval '1 second',"
                " last_heartbeat = now() - interval '1 hour' WHERE worker_id = 'silent-worker'"
            )
        )
        connection.execute(
            update(jobs)
            .where(jobs.c.id == expired)
            .values(locked_at=func.now() - timedelta(hours=5))
        )
    wait_for(lambda: _uptime_over(jobs_engine, timedelta(seconds=1)))
    with jobs_engine.begin() as connection:
        take(connection, "worker-2")  # get_jobs recovers first
    for job_id in (silent, expired):
        present, left, [row] = ended(jobs_engine, job_id)
        assert (present, left, row.outcome) == (False, {}, "cancelled")
        assert "its worker stopped" in row.last_error


def _uptime_over(engine: Engine, limit: timedelta) -> bool:
    """A worker counts as alive for its timeout after the server started (alive_until)."""
    with engine.connect() as connection:
        uptime = connection.execute(sql("SELECT now() - pg_postmaster_start_time()")).scalar_one()
    return bool(uptime > limit)


def test_the_reference_workers_fail_job_ends_a_requested_job_cancelled(
    jobs_engine: Engine,
) -> None:
    job_id = requested(jobs_engine, holder=NODE)
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        db.execute(raw("SELECT * FROM app_jobs.fail_job(%s, %s, %s)"), (NODE, str(job_id), "x"))
    present, left, [row] = ended(jobs_engine, job_id)
    assert (present, left, row.outcome, row.worker_id) == (False, {}, "cancelled", NODE)


@pytest.mark.parametrize("action", ["discard", "permanently_fail", "reschedule"])
def test_an_operator_action_on_a_requested_job_withdraws_the_request(
    jobs_engine: Engine, action: str
) -> None:
    job_id = requested(jobs_engine)
    statement = {
        "discard": discard_jobs([job_id], force=True),
        "permanently_fail": permanently_fail_jobs([job_id], "given up", force=True),
        "reschedule": reschedule_jobs([job_id], priority=5, force=True),
    }[action]
    with jobs_engine.begin() as connection:
        assert [row.id for row in connection.execute(statement)] == [job_id]
    present, left, rows = ended(jobs_engine, job_id)
    assert left == {}
    assert [row.outcome for row in rows] == {
        "discard": ["discarded"],
        "permanently_fail": ["failed"],
        "reschedule": [],
    }[action]
    assert present is (action != "discard")


# --- A real worker ------------------------------------------------------------------------------


@pytest.fixture
def run_worker(
    database_url: URL, background: Callable[[Worker], threading.Thread]
) -> Callable[..., Worker]:
    """Start a worker in a thread (stopped and joined afterwards, by ``background``)."""

    def start(tasks: TaskRegistry, **options: Any) -> Worker:
        worker = make_worker(database_url, tasks, **options)
        background(worker)
        return worker

    return start


def cancel_by_operator(engine: Engine, job_id: int) -> float:
    """Cancel ``job_id``; returns when (time.monotonic()) the request committed."""
    with engine.begin() as connection:
        assert cancel(connection, job_id) == {job_id: "cancel_requested"}
    return time.monotonic()


def outcome_of(engine: Engine, job_id: int) -> str | None:
    with engine.connect() as connection:
        found = connection.execute(
            select(job_history.c.outcome).where(job_history.c.job_id == job_id)
        ).first()
    return None if found is None else str(found[0])


def test_an_async_handler_is_cancelled_within_a_second_and_never_retried(
    jobs_engine: Engine, run_worker: Callable[..., Worker]
) -> None:
    started, stopped = threading.Event(), threading.Event()
    stopped_at: list[float] = []
    tasks = TaskRegistry()

    @tasks.task("slow")
    async def slow(payload: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped_at.append(time.monotonic())
            stopped.set()
            raise

    worker = run_worker(tasks, poll_interval=30)
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("slow", max_attempts=5)).one().id
    assert started.wait(20)
    asked = cancel_by_operator(jobs_engine, job_id)
    assert stopped.wait(5)
    assert stopped_at[0] - asked < 1.0  # the NOTIFY, not the 30 s poll nor a heartbeat
    wait_for(lambda: outcome_of(jobs_engine, job_id) == "cancelled")
    present, left, [row] = ended(jobs_engine, job_id)
    assert (present, left, row.worker_id) == (False, {}, worker.worker_id)
    assert row.last_error.startswith("JobCancelledError: cancelled at an operator's request")


def test_a_plain_handler_sees_cancel_requested_and_stops_by_raising(
    jobs_engine: Engine, run_worker: Callable[..., Worker]
) -> None:
    started = threading.Event()
    seen: list[bool] = []
    tasks = TaskRegistry()

    @tasks.task("steps")
    def steps(payload: dict[str, Any], job: Job) -> None:
        started.set()
        seen.append(job.cancel_requested)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if job.cancel_requested:
                raise JobCancelledError("stopped between two steps")
            time.sleep(0.01)

    run_worker(tasks)
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("steps")).one().id
    assert started.wait(20)
    cancel_by_operator(jobs_engine, job_id)
    wait_for(lambda: outcome_of(jobs_engine, job_id) == "cancelled", timeout=5)
    [row] = ended(jobs_engine, job_id)[2]
    assert seen == [False]
    assert row.last_error.startswith("JobCancelledError: stopped between two steps")


def test_a_plain_handler_that_ignores_the_request_completes_its_job(
    jobs_engine: Engine, run_worker: Callable[..., Worker]
) -> None:
    started, finish = threading.Event(), threading.Event()
    tasks = TaskRegistry()

    @tasks.task("stubborn")
    def stubborn(payload: dict[str, Any]) -> None:
        started.set()
        finish.wait(20)

    run_worker(tasks)
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("stubborn")).one().id
    assert started.wait(20)
    cancel_by_operator(jobs_engine, job_id)
    finish.set()
    wait_for(lambda: outcome_of(jobs_engine, job_id) is not None)
    present, left, [row] = ended(jobs_engine, job_id)
    assert (present, left, row.outcome) == (False, {}, "completed")


def test_a_poll_only_worker_learns_of_the_request_from_its_heartbeat(
    jobs_engine: Engine, run_worker: Callable[..., Worker]
) -> None:
    started = threading.Event()
    tasks = TaskRegistry()

    @tasks.task("slow")
    async def slow(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(60)

    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("slow")).one().id
    # Heartbeats every 0.5 s; no NOTIFY reaches it, and it polls only every 30 s (its first
    # cycle takes the job).
    run_worker(tasks, listen=False, poll_interval=30, heartbeat_timeout=3)
    assert started.wait(20)
    asked = cancel_by_operator(jobs_engine, job_id)
    wait_for(lambda: outcome_of(jobs_engine, job_id) == "cancelled", timeout=10)
    assert time.monotonic() - asked < 0.5 + 5  # a heartbeat interval, with a margin


@pytest.mark.asyncio
async def test_prefetched_jobs_are_failed_unstarted_and_running_ones_stopped() -> None:
    """The worker's reaction to a request (no database: the run's state only). A prefetched
    job is failed without a start, and a cycle made due to report it; a running async one
    is cancelled; ids it does not hold (finished, result waiting) are left alone."""
    from sqla_pgjobs.worker.runtime import _Run

    release = asyncio.Event()
    tasks = TaskRegistry()

    @tasks.task("t")
    async def t(payload: dict[str, Any]) -> None:
        await release.wait()

    worker = Worker("postgresql://nowhere/none", tasks, concurrency=1, prefetch=5)
    run = _Run(worker, url="", wake=asyncio.Event(), pause=asyncio.sleep, drain=False)
    running, waiting, other = (_job(i, run.cancel_requests) for i in (1, 2, 3))
    run.handlers.start(running)
    run.prefetched.extend([(waiting, time.monotonic()), (other, time.monotonic())])
    await asyncio.sleep(0)
    run.cancel([running.id, waiting.id, 99])
    assert [job.id for job, _ in run.prefetched] == [other.id]
    batch = run.results.take()
    assert [job_id for job_id, _ in batch.failed] == [waiting.id]
    assert "before it ran" in batch.failed[0][1]
    assert run.cancel_notified and run.wake.is_set()
    assert running.cancel_requested and not other.cancel_requested
    await asyncio.sleep(0.05)  # the handler's task is cancelled on the next turn
    batch = run.results.take()
    assert [job_id for job_id, _ in batch.failed] == [running.id]
    assert batch.failed[0][1].startswith("JobCancelledError")
    assert run.cancel_requests == set()  # forgotten once the run ended
    run.handlers.close()


def _job(job_id: int, cancels: set[int]) -> Job:
    row = {
        field: None
        for field in (
            "queue_name",
            "key",
            "database_id",
            "last_error",
            "locked_at",
            "locked_by",
            "created_at",
            "updated_at",
        )
    }
    row.update(
        id=job_id,
        task_identifier="t",
        payload={},
        attempts=1,
        max_attempts=5,
        priority=0,
        run_at=None,
    )
    return Job.from_row(row, cancels)


def test_under_load_every_job_ends_once_completed_or_cancelled_and_none_is_lost(
    jobs_engine: Engine, run_worker: Callable[..., Worker]
) -> None:
    """Two workers drain async and plain jobs while an operator cancels a random third of
    them, waiting or running: every job ends with exactly one history row, those cancelled
    while waiting never ran, and no cancelled job ran again."""
    runs: dict[int, int] = {}
    lock = threading.Lock()
    tasks = TaskRegistry()

    def count(job: Job) -> None:
        with lock:
            runs[job.id] = runs.get(job.id, 0) + 1

    @tasks.task("async_job")
    async def async_job(payload: dict[str, Any], job: Job) -> None:
        count(job)
        await asyncio.sleep(payload["seconds"])

    @tasks.task("plain_job")
    def plain_job(payload: dict[str, Any], job: Job) -> None:
        count(job)
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            if job.cancel_requested:
                raise JobCancelledError
            time.sleep(0.005)

    rng = random.Random(7)
    with jobs_engine.begin() as connection:
        ids = [
            connection.execute(
                add_job(
                    rng.choice(["async_job", "plain_job"]), {"seconds": rng.choice([0, 0.05, 0.3])}
                )
            )
            .one()
            .id
            for _ in range(300)
        ]
    for _ in range(2):
        run_worker(tasks, concurrency=8, prefetch=8)
    chosen = rng.sample(ids, 100)
    results: dict[int, str] = {}
    for batch in (chosen[i : i + 10] for i in range(0, 100, 10)):
        with jobs_engine.begin() as connection:
            results.update(cancel(connection, *batch))
        time.sleep(0.02)
    wait_for(lambda: _history_count(jobs_engine) == len(ids), timeout=60)
    with jobs_engine.begin() as connection:
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 0
        assert requests(connection) == {}
        rows = history(connection)
    by_job = {row.job_id: row.outcome for row in rows}
    assert len(rows) == len(by_job) == len(ids)
    assert all(count == 1 for count in runs.values())  # nothing ran twice
    for job_id, result in results.items():
        if result == "cancelled":
            assert by_job[job_id] == "cancelled" and job_id not in runs
        else:
            assert result in ("cancel_requested", "already_finished")
    cancelled_not_chosen = {j for j, o in by_job.items() if o == "cancelled"} - set(chosen)
    assert cancelled_not_chosen == set()
    assert {o for j, o in by_job.items() if j not in chosen} == {"completed"}


def _history_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(job_history)).scalar_one())
