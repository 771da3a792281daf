"""Testing helpers: a real PostgreSQL with no configuration, and running and checking jobs
inside tests (:func:`run_jobs`, :func:`assert_enqueued`, :func:`advance_time`). The pytest
fixtures are in :mod:`sqla_pgjobs.pytest_plugin`.

:func:`postgres_server` finds a server in this order:

1. the SQLAlchemy URL in ``PGJOBS_TEST_DATABASE_URL`` (a CI service, your own server);
2. a throwaway container, when the ``testcontainers`` package is installed and a Docker
   daemon answers (``PGJOBS_TEST_DOCKER=0`` turns this off);
3. the embedded PostgreSQL 16 of the pip package ``pgserver`` (``sqla-pgjobs[testing]``;
   wheels for CPython 3.11 and 3.12), started in a temporary directory.

Each test then gets a database of its own, cloned from a template that has the job schema
installed (:func:`create_database` with ``template=``), which costs about 0.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from sqla_pgjobs.database import sqlalchemy_url
from sqla_pgjobs.errors import PgJobsError
from sqla_pgjobs.outcomes import Failure, failure
from sqla_pgjobs.schema import DEFAULT_SCHEMA, LATEST_VERSION, install
from sqla_pgjobs.tasks import Job, error_text

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from datetime import timedelta

    from sqlalchemy.engine import URL

    from sqla_pgjobs.tasks import TaskRegistry

__all__ = [
    "NoPostgresError",
    "RunReport",
    "advance_time",
    "assert_enqueued",
    "create_database",
    "drop_database",
    "embedded_postgres",
    "enqueued",
    "postgres_server",
    "run_jobs",
    "template_database",
    "unique_database_name",
]

URL_VARIABLE = "PGJOBS_TEST_DATABASE_URL"
DOCKER_VARIABLE = "PGJOBS_TEST_DOCKER"


class NoPostgresError(PgJobsError):
    """No way to get a PostgreSQL server for the tests was found."""


@contextlib.contextmanager
def postgres_server() -> Iterator[URL]:
    """Yield the URL of a PostgreSQL server's maintenance database (see the module doc)."""
    if configured := os.environ.get(URL_VARIABLE):
        yield sqlalchemy_url(configured)
        return
    if os.environ.get(DOCKER_VARIABLE, "auto") != "0" and _docker_answers():
        with _container() as container_url:
            yield container_url
        return
    with embedded_postgres() as embedded_url:
        yield embedded_url


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker
    except ImportError:
        return False
    try:
        # A fixed API version: "auto" asks the daemon first and leaks the socket on failure.
        client = docker.from_env(timeout=2, version="1.41")
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _container() -> Iterator[URL]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before 4.14
        from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
        yield sqlalchemy_url(container.get_connection_url())


@contextlib.contextmanager
def embedded_postgres() -> Iterator[URL]:
    """Start the embedded PostgreSQL 16 of ``pgserver`` in a temporary directory; yield the
    URL of its maintenance database; stop it and remove the directory afterwards."""
    try:
        import pgserver
    except ImportError as exc:
        raise NoPostgresError(
            f"no PostgreSQL for the tests: {URL_VARIABLE} is not set, no Docker daemon "
            "answers, and the embedded server is not installed "
            "(pip install 'sqla-pgjobs[testing]'; pgserver has wheels for Python 3.11 and 3.12)"
        ) from exc
    data_directory = tempfile.mkdtemp(prefix="pgjobs-test-")
    server = pgserver.get_server(data_directory, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        yield sqlalchemy_url(server.get_uri())
    finally:
        server.cleanup()


def unique_database_name(prefix: str = "pgjobs_test") -> str:
    """A database name no other test run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _with_database(server_url: URL, name: str) -> URL:
    return server_url.set(database=name)


def create_database(server_url: URL, name: str, template: str | None = None) -> URL:
    """Create database ``name`` on the server (optionally as a copy of ``template``)."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            statement = f'CREATE DATABASE "{name}"'
            if template is not None:
                statement += f' TEMPLATE "{template}"'
            connection.execute(text(statement))
    finally:
        engine.dispose()
    return _with_database(server_url, name)


def drop_database(server_url: URL, name: str) -> None:
    """Drop database ``name``, disconnecting anyone still in it."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@contextlib.contextmanager
def template_database(server_url: URL, schema: str = DEFAULT_SCHEMA) -> Iterator[str]:
    """A database with the job schema installed under ``schema``, for
    ``create_database(..., template=name)`` to copy; dropped afterwards. Yields its name."""
    name = unique_database_name("pgjobs_tpl")
    engine = create_engine(create_database(server_url, name))
    try:
        with engine.begin() as connection:
            install(connection, schema, LATEST_VERSION)
    finally:
        engine.dispose()
    try:
        yield name
    finally:
        drop_database(server_url, name)


# --- Running and checking jobs inside tests ---------------------------------------------------


@dataclasses.dataclass
class RunReport:
    """What :func:`run_jobs` did."""

    completed: list[Job] = dataclasses.field(default_factory=list)
    failed: list[tuple[Job, str]] = dataclasses.field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        """The tasks of the completed jobs, in the order they ran."""
        return [job.task_identifier for job in self.completed]


def run_jobs(
    bind: Connection | Engine,
    tasks: TaskRegistry,
    *,
    worker_id: str = "pgjobs-test-runner",
    max_jobs: int = 10_000,
    raise_errors: bool = False,
) -> RunReport:
    """Run every due job of ``tasks`` now, in this thread, and return what happened.

    Jobs the handlers enqueue are run too, when due. With a Connection inside a
    transaction (your test's), everything happens in that transaction and is rolled back
    with it; with an Engine, each batch commits. A handler that raises fails its job as a
    worker would (it is retried later, after the backoff), or, with ``raise_errors``,
    the exception propagates. At most ``max_jobs`` runs: a handler that enqueues its own
    task forever stops there.
    """
    from sqla_pgjobs.functions import complete_job, get_jobs

    report = RunReport()
    names = tasks.names
    with contextlib.ExitStack() as stack:
        connection = bind if isinstance(bind, Connection) else stack.enter_context(bind.begin())
        transactions = _Savepoints(connection)
        while len(report.completed) + len(report.failed) < max_jobs:
            rows = connection.execute(get_jobs(worker_id, names, max_jobs=100)).mappings().all()
            if not rows:
                break
            for row in rows:
                job = Job.from_row(dict(row), transactions=transactions)
                task = tasks[job.task_identifier]
                try:
                    result = task(job.payload, job)
                    if inspect.isawaitable(result):
                        asyncio.run(_await(result))
                except Exception as exc:
                    if raise_errors:
                        raise
                    error = error_text(exc)
                    _record_failure(connection, worker_id, job, failure(exc, task, job), error)
                    report.failed.append((job, error))
                else:
                    if job.id not in transactions.done:  # else completed in its transaction
                        connection.execute(complete_job(worker_id, job.id))
                    report.completed.append(job)
    return report


class _Savepoints:
    """run_jobs' transactions for transactional tasks: savepoints in its connection, so
    that a handler that raises leaves no write behind, as in a worker."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.done: set[int] = set()

    @contextlib.contextmanager
    def begin(self, kind: str) -> Iterator[Any]:
        from sqlalchemy.orm import Session

        with self.connection.begin_nested():
            if kind == "session":
                with Session(
                    bind=self.connection, join_transaction_mode="rollback_only"
                ) as session:
                    yield session
                    session.flush()
            else:
                yield self.connection

    def begin_async(self, kind: str) -> contextlib.AbstractAsyncContextManager[Any]:
        raise PgJobsError(
            "run_jobs runs plain functions' transactions only: run async transactional "
            "tasks with a Worker (for instance Worker(...).run(drain=True))"
        )

    def completed(self, job: Job) -> None:
        self.done.add(job.id)


def _record_failure(
    connection: Connection, worker_id: str, job: Job, how: Failure, error: str
) -> None:
    """As the worker records it (:mod:`sqla_pgjobs.outcomes`)."""
    from sqla_pgjobs.functions import fail_job, fail_jobs_for_good, retry_jobs_at

    if how.run_at is not None:
        statement = retry_jobs_at(worker_id, [job.id], [how.run_at], [error], [how.refunded])
    elif how.for_good:
        statement = fail_jobs_for_good(worker_id, [job.id], [error])
    else:
        statement = fail_job(worker_id, job.id, error)
    connection.execute(statement).all()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def enqueued(bind: Connection | Engine, task: str | None = None) -> list[dict[str, Any]]:
    """The jobs in the table (of ``task``), oldest first, as dicts."""
    from sqlalchemy import select

    from sqla_pgjobs.tables import jobs

    statement = select(jobs).order_by(jobs.c.id)
    if task is not None:
        statement = statement.where(jobs.c.task_identifier == task)
    with _connected(bind) as connection:
        return [dict(row) for row in connection.execute(statement).mappings()]


def assert_enqueued(
    bind: Connection | Engine,
    task: str,
    payload: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    count: int | None = None,
) -> list[dict[str, Any]]:
    """Assert that jobs of ``task`` are enqueued whose payload contains ``payload`` (a
    subset: the given keys with equal values) and whose key is ``key``; with ``count``,
    exactly that many. Returns the matching jobs. The failure message lists what is there.
    """
    jobs_of_task = enqueued(bind, task)
    matching = [
        job
        for job in jobs_of_task
        if (key is None or job["key"] == key) and _contains(job["payload"], payload)
    ]
    if (count is None and not matching) or (count is not None and len(matching) != count):
        wanted = f"{count if count is not None else 'some'} job(s) of task {task!r}"
        if payload is not None:
            wanted += f" with payload containing {dict(payload)!r}"
        if key is not None:
            wanted += f" with key {key!r}"
        present = enqueued(bind)
        listing = (
            "\n".join(
                f"  {j['id']}: {j['task_identifier']} {j['payload']!r} key={j['key']!r}"
                for j in present
            )
            or "  (no jobs at all)"
        )
        raise AssertionError(f"expected {wanted}, found {len(matching)}; enqueued:\n{listing}")
    return matching


def _contains(payload: Any, subset: Mapping[str, Any] | None) -> bool:
    if subset is None:
        return True
    return isinstance(payload, dict) and all(
        k in payload and payload[k] == v for k, v in subset.items()
    )


def advance_time(bind: Connection | Engine, delta: timedelta) -> int:
    """Move time forward for the jobs waiting to run: every unlocked job's ``run_at``
    moves ``delta`` earlier (the database's clock cannot be moved). Returns how many."""
    from sqlalchemy import update

    from sqla_pgjobs.tables import jobs

    statement = update(jobs).where(jobs.c.locked_at.is_(None)).values(run_at=jobs.c.run_at - delta)
    with _connected(bind, write=True) as connection:
        return int(connection.execute(statement).rowcount)


@contextlib.contextmanager
def _connected(bind: Connection | Engine, *, write: bool = False) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    elif write:
        with bind.begin() as connection:
            yield connection
    else:
        with bind.connect() as connection:
            yield connection
