"""The scheduler on a real PostgreSQL: fires on time, once per fire time with several
schedulers, survives the death of one, picks up new and changed schedules at once, logs
skipped fires, skips unreadable schedules without spinning, and catches up once."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import sqla_pgjobs as pgjobs
from sqla_pgjobs.scheduler import Scheduler
from sqla_pgjobs.worker import Job, TaskRegistry, Worker
from tests.helpers import SCHEMA, libpq_url, sql, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL, Engine

PGJOBS = str(Path(sys.executable).with_name("pgjobs"))


class Runner:
    """Schedulers and workers in threads, all stopped and joined at the end."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.started: list[tuple[Any, threading.Thread]] = []

    def scheduler(self, **options: Any) -> Scheduler:
        options.setdefault("lease", 3)
        options.setdefault("poll_interval", 1)
        scheduler = Scheduler(self.url, schema=SCHEMA, **options)
        self._start(scheduler, scheduler.run)
        return scheduler

    def worker(self, tasks: TaskRegistry) -> Worker:
        worker = Worker(self.url, tasks, schema=SCHEMA, concurrency=4, poll_interval=1)
        self._start(worker, worker.run)
        return worker

    def _start(self, runner: Any, target: Callable[..., Any]) -> None:
        thread = threading.Thread(target=target, kwargs={"install_signal_handlers": False})
        thread.start()
        self.started.append((runner, thread))

    def stop(self) -> None:
        for runner, _ in self.started:
            runner.stop()
        for _, thread in self.started:
            thread.join(timeout=30)
            assert not thread.is_alive()


@pytest.fixture
def runner(database_url: URL) -> Iterator[Runner]:
    running = Runner(database_url)
    yield running
    running.stop()


def recording_tasks() -> tuple[TaskRegistry, list[Job]]:
    tasks = TaskRegistry()
    ran: list[Job] = []
    lock = threading.Lock()

    def record(payload: Any, job: Job) -> None:
        with lock:
            ran.append(job)

    for name in ("tick", "later", "changed", "good", "catch_up"):
        tasks.add(name, record)
    return tasks, ran


def per_second(jobs_made: list[Job]) -> collections.Counter[int]:
    """Jobs made per second of creation time."""
    return collections.Counter(
        int(job.created_at.timestamp()) for job in jobs_made if job.created_at
    )


def held_by(jobs_engine: Engine) -> str | None:
    with jobs_engine.connect() as connection:
        return connection.execute(sql("SELECT locked_by FROM app_jobs.scheduled_jobs")).scalar()


def test_a_per_second_cron_makes_one_job_per_second_with_two_schedulers(
    runner: Runner, jobs_engine: Engine
) -> None:
    tasks, ran = recording_tasks()
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_scheduled_job("tick", None, "* * * * * *"))
    runner.worker(tasks)
    first, second = runner.scheduler(), runner.scheduler()
    time.sleep(5.5)  # the scenario: five and a half seconds of per-second fires, two schedulers
    runner.stop()
    counts = per_second(ran)
    assert max(counts.values()) == 1, counts  # never two jobs for one fire time
    assert 4 <= len(ran) <= 7, counts
    # A fire just before the stop makes a job the worker may not have taken yet: it waits
    # in the queue, and counts as fired.
    with jobs_engine.connect() as connection:
        waiting = connection.execute(
            sql("SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'tick'")
        ).scalar_one()
    assert waiting <= 1
    assert first.stats.fired + second.stats.fired == len(ran) + waiting
    assert first.stats.skipped + second.stats.skipped <= 1


def test_killing_a_scheduler_neither_stops_nor_duplicates_fires(
    runner: Runner, jobs_engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    tasks, ran = recording_tasks()
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_scheduled_job("tick", None, "* * * * * *"))
    runner.worker(tasks)
    log = (tmp_path / "doomed.log").open("w")
    doomed = subprocess.Popen(
        [
            PGJOBS,
            "scheduler",
            "--database-url",
            libpq_url(database_url),
            "--schema",
            SCHEMA,
            "--lease",
            "2",
            "--scheduler-id",
            "doomed-scheduler",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PGJOBS_DATABASE_URL": ""},
    )
    try:
        wait_for(lambda: held_by(jobs_engine) == "doomed-scheduler", timeout=20)
        survivor = runner.scheduler(lease=2, scheduler_id="survivor-scheduler")
        wait_for(lambda: len(ran) >= 2, timeout=20)
        assert held_by(jobs_engine) == "doomed-scheduler"  # a live holder keeps its schedule
        doomed.send_signal(signal.SIGKILL)
        killed_at = time.time()
        doomed.wait(timeout=10)
        # After the lease (2 s) and a renewal tick, the survivor fires on.
        wait_for(
            lambda: any(j.created_at.timestamp() > killed_at + 2 for j in ran if j.created_at),
            timeout=15,
        )
        resumed = min(j.created_at.timestamp() for j in ran if j.created_at.timestamp() > killed_at)
        assert resumed - killed_at < 2 + 3
        time.sleep(2)  # the scenario: two more seconds of fires by the survivor alone
    finally:
        if doomed.poll() is None:
            doomed.kill()
        log.close()
    runner.stop()
    counts = per_second(ran)
    assert max(counts.values()) == 1, counts
    assert survivor.stats.fired >= 2


def test_a_schedule_added_while_the_scheduler_runs_fires_on_time(
    runner: Runner, jobs_engine: Engine
) -> None:
    tasks, ran = recording_tasks()
    runner.worker(tasks)
    runner.scheduler(lease=30, poll_interval=30)
    time.sleep(1)  # the scheduler is idle, with nothing to hold
    fire_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_scheduled_job("later", None, fire_at.isoformat()))
    wait_for(lambda: bool(ran), timeout=15)
    [job] = ran
    assert job.created_at is not None
    assert timedelta(0) <= job.created_at - fire_at < timedelta(seconds=1)


def test_a_changed_schedule_is_picked_up_at_once(runner: Runner, jobs_engine: Engine) -> None:
    tasks, ran = recording_tasks()
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_scheduled_job("changed", None, "0 0 1 1 *", job_key="k"))
    runner.worker(tasks)
    runner.scheduler(lease=60, poll_interval=60)
    wait_for(lambda: held_by(jobs_engine) is not None)
    changed_at = time.time()
    with jobs_engine.begin() as connection:  # the key replaces the held schedule: every second now
        connection.execute(pgjobs.add_scheduled_job("changed", None, "* * * * * *", job_key="k"))
    wait_for(lambda: bool(ran), timeout=10)
    assert ran[0].created_at.timestamp() - changed_at < 3


def test_a_fire_blocked_by_an_unfinished_job_is_logged_not_lost(
    runner: Runner, jobs_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_scheduled_job("tick", None, "* * * * * *"))
    caplog.set_level(logging.WARNING, logger="sqla_pgjobs.scheduler")
    scheduler = runner.scheduler()  # and no worker: the first job stays pending
    time.sleep(3.5)
    runner.stop()
    with jobs_engine.connect() as connection:
        made = connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one()
    assert made == 1
    assert scheduler.stats.skipped >= 2
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == scheduler.stats.skipped
    assert "has not finished yet" in skipped[0].getMessage()


def test_an_unreadable_schedule_is_reported_once_and_skipped(
    runner: Runner, jobs_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    tasks, ran = recording_tasks()
    with jobs_engine.begin() as connection:
        # Written around the Python door, as the seed's SQL API allows.
        connection.execute(
            sql(
                "INSERT INTO app_jobs.scheduled_jobs (task_identifier, schedule_info)"
                " VALUES ('bad', 'null'), ('bad', '\"61 * * * *\"')"
            )
        )
        connection.execute(pgjobs.add_scheduled_job("good", None, "* * * * * *"))
    caplog.set_level(logging.ERROR, logger="sqla_pgjobs.scheduler")
    runner.worker(tasks)
    scheduler = runner.scheduler(lease=1)
    time.sleep(3)
    runner.stop()
    assert scheduler.stats.invalid == 2  # once each, though renewed every third of a second
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2 and all("is skipped" in e for e in errors)
    assert any("minute" in e for e in errors)
    assert len(ran) >= 2 and all(job.task_identifier == "good" for job in ran)


def test_missed_fires_run_once_on_recovery(runner: Runner, jobs_engine: Engine) -> None:
    tasks, ran = recording_tasks()
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_scheduled_job("catch_up", None, "0 * * * *"))
        connection.execute(
            sql("UPDATE app_jobs.scheduled_jobs SET last_scheduled = now() - interval '10 hours'")
        )
    runner.worker(tasks)
    runner.scheduler()
    wait_for(lambda: bool(ran), timeout=10)
    time.sleep(2)
    assert len(ran) == 1  # once, not ten times
    with jobs_engine.connect() as connection:
        last = connection.execute(
            sql("SELECT last_scheduled FROM app_jobs.scheduled_jobs")
        ).scalar_one()
    now = datetime.now(UTC)
    assert now - timedelta(hours=1) < last <= now  # the latest missed hour
    assert (last.minute, last.second) == (0, 0)


def test_pgjobs_schedules_shows_the_next_fire_in_the_schedules_zone(
    jobs_engine: Engine, database_url: URL
) -> None:
    with jobs_engine.begin() as connection:
        connection.execute(
            pgjobs.add_scheduled_job(
                "nightly", None, {"hour": 2, "minute": 0, "tz": "Europe/Paris"}
            )
        )
        connection.execute(pgjobs.add_scheduled_job("hourly", None, "0 * * * *"))
    result = subprocess.run(
        [PGJOBS, "schedules", "--database-url", libpq_url(database_url), "--schema", SCHEMA],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    nightly = next(line for line in result.stdout.splitlines() if "nightly" in line)
    assert "T02:00:00+01:00" in nightly or "T02:00:00+02:00" in nightly
    assert "Europe/Paris" in nightly
    hourly = next(line for line in result.stdout.splitlines() if "hourly" in line)
    assert ":00:00+00:00" in hourly


def test_pgjobs_add_schedule_registers_valid_schedules_and_refuses_the_rest(
    jobs_engine: Engine, database_url: URL
) -> None:
    url = libpq_url(database_url)

    def add(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PGJOBS, "add-schedule", *args, "--database-url", url, "--schema", SCHEMA],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = add(
        "report",
        '{"hour": 8, "minute": 0, "tz": "Europe/Paris"}',
        "--payload",
        '{"to": "ops"}',
        "--key",
        "daily-report",
    )
    assert ok.returncode == 0, ok.stderr
    again = add("report", "0 9 * * *", "--key", "daily-report")
    assert again.returncode == 0, again.stderr
    impossible = add("report", '{"month": 1, "date": 31}')
    assert impossible.returncode == 2
    assert "never fires" in impossible.stderr
    with jobs_engine.connect() as connection:
        rows = connection.execute(
            sql("SELECT task_identifier, schedule_info::text, key FROM app_jobs.scheduled_jobs")
        ).all()
    assert rows == [("report", '"0 9 * * *"', "daily-report")]
