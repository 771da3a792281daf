"""Transactional tasks: a typed task taking a Session, AsyncSession or Connection runs in
a transaction the worker opens, and its job is completed in it, so the handler's writes
and the completion commit together or not at all."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select, text

# At run time, not only for type checkers: a task's transaction is read off its annotations.
from sqlalchemy.engine import Connection  # noqa: TC002
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession  # noqa: TC002
from sqlalchemy.orm import Session  # noqa: TC002

from sqla_pgjobs import InvalidArgumentError, Job, TaskRegistry, Worker
from sqla_pgjobs.tables import job_history, jobs
from sqla_pgjobs.testing import run_jobs
from tests.helpers import SCHEMA, wait_for
from tests.worker.test_processes import Workers

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import URL, Engine


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture
def effects(engine: Engine) -> Engine:
    """A table of the application's, outside the job schema, that handlers write to."""
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE public.tx_effects (job_id bigint NOT NULL, attempt int NOT NULL)")
        )
    return engine


def written(engine: Engine) -> list[tuple[int, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT job_id, attempt FROM public.tx_effects ORDER BY 1, 2")
        )
        return [(row.job_id, row.attempt) for row in rows]


def history(engine: Engine) -> dict[int, str]:
    with engine.connect() as connection:
        return {row.job_id: row.outcome for row in connection.execute(select(job_history))}


def left(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        return {row.id: row.attempts for row in connection.execute(select(jobs))}


def registry() -> tuple[TaskRegistry, dict[str, object]]:
    tasks = TaskRegistry()

    @tasks.task
    def with_session(n: int, job: Job, session: Session) -> None:
        session.execute(
            text("INSERT INTO public.tx_effects VALUES (:j, :a)"), {"j": job.id, "a": job.attempts}
        )
        if n < 0:
            raise ValueError("written, then raised: the write must go")

    @tasks.task
    def with_connection(n: int, job: Job, connection: Connection) -> None:
        connection.execute(
            text("INSERT INTO public.tx_effects VALUES (:j, :a)"), {"j": job.id, "a": job.attempts}
        )

    @tasks.task
    async def with_async_session(n: int, job: Job, session: AsyncSession) -> None:
        await session.execute(
            text("INSERT INTO public.tx_effects VALUES (:j, :a)"), {"j": job.id, "a": job.attempts}
        )
        if n < 0:
            raise ValueError("written, then raised: the write must go")

    @tasks.task
    async def with_async_connection(n: int, job: Job, connection: AsyncConnection) -> None:
        await connection.execute(
            text("INSERT INTO public.tx_effects VALUES (:j, :a)"), {"j": job.id, "a": job.attempts}
        )

    @tasks.task
    def plain(n: int) -> None:
        """No transaction: completed in the worker's batched cycle."""

    return tasks, {
        "with_session": with_session,
        "with_connection": with_connection,
        "with_async_session": with_async_session,
        "with_async_connection": with_async_connection,
        "plain": plain,
    }


def test_writes_and_completions_commit_together_and_failures_roll_writes_back(
    database_url: URL, jobs_engine: Engine, effects: Engine
) -> None:
    tasks, typed = registry()
    with jobs_engine.begin() as connection:
        ok = [
            connection.execute(typed[name].job(n=1)).one().id  # type: ignore[attr-defined]
            for name in (
                "with_session",
                "with_connection",
                "with_async_session",
                "with_async_connection",
            )
        ]
        bad = [
            connection.execute(typed[name].job(n=-1)).one().id  # type: ignore[attr-defined]
            for name in ("with_session", "with_async_session")
        ]
        plain = [connection.execute(typed["plain"].job(n=i)).one().id for i in range(50)]  # type: ignore[attr-defined]
    worker = Worker(database_url, tasks, schema=SCHEMA, poll_interval=0.5, prune_interval=None)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        wait_for(
            lambda: set(history(jobs_engine)) >= set(ok + plain) and len(left(jobs_engine)) == 2
        )
    finally:
        worker.stop()
        thread.join(30)
    assert written(effects) == [(job_id, 1) for job_id in ok]  # none of the failed runs'
    assert {history(jobs_engine)[job_id] for job_id in ok + plain} == {"completed"}
    assert left(jobs_engine) == {job_id: 1 for job_id in bad}  # to be retried
    assert worker.stats.completed == len(ok) + len(plain) and worker.stats.lost == 0


def test_run_jobs_runs_transactional_tasks_in_savepoints(
    jobs_engine: Engine, effects: Engine
) -> None:
    tasks, typed = registry()
    with jobs_engine.connect() as connection, connection.begin():
        good = connection.execute(typed["with_session"].job(n=1)).one().id  # type: ignore[attr-defined]
        failing = connection.execute(typed["with_session"].job(n=-1)).one().id  # type: ignore[attr-defined]
        report = run_jobs(connection, tasks)
        assert [job.id for job in report.completed] == [good]
        assert [job.id for job, _ in report.failed] == [failing]
        rows = connection.execute(text("SELECT job_id FROM public.tx_effects")).scalars().all()
        assert rows == [good]
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 1


def test_a_transaction_parameter_must_match_the_function() -> None:
    tasks = TaskRegistry()
    with pytest.raises(InvalidArgumentError, match="an async function takes an AsyncSession"):

        @tasks.task
        async def wrong(n: int, session: Session) -> None: ...

    with pytest.raises(InvalidArgumentError, match="at most one transaction"):

        @tasks.task
        def two(a: Session, b: Connection) -> None: ...


@pytest.mark.slow
def test_sigkill_inside_the_transaction_leaves_no_write_and_the_job_runs_again_once(
    database_url: URL, jobs_engine: Engine, effects: Engine, workers: Workers, tmp_path: Path
) -> None:
    """The worker is killed while its handler has written inside its transaction: the
    write is gone with the transaction, the job is re-run by another worker after the
    heartbeat timeout, and the end holds exactly one write and one completion: never the
    write and a re-run."""
    hold = tmp_path / "hold"
    hold.touch()
    from tests.worker_tasks.recording import tasks as recording

    task = recording.get("write_in_transaction")
    assert task is not None
    with jobs_engine.begin() as connection:
        job_id = connection.execute(task.job({"hold_while": str(hold)})).one().id
    first = workers.start(database_url, "--heartbeat-timeout", "2")
    wait_for(lambda: any(run["event"] == "start" for run in workers.runs()), describe=workers.logs)
    first.send(signal.SIGKILL)
    first.wait_exit(10)
    assert written(effects) == []  # the transaction died with the worker
    hold.unlink()
    second = workers.start(database_url, "--heartbeat-timeout", "2")
    wait_for(
        lambda: history(jobs_engine).get(job_id) == "completed", timeout=30, describe=workers.logs
    )
    second.send(signal.SIGTERM)
    second.wait_exit(30)
    assert written(effects) == [(job_id, 2)]  # the re-run's write, only
    assert left(jobs_engine) == {}
