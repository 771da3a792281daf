"""The worker in-process: handlers, failures, timeouts, waking on time, LISTEN and polling,
reconnecting, stopping, logs. (Whole processes, crashes and restarts: worker/test_processes.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

import sqla_pgjobs as pgjobs
from sqla_pgjobs import InvalidArgumentError, JobSpec
from sqla_pgjobs.database import libpq_url
from sqla_pgjobs.log_format import JsonFormatter
from sqla_pgjobs.worker import Job, TaskRegistry, Worker
from sqla_pgjobs.worker.connection import WorkerConnection
from tests.helpers import SCHEMA, sql, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import URL, Engine


def enqueue(engine: Engine, *statements: Any) -> list[Any]:
    with engine.begin() as connection:
        return [row for statement in statements for row in connection.execute(statement)]


def rows(engine: Engine, where: str = "true") -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(sql(f"SELECT * FROM app_jobs.jobs WHERE {where} ORDER BY id"))
        )


def worker_idle(engine: Engine, *, listening: bool = True) -> bool:
    """A worker is connected to this database and runs no statement (it waits for a NOTIFY
    or its next poll); with ``listening``, its LISTEN is in place too, so a NOTIFY reaches it."""
    query = text(
        "SELECT bool_and(state = 'idle')"
        " AND bool_or(application_name LIKE 'pgjobs worker%')"
        " AND (NOT :listening OR bool_or(query LIKE 'LISTEN%'))"
        " FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
    )
    with engine.connect() as connection:
        return bool(connection.execute(query, {"listening": listening}).scalar())


def make_worker(url: URL, tasks: TaskRegistry, **options: Any) -> Worker:
    options.setdefault("poll_interval", 0.5)
    return Worker(url, tasks, schema=SCHEMA, **options)


# --- Task registry ------------------------------------------------------------------------------


def test_the_registry_and_job_are_importable_from_the_package() -> None:
    assert pgjobs.TaskRegistry is TaskRegistry and pgjobs.Job is Job  # SPEC section 3


def test_registry_registers_sync_and_async_handlers_with_their_options() -> None:
    tasks = TaskRegistry()

    @tasks.task("a", max_attempts=3, queue_name="serial", priority=-1, timeout=2.5)
    def a(payload: Any) -> None: ...

    @tasks.task("b")
    async def b(payload: Any, job: Job) -> None: ...

    assert tasks.names == ["a", "b"] and "a" in tasks and len(tasks) == 2
    assert (a.is_async, a.takes_job, a.max_attempts, a.timeout) == (
        False,
        False,
        3,
        timedelta(seconds=2.5),
    )
    assert (b.is_async, b.takes_job) == (True, True)
    statement = a.job({"x": 1})
    assert statement.compile().params["max_attempts"] == 3
    assert statement.compile().params["queue_name"] == "serial"


@pytest.mark.parametrize(
    ("register", "argument"),
    [
        (lambda t: t.task("")(lambda p: None), "name"),
        (lambda t: t.task("x" * 127)(lambda p: None), "name"),
        (lambda t: t.task("x", max_attempts=0)(lambda p: None), "max_attempts"),
        (lambda t: t.task("x", timeout=-1)(lambda p: None), "timeout"),
        (lambda t: t.task("x")(lambda: None), "handler"),
        (lambda t: [t.task("x")(lambda p: None), t.task("x")(lambda p: None)], "name"),
    ],
)
def test_registry_refuses_bad_tasks(
    register: Callable[[TaskRegistry], object], argument: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        register(TaskRegistry())
    assert info.value.argument == argument


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"prefetch": -1}, "prefetch"),
        ({"prefetch": 2.5}, "prefetch"),
        ({"prefetch": None}, "prefetch"),
        ({"worker_id": "abc"}, "worker_id"),
        ({"unknown_tasks": "explode"}, "unknown_tasks"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"heartbeat_timeout": timedelta(0)}, "heartbeat_timeout"),
        ({"synchronous_commit": "off"}, "synchronous_commit"),
    ],
)
def test_worker_refuses_bad_options(options: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Worker("postgresql://localhost/x", TaskRegistry(), **options)
    assert info.value.argument == argument


# --- Running jobs --------------------------------------------------------------------------------


def test_drain_runs_sync_and_async_handlers_once_each(
    database_url: URL, jobs_engine: Engine
) -> None:
    tasks = TaskRegistry()
    seen: list[tuple[str, Any, int]] = []

    @tasks.task("plain")
    def plain(payload: Any) -> None:
        seen.append(("plain", payload, 0))

    @tasks.task("with_job")
    async def with_job(payload: Any, job: Job) -> None:
        await asyncio.sleep(0.01)  # a handler that awaits something, as a real one does
        seen.append(("with_job", payload, job.attempts))

    enqueue(
        jobs_engine,
        pgjobs.add_jobs(
            [JobSpec("plain", {"i": i}) for i in range(30)]
            + [JobSpec("with_job", [i]) for i in range(30)]
        ),
    )
    stats = make_worker(database_url, tasks, concurrency=4).run(drain=True)
    assert stats.completed == 60 and stats.failed == 0
    assert sorted(p["i"] for t, p, _ in seen if t == "plain") == list(range(30))
    assert sorted(p[0] for t, p, _ in seen if t == "with_job") == list(range(30))
    assert {a for t, _, a in seen if t == "with_job"} == {1}
    assert rows(jobs_engine) == []


def test_a_raising_handler_fails_its_job_with_the_traceback(
    database_url: URL, jobs_engine: Engine
) -> None:
    tasks = TaskRegistry()

    @tasks.task("boom")
    def boom(payload: Any) -> None:
        raise ValueError(f"bad input {payload['n']}")

    [job] = enqueue(jobs_engine, pgjobs.add_job("boom", {"n": 7}))
    stats = make_worker(database_url, tasks).run(drain=True)
    assert (stats.completed, stats.failed) == (0, 1)
    [failed] = rows(jobs_engine)
    assert failed.last_error.startswith("ValueError: bad input 7")
    assert (
        "Traceback (most recent call last)" in failed.last_error and "in boom" in failed.last_error
    )
    assert (failed.attempts, failed.locked_by) == (1, None)
    assert (failed.run_at - job.run_at).total_seconds() >= 2.7  # exp(1) seconds of backoff


def test_unknown_tasks_are_left_or_failed_clearly(database_url: URL, jobs_engine: Engine) -> None:
    tasks = TaskRegistry()
    tasks.add("known", lambda payload: None)
    enqueue(jobs_engine, pgjobs.add_job("known"), pgjobs.add_job("typo_task"))
    make_worker(database_url, tasks).run(drain=True)
    [left] = rows(jobs_engine)
    assert (left.task_identifier, left.attempts) == ("typo_task", 0)

    make_worker(database_url, tasks, unknown_tasks="fail").run(drain=True)
    [failed] = rows(jobs_engine)
    assert failed.attempts == 1
    assert "no handler for task 'typo_task' in this worker (it has: known)" in failed.last_error


def test_timeouts_cancel_async_handlers_and_fail_late_sync_ones(
    database_url: URL, jobs_engine: Engine
) -> None:
    tasks = TaskRegistry()
    finished: list[str] = []

    @tasks.task("slow_async", timeout=0.2)
    async def slow_async(payload: Any) -> None:
        await asyncio.sleep(5)  # the scenario: far past its 0.2 s timeout
        finished.append("async")

    @tasks.task("slow_sync", timeout=0.2)
    def slow_sync(payload: Any) -> None:
        time.sleep(0.6)  # the scenario: past its timeout, in a thread nothing can stop
        finished.append("sync")

    enqueue(jobs_engine, pgjobs.add_job("slow_async"), pgjobs.add_job("slow_sync"))
    started = time.monotonic()
    make_worker(database_url, tasks).run(drain=True)
    assert time.monotonic() - started < 4
    failed = {row.task_identifier: row.last_error for row in rows(jobs_engine)}
    assert failed["slow_async"].startswith("TimeoutError")
    assert failed["slow_sync"].startswith("TimeoutError: the handler ran 0.")
    assert "over its 0.2 s timeout" in failed["slow_sync"]
    assert finished == ["sync"]  # the plain function ran to its end: it cannot be stopped


def test_concurrency_bounds_running_and_held_jobs(database_url: URL, jobs_engine: Engine) -> None:
    tasks = TaskRegistry()
    running = 0
    most = 0
    lock = threading.Lock()

    @tasks.task("slow")
    def slow(payload: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # the scenario: a 50 ms job, long enough for the others to overlap
        with lock:
            running -= 1

    enqueue(jobs_engine, pgjobs.add_jobs([JobSpec("slow") for _ in range(40)]))
    held: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            held.append(len(rows(jobs_engine, "locked_by IS NOT NULL")))
            time.sleep(0.02)  # the sampling period

    sampler = threading.Thread(target=sample)
    sampler.start()
    make_worker(database_url, tasks, concurrency=3).run(drain=True)
    stop.set()
    sampler.join()
    assert most == 3
    # 50 ms jobs: none would start within the prefetch horizon, so none is taken ahead.
    assert max(held) <= 3


def test_short_jobs_are_prefetched_within_the_bound(database_url: URL, jobs_engine: Engine) -> None:
    """With 5 ms jobs a worker holds a few jobs beyond its running ones (as many as should
    start within 10 ms), never more than concurrency + prefetch, and drains them all."""
    tasks = TaskRegistry()
    tasks.add("short", lambda payload: time.sleep(0.005))  # the scenario: 5 ms jobs
    enqueue(jobs_engine, pgjobs.add_jobs([JobSpec("short") for _ in range(300)]))
    held: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            held.append(len(rows(jobs_engine, "locked_by IS NOT NULL")))
            time.sleep(0.01)  # the sampling period

    sampler = threading.Thread(target=sample)
    sampler.start()
    worker = make_worker(database_url, tasks, concurrency=2, prefetch=5)
    worker.run(drain=True)
    stop.set()
    sampler.join()
    assert worker.stats.completed == 300
    assert 2 < max(held) <= 7


def test_prefetched_jobs_stuck_behind_long_ones_are_given_back(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    """Quick jobs make a worker prefetch; when every slot then stays busy with long jobs,
    the prefetched ones go back (attempt refunded) for other workers, and it takes no more
    until a slot frees."""
    tasks = TaskRegistry()
    release = threading.Event()
    started: list[int] = []
    tasks.add("quick", lambda payload: None)

    @tasks.task("blocked")
    def blocked(payload: Any) -> None:
        started.append(payload["i"])
        release.wait(10)

    enqueue(
        jobs_engine,
        pgjobs.add_jobs([JobSpec("quick", priority=-1) for _ in range(20)]),
        pgjobs.add_jobs([JobSpec("blocked", {"i": i}) for i in range(30)]),
    )
    worker = make_worker(database_url, tasks, concurrency=2, prefetch=5)
    thread = background(worker)
    wait_for(lambda: len(started) == 2)
    # Within GIVE_BACK_AFTER (0.25 s) of the slots filling, only the running jobs are held.
    wait_for(lambda: len(rows(jobs_engine, "locked_by IS NOT NULL")) == 2, timeout=5)
    # The scenario: half a second in which the worker must take nothing (no event to await).
    time.sleep(0.5)
    assert len(rows(jobs_engine, "locked_by IS NOT NULL")) == 2  # and no more are taken meanwhile
    waiting = rows(jobs_engine, "task_identifier = 'blocked' AND locked_by IS NULL")
    assert len(waiting) == 28 and {job.attempts for job in waiting} == {0}
    assert worker.stats.released >= 1
    worker.stop()
    release.set()
    thread.join(timeout=20)
    assert worker.stats.completed == 22 and sorted(started) == sorted(set(started))


def test_prefetch_zero_takes_jobs_only_for_free_slots(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    tasks = TaskRegistry()
    release = threading.Event()
    tasks.add("quick", lambda payload: None)
    tasks.add("blocked", lambda payload: release.wait(10))
    enqueue(
        jobs_engine,
        pgjobs.add_jobs([JobSpec("quick", priority=-1) for _ in range(20)]),
        pgjobs.add_jobs([JobSpec("blocked") for _ in range(10)]),
    )
    worker = make_worker(database_url, tasks, concurrency=2, prefetch=0)
    background(worker)
    wait_for(lambda: worker.stats.completed == 20)
    time.sleep(0.3)  # the scenario: a while in which the worker, both slots busy, takes nothing
    assert len(rows(jobs_engine, "locked_by IS NOT NULL")) == 2
    release.set()


# --- Waking up on time ---------------------------------------------------------------------------


def test_a_delayed_job_starts_on_time_not_at_the_next_poll(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    tasks = TaskRegistry()
    started: list[datetime] = []
    tasks.add("later", lambda payload: started.append(datetime.now(UTC)))
    worker = make_worker(database_url, tasks, poll_interval=60)
    background(worker)
    wait_for(lambda: worker_idle(jobs_engine))  # asleep until its next poll in a minute
    run_at = datetime.now(UTC) + timedelta(seconds=1.5)
    enqueue(jobs_engine, pgjobs.add_job("later", run_at=run_at))
    wait_for(lambda: bool(started), timeout=10)
    lateness = (started[0] - run_at).total_seconds()
    assert 0 <= lateness < 1.0


def test_a_retry_starts_on_time_not_at_the_next_poll(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    tasks = TaskRegistry()
    attempts: list[datetime] = []

    @tasks.task("flaky")
    def flaky(payload: Any, job: Job) -> None:
        attempts.append(datetime.now(UTC))
        if job.attempts == 1:
            raise RuntimeError("first attempt fails")

    background(make_worker(database_url, tasks, poll_interval=60))
    enqueue(jobs_engine, pgjobs.add_job("flaky"))
    wait_for(lambda: len(attempts) == 2, timeout=15)
    gap = (attempts[1] - attempts[0]).total_seconds()
    assert 2.7 <= gap < 2.7 + 1.5
    wait_for(lambda: rows(jobs_engine) == [])


def test_listen_wakes_an_idle_worker_at_once(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    tasks = TaskRegistry()
    started: list[float] = []
    tasks.add("now", lambda payload: started.append(time.monotonic()))
    background(make_worker(database_url, tasks, poll_interval=60))
    wait_for(lambda: worker_idle(jobs_engine))
    enqueued = time.monotonic()
    enqueue(jobs_engine, pgjobs.add_job("now"))
    wait_for(lambda: bool(started), timeout=10)
    assert started[0] - enqueued < 1.0


def test_poll_only_worker_finds_jobs_without_listen(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    tasks = TaskRegistry()
    done: list[int] = []
    tasks.add("polled", lambda payload: done.append(payload["i"]))
    background(make_worker(database_url, tasks, listen=False, poll_interval=0.3))
    wait_for(lambda: worker_idle(jobs_engine, listening=False))
    enqueue(jobs_engine, pgjobs.add_jobs([JobSpec("polled", {"i": i}) for i in range(5)]))
    wait_for(lambda: len(done) == 5, timeout=10)
    assert sorted(done) == list(range(5))


# --- Connections and stopping --------------------------------------------------------------------


def test_worker_reconnects_when_its_connections_are_terminated(
    database_url: URL, jobs_engine: Engine, background: Callable[[Worker], threading.Thread]
) -> None:
    tasks = TaskRegistry()
    runs: list[int] = []
    lock = threading.Lock()
    total = 2000

    @tasks.task("count")
    def count(payload: Any) -> None:
        time.sleep(0.005)  # 5 ms jobs: the run lasts long enough for three terminations
        with lock:
            runs.append(payload["i"])

    worker = make_worker(database_url, tasks, concurrency=4)
    enqueue(jobs_engine, pgjobs.add_jobs([JobSpec("count", {"i": i}) for i in range(total)]))
    background(worker)
    for _ in range(3):
        # Progress since the last termination: the worker is connected again, and busy.
        target = len(runs) + 50
        wait_for(lambda target=target: len(runs) > target, timeout=20)
        assert len(runs) < total - 200, "the run ended too soon to test reconnecting"
        lost = worker.stats.reconnects
        with jobs_engine.connect() as connection:
            terminated = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'pgjobs worker%'"
                    " AND datname = current_database()"
                )
            ).scalar_one()
        assert terminated >= 1
        wait_for(lambda lost=lost: worker.stats.reconnects > lost, timeout=20)  # noticed
    wait_for(lambda: rows(jobs_engine) == [], timeout=60)
    assert worker.stats.reconnects >= 3
    assert sorted(set(runs)) == list(range(total))
    # At least once: a job finished while the connection was down is reported after the
    # reconnect; none is lost. Re-runs are possible only for jobs whose report was lost.
    assert len(runs) - total <= 3 * 4


def test_synchronous_commit_off_is_the_workers_session_setting_after_every_reconnect(
    database_url: URL, jobs_engine: Engine
) -> None:
    """Worker(synchronous_commit=False) connects with synchronous_commit off, and a new
    connection after a lost one has it too; the default leaves the server's setting."""

    async def settings() -> list[str]:
        seen = []
        for synchronous_commit in (True, False):
            worker = make_worker(
                database_url, TaskRegistry(), synchronous_commit=synchronous_commit
            )
            connection = WorkerConnection(
                libpq_url(database_url),
                SCHEMA,
                worker.worker_id,
                task_filter=None,
                job_expiry=60,
                heartbeat_timeout=30,
                info={},
                on_lost=lambda exc: None,
                sleep=asyncio.sleep,
                synchronous_commit=worker.synchronous_commit,
            )
            statement = connection._connection  # the statements' connection, reconnecting
            for _ in range(2):
                [row] = await statement.execute(
                    "SELECT current_setting('synchronous_commit') AS value,"
                    " pg_backend_pid() AS pid",
                    {},
                )
                seen.append(row["value"])
                with jobs_engine.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": row["pid"]})
            await connection.close()
        return seen

    assert asyncio.run(settings()) == ["on", "on", "off", "off"]
    tasks = TaskRegistry()
    tasks.add("noop", lambda payload: None)
    enqueue(jobs_engine, pgjobs.add_jobs([JobSpec("noop") for _ in range(200)]))
    stats = make_worker(database_url, tasks, synchronous_commit=False).run(drain=True)
    assert stats.completed == 200 and rows(jobs_engine) == []


def test_stop_lets_running_jobs_finish_and_releases_the_rest(
    database_url: URL, jobs_engine: Engine
) -> None:
    tasks = TaskRegistry()
    started: set[str] = set()

    @tasks.task("quick")
    async def quick(payload: Any) -> None:
        started.add("quick")
        await asyncio.sleep(0.2)  # the scenario: still running when the worker is stopped

    @tasks.task("endless")
    async def endless(payload: Any) -> None:
        started.add("endless")
        await asyncio.sleep(3600)  # the scenario: outlasts the 0.5 s shutdown timeout

    enqueue(jobs_engine, pgjobs.add_job("quick"), pgjobs.add_job("endless"))
    worker = make_worker(database_url, tasks, shutdown_timeout=0.5)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    wait_for(lambda: started == {"quick", "endless"}, timeout=10)
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    [left] = rows(jobs_engine)
    assert (left.task_identifier, left.attempts, left.locked_by) == ("endless", 0, None)
    assert worker.stats.completed == 1 and worker.stats.released == 1
    with jobs_engine.connect() as connection:
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.workers")).scalar_one() == 0


def test_a_missing_schema_fails_at_once(empty_database_url: URL) -> None:
    tasks = TaskRegistry()
    tasks.add("x", lambda payload: None)
    started = time.monotonic()
    with pytest.raises(Exception, match="does not exist"):
        Worker(empty_database_url, tasks).run(drain=True)
    assert time.monotonic() - started < 5


def test_json_logs_carry_the_job_fields(database_url: URL, jobs_engine: Engine) -> None:
    tasks = TaskRegistry()
    tasks.add("logged", lambda payload: None)
    enqueue(jobs_engine, pgjobs.add_job("logged"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("sqla_pgjobs.worker")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        make_worker(database_url, tasks).run(drain=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    entries = [json.loads(JsonFormatter().format(record)) for record in records]
    [done] = [entry for entry in entries if entry.get("outcome") == "completed"]
    assert done["task"] == "logged" and done["attempt"] == 1
    assert isinstance(done["duration_ms"], float) and done["worker_id"]
    assert done["message"].startswith("job ") and done["level"] == "info"
