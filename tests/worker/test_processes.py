"""Workers as real processes (`pgjobs worker`) on a real PostgreSQL.

Every handler records its runs outside the job table (tests/worker_tasks/recording.py: one
JSON line per event in a file per worker process), so what ran, where, when and how often
is known even when a worker is killed or the database restarts. Timings are asserted with
generous margins: the machine may be small and busy.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from sqla_pgjobs import JobSpec, add_jobs, add_scheduled_job
from sqla_pgjobs.schema import LATEST_VERSION, install
from tests.helpers import REPO, SCHEMA, libpq_url, sql, translated, wait_for
from tests.worker_tasks.recording import RUNS_DIR_VARIABLE

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from sqlalchemy.engine import Engine

PGJOBS = Path(sys.executable).parent / "pgjobs"
TASKS = "tests.worker_tasks.recording:tasks"

# --- Worker processes ---------------------------------------------------------------------


class WorkerProcess:
    """One `pgjobs worker` process, its id and its log (stdout and stderr)."""

    def __init__(self, worker_id: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.worker_id = worker_id
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process has exited (at most ``timeout`` seconds from now)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.worker_id} still runs {timeout} s later; its log:\n"
                + self.log()[-4000:]
            ) from None


class Workers:
    """Starts `pgjobs worker` processes; whatever still runs at teardown is killed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runs_dir = directory / "runs"
        self.runs_dir.mkdir()
        self.started: list[WorkerProcess] = []

    def command(self, url: URL, name: str, *options: str) -> tuple[list[str], str]:
        worker_id = f"{name}-{uuid.uuid4().hex[:8]}"
        command = [
            str(PGJOBS),
            "worker",
            TASKS,
            "--database-url",
            libpq_url(url),
            "--schema",
            SCHEMA,
            "--worker-id",
            worker_id,
            *options,
        ]
        return command, worker_id

    def environment(self) -> dict[str, str]:
        environment = {**os.environ, RUNS_DIR_VARIABLE: str(self.runs_dir)}
        environment.pop("PGJOBS_DATABASE_URL", None)
        return environment

    def start(self, url: URL, *options: str, name: str = "worker") -> WorkerProcess:
        command, worker_id = self.command(url, name, *options)
        return self.launch(command, worker_id)

    def launch(self, command: list[str], process_id: str) -> WorkerProcess:
        """Start a ``pgjobs`` command in the background, its output to ``<id>.log``."""
        log_path = self.directory / f"{process_id}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = WorkerProcess(process_id, process, log_path)
        self.started.append(started)
        return started

    def start_scheduler(self, url: URL, *options: str) -> WorkerProcess:
        """A `pgjobs scheduler` process (its id is the process id of the result)."""
        scheduler_id = f"scheduler-{uuid.uuid4().hex[:8]}"
        command = [
            str(PGJOBS),
            "scheduler",
            "--database-url",
            libpq_url(url),
            "--schema",
            SCHEMA,
            "--scheduler-id",
            scheduler_id,
            *options,
        ]
        return self.launch(command, scheduler_id)

    def drain(self, url: URL, *options: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run `pgjobs worker ... --drain` to its end."""
        command, _ = self.command(url, "drain", "--drain", *options)
        return subprocess.run(
            command,
            cwd=REPO,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def runs(self) -> list[dict[str, Any]]:
        """Every event recorded by the handlers so far, in time order. A line still being
        written (no newline yet) is left for the next call."""
        events = [
            json.loads(line)
            for path in sorted(self.runs_dir.glob("*.jsonl"))
            for line in path.read_text().split("\n")[:-1]
        ]
        return sorted(events, key=lambda event: event["time"])

    def starts(self) -> list[dict[str, Any]]:
        return [event for event in self.runs() if event["event"] == "start"]

    def logs(self) -> str:
        return "\n".join(f"--- {w.worker_id}\n{w.log()[-3000:]}" for w in self.started)

    def kill_all(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


# --- The database -------------------------------------------------------------------------


def enqueue(engine: Engine, jobs: Iterable[JobSpec]) -> list[int]:
    """Enqueue the jobs in one add_jobs statement; their ids."""
    with translated(engine).begin() as connection:
        return [row.id for row in connection.execute(add_jobs(jobs))]


def job_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one())


def job_row(engine: Engine, job_id: int) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            sql("SELECT * FROM app_jobs.jobs WHERE id = :id"), {"id": job_id}
        ).one()


def registered_workers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sql("SELECT worker_id FROM app_jobs.workers")).scalars())


def wait_for_start(workers: Workers, job_id: int, attempt: int, timeout: float) -> dict[str, Any]:
    """The start event of ``job_id``'s ``attempt``, once its handler has begun."""

    def found() -> list[dict[str, Any]]:
        return [s for s in workers.starts() if (s["job_id"], s["attempt"]) == (job_id, attempt)]

    wait_for(
        lambda: bool(found()),
        timeout,
        lambda: f"job {job_id} attempt {attempt} never started\n{workers.logs()}",
    )
    [start] = found()
    return start


# --- Tests --------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_twenty_thousand_jobs_through_four_worker_processes_each_run_exactly_once(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    count, shutdown_timeout = 20_000, 10
    started = [
        workers.start(
            database_url,
            "--concurrency",
            "8",
            "--shutdown-timeout",
            str(shutdown_timeout),
            name=f"bulk{i}",
        )
        for i in range(4)
    ]
    ids = {w.worker_id for w in started}
    wait_for(
        lambda: registered_workers(engine) >= ids,
        60,
        lambda: f"workers did not all start\n{workers.logs()}",
    )

    begun = time.monotonic()
    job_ids = enqueue(engine, [JobSpec("record") for _ in range(count)])
    assert len(set(job_ids)) == count
    took = wait_for(
        lambda: job_count(engine) == 0,
        180,
        lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
    )

    for worker in started:
        worker.send(signal.SIGTERM)
    stop_begun = time.monotonic()
    for worker in started:
        code = worker.wait_exit(shutdown_timeout + 15)
        assert code == 0, worker.log()[-3000:]
    assert time.monotonic() - stop_begun < shutdown_timeout + 15
    assert registered_workers(engine).isdisjoint(ids)

    runs = Counter(start["job_id"] for start in workers.starts())
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    assert twice == {}, f"{len(twice)} jobs ran more than once, e.g. {list(twice.items())[:5]}"
    assert set(runs) == set(job_ids)
    assert sum(runs.values()) == count
    # Every worker took part (each was registered before the jobs arrived).
    pids = Counter(start["pid"] for start in workers.starts())
    assert set(pids) == {w.pid for w in started}, pids
    print(
        f"\n{count} jobs in {took:.1f} s after enqueue ({time.monotonic() - begun:.1f} s "
        f"with enqueue); per worker: {sorted(pids.values())}"
    )


@pytest.mark.timeout(120)
def test_failing_jobs_are_retried_after_the_backoff_and_all_complete(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    jobs = [JobSpec("fail_first_attempt", {"fail": i % 10 == 0}) for i in range(200)]
    job_ids = enqueue(engine, jobs)
    failing = {job_id for i, job_id in enumerate(job_ids) if i % 10 == 0}
    assert len(failing) == 20
    started = [workers.start(database_url, "--concurrency", "8", name=f"retry{i}") for i in (1, 2)]

    wait_for(
        lambda: job_count(engine) == 0,
        90,
        lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
    )
    for worker in started:
        worker.send(signal.SIGTERM)
    for worker in started:
        assert worker.wait_exit(30) == 0, worker.log()[-3000:]

    starts: dict[int, list[dict[str, Any]]] = {}
    for start in workers.starts():
        starts.setdefault(start["job_id"], []).append(start)
    assert set(starts) == set(job_ids)
    for job_id, runs in starts.items():
        if job_id not in failing:
            assert [run["attempt"] for run in runs] == [1], runs
            continue
        assert [run["attempt"] for run in runs] == [1, 2], runs
        first, second = runs
        # fail_job pushes run_at to exp(attempts) seconds after the failure is reported,
        # which is after the first run began (one clock: same host).
        delay = second["time"] - first["time"]
        assert math.exp(1) - 0.02 <= delay <= math.exp(1) + 15, (job_id, delay)
        assert second["last_error"].startswith(
            f"RuntimeError: job {job_id} fails its first attempt on purpose"
        )
    ends = Counter(event["job_id"] for event in workers.runs() if event["event"] == "end")
    assert ends == Counter(job_ids)


@pytest.mark.timeout(120)
def test_a_sigkilled_workers_job_is_run_again_after_its_heartbeat_timeout(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    heartbeat_timeout = 3.0
    [job_id] = enqueue(engine, [JobSpec("sleep_on_first_attempt", {"seconds": 60, "then": 0.2})])
    options = ("--heartbeat-timeout", str(heartbeat_timeout), "--concurrency", "1")
    a = workers.start(database_url, *options, name="doomed")
    first = wait_for_start(workers, job_id, 1, 60)
    assert first["pid"] == a.pid

    # A live worker keeps its job: B starts, looks, and leaves it alone.
    b = workers.start(database_url, *options, name="survivor")
    wait_for(
        lambda: b.worker_id in registered_workers(engine),
        60,
        lambda: f"worker B did not start\n{b.log()}",
    )
    time.sleep(heartbeat_timeout + 1)
    assert job_row(engine, job_id).locked_by == a.worker_id
    assert len(workers.starts()) == 1

    a.send(signal.SIGKILL)
    assert a.wait_exit(10) == -signal.SIGKILL
    killed_at = time.time()

    second = wait_for_start(workers, job_id, 2, heartbeat_timeout + 30)
    rerun_after = second["time"] - killed_at
    assert second["pid"] == b.pid
    # Never concurrently with itself: A was dead before B began; and recovered after the
    # heartbeat timeout, not after the 4-hour lock expiry.
    assert 0 < rerun_after <= heartbeat_timeout + 10, rerun_after
    assert f"worker {a.worker_id} stopped heartbeating" in second["last_error"]

    wait_for(
        lambda: job_count(engine) == 0,
        30,
        lambda: f"the job was not completed\n{workers.logs()}",
    )
    runs = workers.runs()
    assert [(e["event"], e["attempt"], e["pid"]) for e in runs] == [
        ("start", 1, a.pid),
        ("start", 2, b.pid),
        ("end", 2, b.pid),
    ]
    b.send(signal.SIGTERM)
    assert b.wait_exit(30) == 0, b.log()[-3000:]
    print(f"\nre-run began {rerun_after:.1f} s after the SIGKILL")


@pytest.mark.timeout(120)
def test_sigterm_gives_back_a_running_job_with_its_attempt_refunded_and_exits_0(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    [job_id] = enqueue(engine, [JobSpec("sleep_on_first_attempt", {"seconds": 60})])
    worker = workers.start(database_url, "--shutdown-timeout", "1")
    wait_for_start(workers, job_id, 1, 60)
    assert job_row(engine, job_id).locked_by == worker.worker_id

    worker.send(signal.SIGTERM)
    stopping = time.monotonic()
    assert worker.wait_exit(1 + 10) == 0, worker.log()[-3000:]
    assert time.monotonic() - stopping < 1 + 10

    job = job_row(engine, job_id)
    assert (job.attempts, job.locked_by, job.locked_at) == (0, None, None)
    assert worker.worker_id not in registered_workers(engine)
    assert [e["event"] for e in workers.runs()] == ["start"]  # the handler never finished
    assert f"released 1 unfinished job(s): [{job_id}]" in worker.log()


@pytest.mark.timeout(120)
def test_a_second_sigterm_during_shutdown_exits_at_once(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    [job_id] = enqueue(engine, [JobSpec("sleep_on_first_attempt", {"seconds": 60})])
    worker = workers.start(database_url, "--shutdown-timeout", "60")
    wait_for_start(workers, job_id, 1, 60)

    worker.send(signal.SIGTERM)
    wait_for(
        lambda: "waiting up to 60 s for 1 running job(s)" in worker.log(),
        15,
        lambda: f"the worker did not begin its shutdown\n{worker.log()}",
    )
    assert worker.process.poll() is None  # waiting for the job: up to 60 s
    worker.send(signal.SIGTERM)
    stopping = time.monotonic()
    assert worker.wait_exit(10) != 0
    assert time.monotonic() - stopping < 10
    assert "second SIGTERM: exiting now" in worker.log()
    # It left at once: the job is still held, for the heartbeat timeout to recover.
    assert job_row(engine, job_id).locked_by == worker.worker_id


def held_schedules(engine: Engine) -> list[str | None]:
    with engine.connect() as connection:
        return list(
            connection.execute(sql("SELECT locked_by FROM app_jobs.scheduled_jobs")).scalars()
        )


def add_yearly_schedule(engine: Engine) -> None:
    with translated(engine).begin() as connection:
        connection.execute(add_scheduled_job("record", {}, "0 0 1 1 *")).one()


@pytest.mark.timeout(120)
def test_a_second_sigterm_ends_a_lone_scheduler_stuck_in_its_shutdown(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    """The worker's rule holds for the scheduler too (one service runner): the first
    signal stops it gracefully, a second exits at once, even while its shutdown waits."""
    add_yearly_schedule(engine)
    scheduler = workers.start_scheduler(database_url)
    wait_for(
        lambda: held_schedules(engine) == [scheduler.worker_id],
        30,
        lambda: f"the scheduler claimed nothing\n{scheduler.log()}",
    )
    with engine.connect() as blocker:
        # Its shutdown releases its claims: an UPDATE this lock makes wait.
        blocker.execute(sql("LOCK TABLE app_jobs.scheduled_jobs IN EXCLUSIVE MODE"))
        scheduler.send(signal.SIGTERM)
        wait_for(
            lambda: "SIGTERM: stopping scheduler" in scheduler.log(),
            15,
            lambda: f"the first signal was not heard\n{scheduler.log()}",
        )
        time.sleep(0.5)
        assert scheduler.process.poll() is None, scheduler.log()  # waiting for the lock
        scheduler.send(signal.SIGTERM)
        stopping = time.monotonic()
        assert scheduler.wait_exit(10) == 1
        assert time.monotonic() - stopping < 10
        blocker.rollback()
    assert "second SIGTERM: exiting now" in scheduler.log()


@pytest.mark.timeout(120)
def test_a_draining_worker_with_a_scheduler_stops_both_once_the_jobs_are_done(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    add_yearly_schedule(engine)
    job_ids = enqueue(engine, [JobSpec("record", {"n": n}) for n in range(5)])
    result = workers.drain(database_url, "--with-scheduler", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(s["job_id"] for s in workers.starts()) == sorted(job_ids)
    assert "scheduler scheduler-" in result.stderr and " started (lease 60 s)" in result.stderr
    assert "stopped: 0 fired, 0 skipped" in result.stderr
    assert held_schedules(engine) == [None]
    assert registered_workers(engine) == set()


@pytest.mark.timeout(120)
def test_one_sigterm_stops_a_worker_and_its_scheduler_gracefully(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    add_yearly_schedule(engine)
    worker = workers.start(database_url, "--with-scheduler")
    wait_for(
        lambda: held_schedules(engine) != [None] and worker.worker_id in registered_workers(engine),
        30,
        lambda: f"the worker or its scheduler did not start\n{worker.log()}",
    )
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(30) == 0, worker.log()[-3000:]
    log = worker.log()
    assert f"SIGTERM: stopping worker {worker.worker_id}, scheduler scheduler-" in log
    assert f"worker {worker.worker_id} stopped" in log and "stopped: 0 fired" in log
    assert held_schedules(engine) == [None]
    assert registered_workers(engine) == set()


@pytest.mark.timeout(120)
def test_drain_runs_the_due_jobs_and_exits_0_without_waiting_for_a_delayed_one(
    engine: Engine, database_url: URL, workers: Workers
) -> None:
    due = enqueue(engine, [JobSpec("record") for _ in range(25)])
    [delayed] = enqueue(engine, [JobSpec("record", run_at=datetime.now(UTC) + timedelta(hours=1))])

    begun = time.monotonic()
    result = workers.drain(database_url, "--concurrency", "4", timeout=90)
    took = time.monotonic() - begun
    assert result.returncode == 0, result.stderr[-3000:]
    assert took < 60, took  # not the hour until the delayed job, nor a stuck loop

    runs = Counter(start["job_id"] for start in workers.starts())
    assert runs == Counter(due)
    with engine.connect() as connection:
        left = connection.execute(sql("SELECT * FROM app_jobs.jobs")).all()
    assert [(job.id, job.attempts, job.locked_by) for job in left] == [(delayed, 0, None)]
    assert registered_workers(engine) == set()


# --- A PostgreSQL of the test's own, restarted mid-run --------------------------------------


class OwnPostgres:
    """A throwaway cluster of the embedded PostgreSQL's binaries, listening only on a unix
    socket in its own temporary directory. As root it runs as the system user ``pgserver``,
    as the ``pgserver`` package does."""

    PORT = 5432  # names the socket file only: no TCP

    def __init__(self) -> None:
        pgserver = pytest.importorskip("pgserver")
        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.base = Path(tempfile.mkdtemp(prefix="pgjobs-own-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver import utils

            self.user = "pgserver"
            utils.ensure_user_exists(self.user)
            utils.ensure_prefix_permissions(self.base)
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o755)

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            database=database,
            query={"host": str(self.base), "port": str(self.PORT)},
        )

    def run(self, program: str, *arguments: str, timeout: float = 90) -> None:
        try:
            completed = subprocess.run(
                [str(self.bin / program), *arguments],
                user=self.user,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{program} {arguments} timed out\n{self.server_log()}") from exc
        if completed.returncode != 0:
            raise AssertionError(
                f"{program} {arguments} failed ({completed.returncode}):\n{completed.stdout}\n"
                f"{completed.stderr}\n{self.server_log()}"
            )

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def pg_ctl(self, *arguments: str, timeout: float = 90) -> None:
        # -l: the server's output goes to a file, never to a pipe of ours.
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            *arguments,
            timeout=timeout,
        )

    def initdb(self) -> None:
        self.run(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        self.pg_ctl("-o", f"-h '' -k {self.base} -p {self.PORT}", "start")

    def restart(self, down_for: float) -> None:
        """Stop the server (fast: sessions are cut off), leave it down for ``down_for``
        seconds (clients find no server), and start it again."""
        self.pg_ctl("-m", "fast", "stop")
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        """Stop the server, however it is, and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self.pg_ctl("-m", "fast", "stop", timeout=60)
                except AssertionError:
                    self.pg_ctl("-m", "immediate", "stop", timeout=60)
        finally:
            pid_file = self.data / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Still there: pg_ctl could not stop it. Kill the postmaster.
                os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.mark.timeout(240)
def test_a_database_restart_mid_run_loses_no_job(
    own_postgres: OwnPostgres, workers: Workers
) -> None:
    count, concurrency = 3000, 4
    url = own_postgres.url()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            install(connection, SCHEMA, LATEST_VERSION)
        job_ids = enqueue(engine, [JobSpec("record", {"sleep": 0.01}) for _ in range(count)])
        with engine.connect() as connection:
            server_started = connection.execute(
                sql("SELECT pg_postmaster_start_time()")
            ).scalar_one()
        engine.dispose()

        started = [
            workers.start(url, "--concurrency", str(concurrency), name=f"restart{i}")
            for i in (1, 2)
        ]
        wait_for(
            lambda: len({s["job_id"] for s in workers.starts()}) >= count // 5,
            120,
            lambda: f"the workers are not running jobs\n{workers.logs()}",
        )
        left_before = job_count(engine)
        engine.dispose()
        restart_begun = time.monotonic()
        own_postgres.restart(down_for=2)
        restart_took = time.monotonic() - restart_begun
        with engine.connect() as connection:
            restarted = connection.execute(sql("SELECT pg_postmaster_start_time()")).scalar_one()
        assert restarted > server_started
        assert left_before > concurrency * 2 * 10, "the restart came too late to be mid-run"

        wait_for(
            lambda: job_count(engine) == 0,
            150,
            lambda: f"{job_count(engine)} jobs left\n{workers.logs()}",
        )
        for worker in started:
            assert "database connection lost" in worker.log(), worker.log()[-3000:]
            worker.send(signal.SIGTERM)
        for worker in started:
            assert worker.wait_exit(30) == 0, worker.log()[-3000:]

        runs = workers.runs()
        starts = Counter(e["job_id"] for e in runs if e["event"] == "start")
        ends = Counter(e["job_id"] for e in runs if e["event"] == "end")
        assert set(starts) == set(job_ids)
        assert set(ends) == set(job_ids)
        duplicates = sum(n - 1 for n in starts.values())
        # Exactly once (docs/guarantees.md): the workers keep running their jobs through the
        # outage and report them once reconnected (a restart counts as every worker's
        # heartbeat, so none is taken over); jobs a lost answer handed over are given back
        # unstarted. Nothing may run twice.
        twice = sorted(job for job, n in starts.items() if n > 1)
        assert duplicates == 0, f"jobs run twice: {twice}\n{workers.logs()}"
        assert registered_workers(engine) == set()
        with engine.connect() as connection:
            held = connection.execute(
                sql("SELECT count(*) FROM app_jobs.job_queues WHERE locked_by IS NOT NULL")
            ).scalar_one()
        assert held == 0
        print(
            f"\nrestart after {count - left_before} of {count} jobs took {restart_took:.1f} s; "
            f"jobs run twice: {duplicates}"
        )
    finally:
        engine.dispose()
