"""Paused queues and tasks (schema version 2): no worker takes their jobs, the seed's
get_job included, an idle worker does not wake up for them, and a resume wakes workers."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy import text

from sqla_pgjobs import InvalidArgumentError, TaskRegistry, Worker
from sqla_pgjobs.functions import (
    add_job,
    next_run_at,
    pause_queue,
    pause_task,
    resume_queue,
    resume_task,
)
from tests.helpers import SCHEMA, libpq_url, listening, notifications, raw, wait_for
from tests.sql.test_history import NODE, take

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def test_paused_queues_and_tasks_are_taken_by_no_worker_until_resumed(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        mail = [connection.execute(add_job("send", queue_name="mail")).one().id for _ in range(2)]
        report = connection.execute(add_job("report")).one().id
        other = connection.execute(add_job("send")).one().id
        assert connection.execute(pause_queue("mail")).scalar_one() is True
        assert connection.execute(pause_queue("mail")).scalar_one() is False
        assert connection.execute(pause_task("report")).scalar_one() is True
        assert connection.execute(pause_queue("not-yet-used")).scalar_one() is True
    with jobs_engine.begin() as connection:
        assert take(connection) == [other]
        # Nothing else could be taken: an idle worker has nothing to wake up for.
        assert connection.execute(next_run_at()).scalar_one() is None
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        # The reference Node worker's call skips them too.
        job = db.execute(raw("SELECT id FROM app_jobs.get_job(%s, %s)"), (NODE, None)).fetchone()
        assert job == (None,)
    with listening(jobs_engine.url, "jobs:insert") as listener:
        with jobs_engine.begin() as connection:
            assert connection.execute(resume_queue("mail")).scalar_one() is True
        assert notifications(listener) == ["jobs:insert"]
    with jobs_engine.begin() as connection:
        assert take(connection, n=10) == [mail[0]]  # one at a time: it is a queue
        assert connection.execute(resume_task("report")).scalar_one() is True
        assert connection.execute(resume_task("report")).scalar_one() is False
        assert take(connection, n=10) == [report]


def test_pausing_a_bad_name_is_refused_and_changes_nothing(jobs_engine: Engine) -> None:
    for call, argument in [(pause_queue, "queue_name"), (pause_task, "task_identifier")]:
        for bad in ("", "x" * 127, None, 5):
            with pytest.raises(InvalidArgumentError) as info:
                call(bad)  # type: ignore[arg-type]
            assert info.value.argument == argument
    with psycopg.connect(libpq_url(jobs_engine.url), autocommit=True) as db:
        for call, argument in [
            ("pause_queue(NULL)", "queue_name"),
            ("pause_task('')", "task_identifier"),
            ("resume_queue(repeat('x', 127))", "queue_name"),
        ]:
            with pytest.raises(psycopg.Error) as raised:
                db.execute(raw(f"SELECT app_jobs.{call}"))
            assert (raised.value.sqlstate, raised.value.diag.column_name) == ("22023", argument)
        assert db.execute(raw("SELECT count(*) FROM app_jobs.pauses")).fetchone() == (0,)


def commits(engine: Engine) -> int:
    """Transactions committed in the test's database so far (as the statistics know)."""
    time.sleep(1.1)  # backends report their statistics at most once a second
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            connection.execute(
                text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )


def test_a_worker_leaves_a_paused_queue_alone_and_runs_it_on_resume(jobs_engine: Engine) -> None:
    ran: list[int] = []
    tasks = TaskRegistry()
    tasks.add("send", lambda payload: ran.append(payload["n"]))
    with jobs_engine.begin() as connection:
        connection.execute(pause_queue("mail"))
        for n in range(3):
            connection.execute(add_job("send", {"n": n}, queue_name="mail"))
        connection.execute(add_job("send", {"n": 99}))
    worker = Worker(jobs_engine, tasks, schema=SCHEMA, poll_interval=60)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        wait_for(lambda: ran == [99], describe=lambda: f"ran {ran}")
        # The scenario: the worker idles beside paused jobs, without waking up for them
        # (transactions in the database over 2 s: a spinning worker commits hundreds).
        before = commits(jobs_engine)
        time.sleep(2)
        assert ran == [99]
        assert commits(jobs_engine) - before < 30
        with jobs_engine.begin() as connection:
            connection.execute(resume_queue("mail"))
        wait_for(lambda: len(ran) == 4, describe=lambda: f"ran {ran}")
    finally:
        worker.stop()
        thread.join(30)
    assert sorted(ran) == [0, 1, 2, 99]
