"""Chaos: workers SIGKILLed one after another, a database restarted under workers and a
scheduler, backend connections terminated mid-batch, an old snapshot held for a whole run.

Real `pgjobs worker` / `pgjobs scheduler` processes on a real PostgreSQL. Every handler
records its runs outside the database (tests/worker_tasks/recording.py), so these tests
check what really ran: every job to its end, no job twice at the same time, and which
jobs (only those a dead worker held) ran more than once. Timing bounds are the promised
ones with a margin: the machine may be small and busy.

The long ones are marked ``slow`` (CI runs them once, on the embedded PostgreSQL 16).
docs/guarantees.md cites these tests for each promise.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sqla_pgjobs import JobSpec, add_scheduled_job
from sqla_pgjobs.schema import LATEST_VERSION, install
from tests.helpers import (
    SCHEMA,
    index_entries_read,
    libpq_url,
    quote_schema,
    raw,
    sql,
    translated,
    wait_for,
)
from tests.worker.test_processes import (
    OwnPostgres,
    WorkerProcess,
    Workers,
    enqueue,
    job_count,
    registered_workers,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from sqlalchemy.engine import URL, Engine


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


# --- What ran -----------------------------------------------------------------------------


def runs_by_job(
    events: Iterable[dict[str, Any]], killed_at: dict[int, float]
) -> dict[int, list[tuple[float, float]]]:
    """Each job's runs as (start, end) wall-clock intervals, in start order. A run without
    an end event ends when its process was SIGKILLed, or never (``inf``) if it was not."""
    events = list(events)
    ends = {(e["job_id"], e["pid"], e["attempt"]): e["time"] for e in events if e["event"] == "end"}
    runs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for event in events:
        if event["event"] != "start":
            continue
        key = (event["job_id"], event["pid"], event["attempt"])
        end = ends.get(key, killed_at.get(event["pid"], math.inf))
        runs[event["job_id"]].append((event["time"], end))
    for intervals in runs.values():
        intervals.sort()
    return dict(runs)


def overlapping_runs(runs: dict[int, list[tuple[float, float]]]) -> dict[int, list[Any]]:
    """The jobs that ran twice at the same time, with their runs."""
    return {
        job_id: intervals
        for job_id, intervals in runs.items()
        if any(first[1] > second[0] for first, second in itertools.pairwise(intervals))
    }


def finished_jobs(events: Iterable[dict[str, Any]]) -> set[int]:
    return {e["job_id"] for e in events if e["event"] == "end"}


def backend_pids(url: URL, application_name: str) -> list[int]:
    """The server processes of connections that call themselves ``application_name``."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
        ).fetchall()
    return [pid for (pid,) in rows]


def worker_application_name(worker: WorkerProcess) -> str:
    return f"pgjobs worker {worker.worker_id}"[:63]


def held_jobs(engine: Engine, worker_id: str) -> set[int]:
    with engine.connect() as connection:
        rows = connection.execute(
            sql("SELECT id FROM app_jobs.jobs WHERE locked_by = :worker"), {"worker": worker_id}
        ).scalars()
        return set(rows)


def stop_all(started: Iterable[WorkerProcess], timeout: float = 30) -> None:
    """SIGTERM each process; each must exit 0."""
    started = [p for p in started if p.process.poll() is None]
    for process in started:
        process.send(signal.SIGTERM)
    for process in started:
        assert process.wait_exit(timeout) == 0, process.log()[-3000:]


# --- SIGKILL, again and again ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkilling_one_worker_after_another_during_20000_jobs_loses_none_and_overlaps_none(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    """Three workers share 20,000 jobs; five times, one is SIGKILLed mid-batch and a fresh
    one takes its place (the next kill comes once the victim's jobs run again). Proves:
    every job runs to its end; no job ever runs twice at the same time; only jobs the
    killed worker held run twice (all others exactly once); the killed worker's jobs run
    again within its heartbeat timeout (+ margin) of the kill."""
    count, kills, heartbeat_timeout, margin = 20_000, 5, 5.0, 5.0
    options = ("--concurrency", "8", "--heartbeat-timeout", str(heartbeat_timeout))
    live = [workers.start(database_url, *options, name=f"chaos{i}") for i in range(3)]
    wait_for(
        lambda: registered_workers(engine) >= {w.worker_id for w in live},
        60,
        lambda: f"workers did not start\n{workers.logs()}",
    )
    # 60 ms per job: 24 slots need at least 50 s for the run, more than the five kills
    # take (each waits for the recovery, about the heartbeat timeout), however fast the
    # machine.
    job_ids = enqueue(engine, [JobSpec("record", {"sleep": 0.06}) for _ in range(count)])
    begun = time.monotonic()

    killed_at: dict[int, float] = {}  # pid -> wall time of the kill
    kill_log: list[tuple[float, set[int]]] = []  # (kill time, jobs the victim held)
    recoveries: list[float] = []
    for k in range(kills):
        if k == 0:
            wait_for(
                lambda: job_count(engine) <= count - 1000,
                180,
                lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
            )
        else:
            time.sleep(1)  # the replacement worker gets going
        assert job_count(engine) > 1000, "the run ended before the kills"
        victim = live.pop(0)
        victim.send(signal.SIGKILL)
        assert victim.wait_exit(10) == -signal.SIGKILL
        killed_at[victim.pid] = kill_time = time.time()
        live.append(workers.start(database_url, *options, name=f"chaos{k + 3}"))
        # Its server process may still be finishing a transaction sent before the kill.
        wait_for(
            lambda v=victim: not backend_pids(database_url, worker_application_name(v)),
            30,
            lambda: "the killed worker's backend lingers",
        )
        held = held_jobs(engine, victim.worker_id)
        assert held, f"kill {k + 1} found the victim holding no job: not mid-batch"
        kill_log.append((kill_time, held))

        # Wait for every held job to start again elsewhere before the next kill.
        def rerun_starts(held: set[int] = held, after: float = kill_time) -> dict[int, float]:
            first: dict[int, float] = {}
            for start in workers.starts():
                if start["job_id"] in held and start["time"] > after:
                    first.setdefault(start["job_id"], start["time"])
            return first

        wait_for(
            lambda h=held, r=rerun_starts: len(r()) == len(h),
            heartbeat_timeout + 60,
            lambda: f"the killed worker's jobs were not recovered\n{workers.logs()}",
        )
        recoveries.append(max(rerun_starts().values()) - kill_time)

    wait_for(
        lambda: job_count(engine) == 0,
        240,
        lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
    )
    took = time.monotonic() - begun
    stop_all(live)

    events = workers.runs()
    assert finished_jobs(events) == set(job_ids)
    runs = runs_by_job(events, killed_at)
    assert overlapping_runs(runs) == {}
    ran_again = {job_id for job_id, intervals in runs.items() if len(intervals) > 1}
    held_by_victims = set().union(*(held for _, held in kill_log))
    assert ran_again <= held_by_victims, sorted(ran_again - held_by_victims)[:10]
    # Recovery: at most the heartbeat timeout after the victim's last heartbeat (which is
    # before the kill), plus one take-jobs round on a busy machine.
    assert max(recoveries) <= heartbeat_timeout + margin, recoveries
    print(
        f"\n{count} jobs, {kills} SIGKILLs, {took:.1f} s; jobs held at each kill: "
        f"{[len(h) for _, h in kill_log]}; run twice: {len(ran_again)}; "
        f"recovery after each kill (s): {[round(r, 2) for r in recoveries]} "
        f"(heartbeat timeout {heartbeat_timeout:g} s)"
    )


# --- pg_terminate_backend mid-batch ----------------------------------------------------------


def terminate_backends(url: URL) -> int:
    """pg_terminate_backend every other session of the test database (the worker's
    statement and LISTEN connections); how many were cut."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (cut,) in rows if cut)


@pytest.mark.timeout(150)
def test_terminating_a_workers_backends_mid_batch_runs_every_job_exactly_once(
    database_url: URL, workers: Workers
) -> None:
    """A worker running 8 jobs at a time has its database sessions killed by
    ``pg_terminate_backend`` five times mid-run. Proves: it reconnects by itself (same
    process), and every job runs exactly once (the worker is alive, so nothing it held is
    taken over, and results lost with the connection are sent again)."""
    count, terminations = 600, 5
    # NullPool: the test's own queries must not reuse a connection that was just cut.
    engine = create_engine(database_url, poolclass=NullPool)
    job_ids = enqueue(engine, [JobSpec("record", {"sleep": 0.02}) for _ in range(count)])
    worker = workers.start(database_url, "--concurrency", "8", name="terminated")

    cut = 0
    for k in range(terminations):
        left = count - (k + 1) * count // (terminations + 2)
        wait_for(
            lambda left=left: job_count(engine) <= left,
            60,
            lambda: f"{job_count(engine)} jobs left\n{worker.log()[-3000:]}",
        )
        # Mid-batch: the worker is running jobs it holds at this moment.
        assert held_jobs(engine, worker.worker_id)
        cut += terminate_backends(database_url)
    wait_for(
        lambda: job_count(engine) == 0,
        60,
        lambda: f"{job_count(engine)} jobs left\n{worker.log()[-3000:]}",
    )
    assert worker.process.poll() is None, worker.log()[-3000:]
    assert worker.log().count("database connection lost") >= terminations, worker.log()[-3000:]
    stop_all([worker])
    engine.dispose()

    events = workers.runs()
    starts = Counter(e["job_id"] for e in events if e["event"] == "start")
    assert finished_jobs(events) == set(job_ids)
    twice = {job_id: n for job_id, n in starts.items() if n > 1}
    assert twice == {}, twice
    assert cut >= terminations
    print(f"\n{cut} backends terminated over {terminations} rounds; every job ran once")


# --- A live worker frozen past its heartbeat timeout ----------------------------------------


@pytest.mark.timeout(120)
def test_a_worker_frozen_past_its_heartbeat_timeout_loses_its_job_and_its_late_result_is_ignored(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    """The limit of "never twice at the same time": a worker that is alive but silent for
    longer than its heartbeat timeout (here SIGSTOP; in life a frozen VM or a partition) is
    given up for dead, and its job runs elsewhere while its own run is still in progress.
    Proves what happens then: the job runs twice, overlapping; the frozen worker's late
    result changes nothing (complete_job_batch only completes held jobs, C1) and it logs
    both facts; it stays up and exits 0 on SIGTERM."""
    heartbeat_timeout = 2.0
    options = ("--concurrency", "1", "--heartbeat-timeout", str(heartbeat_timeout))
    [job_id] = enqueue(engine, [JobSpec("sleep_on_first_attempt", {"seconds": 4, "then": 0})])
    frozen = workers.start(database_url, *options, name="frozen")
    wait_for(
        lambda: any(s["job_id"] == job_id for s in workers.starts()),
        60,
        lambda: f"the job did not start\n{frozen.log()}",
    )
    frozen.send(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        other = workers.start(database_url, *options, name="other")
        wait_for(
            lambda: job_count(engine) == 0,
            heartbeat_timeout + 60,
            lambda: f"the job was not taken over\n{workers.logs()}",
        )
    finally:
        frozen.send(signal.SIGCONT)
    wait_for(
        lambda: "had been taken over" in frozen.log(),
        30,
        lambda: f"the frozen worker did not report its late result\n{frozen.log()}",
    )
    assert "had been given up for dead" in frozen.log()
    [again] = enqueue(engine, [JobSpec("record")])
    wait_for(lambda: job_count(engine) == 0, 30, workers.logs)
    stop_all([frozen, other])

    events = workers.runs()
    runs = runs_by_job(events, {})
    assert [pid for pid in (e["pid"] for e in events if e["job_id"] == job_id)] == [
        frozen.pid,
        other.pid,
        other.pid,
        frozen.pid,
    ]
    assert job_id in overlapping_runs(runs)
    assert runs[again]
    taken_over = runs[job_id][1][0] - stopped_at
    assert taken_over <= heartbeat_timeout + 5, taken_over
    print(f"\nthe frozen worker's job ran elsewhere {taken_over:.1f} s after SIGSTOP")


# --- A database restart under workers and a scheduler ----------------------------------------

FIRES_TABLE = """
CREATE TABLE public.fires (fire_time timestamptz NOT NULL, job_id bigint NOT NULL,
                           recorded_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.record_fire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.fires (fire_time, job_id) VALUES (NEW.last_scheduled, NEW.last_scheduled_id);
  RETURN NEW;
END $$;
CREATE TRIGGER record_fire AFTER UPDATE OF last_scheduled_id ON app_jobs.scheduled_jobs
  FOR EACH ROW WHEN (NEW.last_scheduled_id IS DISTINCT FROM OLD.last_scheduled_id)
  EXECUTE FUNCTION public.record_fire();
"""


def fires(engine: Engine) -> list[Any]:
    """Every fire of the schedule: (fire_time, job_id, recorded_at), in order."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                sql("SELECT fire_time, job_id, recorded_at FROM public.fires ORDER BY fire_time")
            )
        )


def restart(server: OwnPostgres, mode: str, down_for: float) -> None:
    """Stop the server (``fast``: sessions cut, clean shutdown; ``immediate``: a crash, WAL
    replayed at the next start), leave it down ``down_for`` seconds, start it again."""
    server.pg_ctl("-m", mode, "stop")
    time.sleep(down_for)
    server.start()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_under_workers_and_a_scheduler_loses_and_duplicates_nothing(
    own_postgres: OwnPostgres, workers: Workers, mode: str
) -> None:
    """A cluster of the test's own is stopped (``fast``: a clean shutdown; ``immediate``:
    a crash), left down 3 s and started again while two workers run 3,000 jobs and a
    scheduler fires a per-second schedule. Proves: workers and scheduler reconnect by
    themselves; every job (enqueued or fired) runs to its end exactly once, never twice at
    a time; the schedule fires again after the restart, one job per fire time."""
    count, down_for = 3000, 3.0
    url = own_postgres.url()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        install(connection, SCHEMA, LATEST_VERSION)
        connection.exec_driver_sql(raw(FIRES_TABLE))
    with translated(engine).begin() as connection:
        # Priority -1: its jobs go ahead of the backlog, so each fire's job is done before
        # the next fire (a fire while the previous job is pending is skipped, by design).
        connection.execute(add_scheduled_job("record", {}, "* * * * * *", priority=-1))
    started = [workers.start(url, "--concurrency", "4", name=f"restart{i}") for i in (1, 2)]
    scheduler = workers.start_scheduler(url, "--lease", "20")
    wait_for(
        lambda: len(fires(engine)) >= 2,
        60,
        lambda: f"the schedule does not fire\n{workers.logs()}",
    )
    job_ids = enqueue(engine, [JobSpec("record", {"sleep": 0.02}) for _ in range(count)])
    wait_for(
        lambda: len(finished_jobs(workers.runs())) >= count // 5,
        120,
        lambda: f"no progress\n{workers.logs()}",
    )
    left_before = job_count(engine)
    restart_begun = time.time()
    restart(own_postgres, mode, down_for)
    restarted = time.time()
    assert left_before > 8 * 10, "the restart came too late to be mid-run"

    wait_for(
        lambda: finished_jobs(workers.runs()) >= set(job_ids),
        150,
        lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
    )
    wait_for(
        lambda: sum(1 for f in fires(engine) if f.recorded_at.timestamp() > restarted) >= 3,
        60,
        lambda: f"the schedule does not fire after the restart\n{scheduler.log()[-3000:]}",
    )
    stop_all([scheduler])
    wait_for(
        lambda: job_count(engine) == 0,
        60,
        lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
    )
    for process in [*started, scheduler]:
        assert "database connection lost" in process.log(), process.log()[-3000:]
    stop_all(started)

    fired = fires(engine)
    fired_jobs = [f.job_id for f in fired]
    assert len({f.fire_time for f in fired}) == len(fired)  # one job per fire time
    assert len(set(fired_jobs)) == len(fired_jobs)
    events = workers.runs()
    all_jobs = set(job_ids) | set(fired_jobs)
    assert finished_jobs(events) == all_jobs
    runs = runs_by_job(events, {})
    assert overlapping_runs(runs) == {}
    twice = {job_id: len(r) for job_id, r in runs.items() if len(r) > 1}
    assert twice == {}, twice
    # Fires resume soon after the server is back (lease kept; reconnect backoff <= 5 s).
    resumed = min(f.recorded_at.timestamp() for f in fired if f.recorded_at.timestamp() > restarted)
    assert resumed - restarted <= 5 + 5, (resumed - restarted, scheduler.log()[-3000:])
    engine.dispose()
    print(
        f"\n{mode} restart after {count - left_before} of {count} jobs: "
        f"down {restarted - restart_begun:.1f} s;"
        f" first fire {resumed - restarted:.1f} s after it was back; {len(fired)} fires;"
        " nothing ran twice"
    )


# --- An idle-in-transaction session holding an old snapshot ----------------------------------


def table_stats(engine: Engine) -> dict[str, int]:
    """The job table's size (heap and indexes, bytes) and its dead rows (after ANALYZE)."""
    jobs = f"{quote_schema(SCHEMA)}.jobs"  # a bound value: the schema name may hold quotes
    with engine.connect() as connection:
        connection.execute(sql("ANALYZE app_jobs.jobs"))
        row = connection.execute(
            text(
                "SELECT pg_relation_size(CAST(:jobs AS regclass)) AS heap,"
                " pg_indexes_size(CAST(:jobs AS regclass)) AS indexes,"
                " (SELECT n_dead_tup FROM pg_stat_user_tables"
                "   WHERE relid = CAST(:jobs AS regclass)) AS dead"
            ),
            {"jobs": jobs},
        ).one()
    return {"heap": int(row.heap), "indexes": int(row.indexes), "dead": int(row.dead or 0)}


def vacuum(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sql("VACUUM app_jobs.jobs"))


def drain(workers: Workers, engine: Engine, url: URL, count: int) -> tuple[float, float]:
    """Enqueue ``count`` jobs and drain them with one `pgjobs worker --drain` (concurrency
    8): the seconds the drain took, and the index entries get_jobs read per job taken."""
    enqueue(engine, [JobSpec("record") for _ in range(count)])
    reads_before = index_entries_read(engine)
    begun = time.monotonic()
    result = workers.drain(url, "--concurrency", "8", timeout=240)
    took = time.monotonic() - begun
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_count(engine) == 0
    return took, (index_entries_read(engine) - reads_before) / count


@contextlib.contextmanager
def old_snapshot(url: URL) -> Iterator[int]:
    """A session idle in a REPEATABLE READ transaction that has taken its snapshot (the
    backend's xmin, yielded): VACUUM can then remove no row deleted after it."""
    with psycopg.connect(libpq_url(url)) as connection:
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        connection.execute(raw("SELECT count(*) FROM app_jobs.jobs")).fetchone()
        [xmin] = connection.execute(
            "SELECT backend_xmin::text::bigint FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone() or [None]
        assert xmin is not None
        yield int(xmin)
        connection.rollback()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_idle_in_transaction_snapshot_slows_draining_and_grows_the_table_boundedly(
    database_url: URL, workers: Workers
) -> None:
    """Batches of 10,000 jobs are drained by a worker process: one with nothing in the way;
    two in a row while another session sits idle in a transaction holding a snapshot older
    than all of them; one after that session ends and VACUUM has run. Proves (numbers in
    docs/guarantees.md): every drain completes; the table grows by about two row versions
    per job drained under the snapshot (VACUUM can remove none of them) and no more; the
    extra work is bounded by the jobs finished since the snapshot was taken: each take of
    jobs steps over their dead entries in the index it walks, so the entries read per job
    grow from the first batch to the second (counted, not timed: the count does not depend
    on the machine's load); once the snapshot is gone VACUUM reclaims everything and
    taking jobs costs what it did before."""
    count = 10_000
    engine = create_engine(database_url, poolclass=NullPool)
    clean, clean_reads = drain(workers, engine, database_url, count)
    vacuum(engine)
    before = table_stats(engine)

    with old_snapshot(database_url):
        first, first_reads = drain(workers, engine, database_url, count)
        second, second_reads = drain(workers, engine, database_url, count)
        during = table_stats(engine)

    vacuum(engine)
    vacuumed = table_stats(engine)
    after, after_reads = drain(workers, engine, database_url, count)
    engine.dispose()

    growth = (during["heap"] + during["indexes"]) - (before["heap"] + before["indexes"])
    per_job = growth / (2 * count)
    print(
        f"\ndrain of {count} jobs (seconds; index entries read per job): clean {clean:.1f}, "
        f"{clean_reads:.0f}; under an old snapshot {first:.1f}, {first_reads:.0f}; then "
        f"{second:.1f}, {second_reads:.0f}; after it ended and VACUUM {after:.1f}, "
        f"{after_reads:.0f}; table+indexes {before} -> {during} ({per_job:.0f} bytes per "
        f"job) -> after VACUUM {vacuumed}"
    )
    # Each job leaves two row versions (inserted; locked) and their index entries, about
    # 300 bytes; 1 kB is the bound.
    assert during["dead"] >= 2 * count  # the snapshot really kept the dead rows
    assert per_job <= 1024, during
    # A call that takes jobs walks the dead index entries of the jobs taken before it
    # under the snapshot once (get_jobs and next_run_at start at the first runnable
    # entry): on average count / 2 of them during the first batch, 3 * count / 2 during
    # the second, shared by the jobs the call takes. Measured: about 200 and 380 entries
    # per job, as the worker takes dozens of jobs per call. The bound is one walk per job;
    # the growth from the first batch to the second shows the cost follows the jobs
    # finished since the snapshot was taken.
    # Without the old snapshot: 2 per job, up to a few dozen on a shared server (other
    # short-lived snapshots, such as autovacuum's ANALYZE, keep fresh dead entries a moment).
    assert clean_reads <= count / 50
    assert first_reads <= count / 2, first_reads
    assert second_reads <= 3 * count / 2, second_reads
    assert second_reads > 1.2 * first_reads, (first_reads, second_reads)
    assert vacuumed["dead"] == 0
    assert vacuumed["heap"] <= before["heap"] + 8192
    assert after_reads <= count / 50
    # Times, with room for a shared machine: every drain finishes.
    assert max(first, second, after) <= 8 * clean + 60, (clean, first, second, after)


# --- synchronous_commit off: what a crash of PostgreSQL may undo -----------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_crash_under_workers_without_synchronous_commit_loses_no_job(
    own_postgres: OwnPostgres, workers: Workers
) -> None:
    """Two workers with ``--no-synchronous-commit`` run 3,000 jobs; the test's own cluster
    crashes (``pg_ctl stop -m immediate``: no checkpoint, WAL replayed at the next start)
    and is started again. Proves what docs/workers.md promises of the opt-in: every job
    enqueued runs to its end and leaves the table; a run may repeat (the commits of the
    last fraction of a second may be undone), which is counted, not forbidden."""
    count = 3000
    url = own_postgres.url()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        install(connection, SCHEMA, LATEST_VERSION)
    options = ("--concurrency", "4", "--no-synchronous-commit")
    started = [workers.start(url, *options, name=f"async-commit{i}") for i in (1, 2)]
    job_ids = enqueue(engine, [JobSpec("record", {"sleep": 0.01}) for _ in range(count)])
    wait_for(
        lambda: len(finished_jobs(workers.runs())) >= count // 5,
        120,
        lambda: f"no progress\n{workers.logs()}",
    )
    left_before = job_count(engine)
    restart(own_postgres, "immediate", 1.0)
    assert left_before > 8 * 10, "the crash came too late to be mid-run"
    wait_for(
        lambda: finished_jobs(workers.runs()) >= set(job_ids) and job_count(engine) == 0,
        150,
        lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
    )
    stop_all(started)
    runs = runs_by_job(workers.runs(), {})
    assert set(runs) == set(job_ids)
    twice = sum(len(r) - 1 for r in runs.values())
    engine.dispose()
    print(f"\ncrash after {count - left_before} of {count} jobs: {twice} run(s) repeated")
