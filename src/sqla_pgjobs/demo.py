"""``pgjobs demo``: the whole system end to end, in a few seconds.

It installs the job schema with the Alembic operations (in a schema of its own,
``pgjobs_demo``, reached through ``schema_translate_map``), creates a table with an
enqueue trigger, enqueues a mix of jobs, runs a worker until every job is done, prints a
summary that checks itself, and removes everything it created.

With ``dashboard_port``, the web dashboard (:mod:`sqla_pgjobs.dashboard`) is served on
127.0.0.1 from the start: the jobs wait :data:`DASHBOARD_HEAD_START` before the worker
starts, so that a newcomer who opens it sees them pending, then running and finished; it
stays up after the summary until Ctrl-C, and only then is the schema removed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import text

import sqla_pgjobs.alembic  # noqa: F401  (registers op.create_pgjobs_schema)
from sqla_pgjobs.database import create_job_engine, sqlalchemy_url
from sqla_pgjobs.errors import PgJobsError
from sqla_pgjobs.schema import LATEST_VERSION, render
from sqla_pgjobs.worker import Job, TaskRegistry, Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL, Engine

    from sqla_pgjobs.tasks import TypedTask

__all__ = ["DEMO_SCHEMA", "run_demo"]

DEMO_SCHEMA = "pgjobs_demo"
DELAY = timedelta(seconds=2)
KEYED_CALLS = 5
ORDERS = 3
FLAKY_JOBS = 2
#: With the dashboard: seconds the jobs wait for the worker, to be seen pending first.
DASHBOARD_HEAD_START = 5.0


class _Tally:
    """What the demo's handlers did (they run in threads and on the event loop)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.early_starts = 0

    def ran(self, task: str, *, failed: bool = False) -> None:
        with self.lock:
            self.runs[task] += 1
            if failed:
                self.failures[task] += 1


@dataclasses.dataclass(frozen=True)
class _Tasks:
    """The demo's registry, and its typed tasks to enqueue with."""

    registry: TaskRegistry
    send_email: TypedTask[..., Any]
    send_reminder: TypedTask[..., Any]
    flaky_upload: TypedTask[..., Any]
    daily_report: TypedTask[..., Any]


def _tasks(tally: _Tally) -> _Tasks:
    tasks = TaskRegistry()

    @tasks.task
    async def send_email(to: str) -> None:
        await asyncio.sleep(random.uniform(0.005, 0.03))  # an API call
        tally.ran("send_email")

    @tasks.task
    def send_reminder(n: int, job: Job) -> None:
        if datetime.now(UTC) < job.run_at:
            tally.early_starts += 1
        tally.ran("send_reminder")

    @tasks.task
    def flaky_upload(file: str, job: Job) -> None:
        if job.attempts == 1:
            tally.ran("flaky_upload", failed=True)
            raise ConnectionError("simulated outage on the first attempt")
        tally.ran("flaky_upload")

    @tasks.task
    def daily_report(day: str) -> None:
        time.sleep(0.05)
        tally.ran("daily_report")

    # Enqueued by the orders table's trigger (tg_add_job_with_row_id): {"id": <row id>}.
    @tasks.task
    def ship_order(id: int) -> None:
        tally.ran("ship_order")

    return _Tasks(tasks, send_email, send_reminder, flaky_upload, daily_report)


@contextlib.contextmanager
def _database(database_url: str | None, echo: Callable[[str], None]) -> Iterator[URL]:
    if database_url:
        yield sqlalchemy_url(database_url)
        return
    from sqla_pgjobs.testing import NoPostgresError, embedded_postgres

    echo("No database URL given: starting an embedded PostgreSQL (pgserver)...")
    try:
        with warnings.catch_warnings():
            # platformdirs (through pgserver) warns when XDG_RUNTIME_DIR is unset; harmless.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            with embedded_postgres() as url:
                yield url
    except NoPostgresError as exc:
        raise PgJobsError(
            "the demo needs a database: pass --database-url (or set PGJOBS_DATABASE_URL), "
            "or install the embedded PostgreSQL with: pip install 'sqla-pgjobs[demo]'"
        ) from exc


def _sql(statement: str) -> Any:
    return text(render(statement, DEMO_SCHEMA))


def _install(engine: Engine) -> None:
    with engine.begin() as connection:
        # A demo interrupted earlier may have left its schema behind.
        connection.execute(_sql("DROP SCHEMA IF EXISTS app_jobs CASCADE"))
        operations = Operations(MigrationContext.configure(connection))
        operations.create_pgjobs_schema(  # type: ignore[attr-defined]
            schema=DEMO_SCHEMA, version=LATEST_VERSION
        )
        connection.execute(
            _sql("CREATE TABLE app_jobs.orders (id serial PRIMARY KEY, customer text NOT NULL)")
        )
        connection.execute(
            _sql(
                "CREATE TRIGGER ship_new_order AFTER INSERT ON app_jobs.orders FOR EACH ROW "
                "EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('ship_order')"
            )
        )


def _uninstall(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(_sql("DROP TABLE IF EXISTS app_jobs.orders"))
        operations = Operations(MigrationContext.configure(connection))
        operations.drop_pgjobs_schema(schema=DEMO_SCHEMA)  # type: ignore[attr-defined]


def _enqueue(engine: Engine, job_count: int, tasks: _Tasks) -> dict[str, int]:
    """Enqueue the mix; return the runs expected per task."""
    later = datetime.now(UTC) + DELAY
    with engine.begin() as connection:
        connection.execute(
            tasks.send_email.jobs({"to": f"user{i}@example.com"} for i in range(job_count))
        )
        connection.execute(tasks.send_reminder.using(run_at=later).jobs({"n": i} for i in range(3)))
        connection.execute(
            tasks.flaky_upload.jobs({"file": f"f{i}.csv"} for i in range(FLAKY_JOBS))
        )
        report = tasks.daily_report.using(job_key="report:today")
        for _ in range(KEYED_CALLS):  # one job: the key makes the calls idempotent
            connection.execute(report.job(day="today"))
        for i in range(ORDERS):  # each row enqueues a job through the table's trigger
            connection.execute(
                _sql("INSERT INTO app_jobs.orders (customer) VALUES (:c)"), {"c": f"customer {i}"}
            )
    return {
        "send_email": job_count,
        "send_reminder": 3,
        "flaky_upload": 2 * FLAKY_JOBS,
        "daily_report": 1,
        "ship_order": ORDERS,
    }


def _remaining(engine: Engine) -> tuple[int, int, int]:
    """Jobs left: in all, waiting for a retry, delayed."""
    with engine.connect() as connection:
        row = connection.execute(
            _sql(
                "SELECT count(*), count(*) FILTER (WHERE attempts > 0 AND locked_at IS NULL),"
                " count(*) FILTER (WHERE attempts = 0 AND run_at > now()) FROM app_jobs.jobs"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def _run_worker(
    url: URL,
    engine: Engine,
    tasks: _Tasks,
    total: int,
    concurrency: int,
    echo: Callable[[str], None],
) -> bool:
    worker = Worker(
        url,
        tasks.registry,
        schema=DEMO_SCHEMA,
        concurrency=concurrency,
        poll_interval=1.0,
        heartbeat_timeout=10.0,
        shutdown_timeout=5.0,
    )
    running = asyncio.create_task(worker.run_async())
    deadline = time.monotonic() + 60
    shown = None
    finished = False
    while not running.done():
        left, retrying, delayed = await asyncio.to_thread(_remaining, engine)
        line = (
            f"  {total - left:>5}/{total} jobs done   "
            f"{retrying} waiting to retry, {delayed} delayed"
        )
        if line != shown:
            echo(line)
            shown = line
        if left == 0:
            finished = True
            break
        if time.monotonic() > deadline:
            echo("  giving up after 60 s")
            break
        await asyncio.sleep(0.25)
    worker.stop()
    await running
    return finished


def run_demo(
    database_url: str | None,
    *,
    job_count: int = 50,
    concurrency: int = 8,
    echo: Callable[[str], None] = print,
    dashboard_port: int | None = None,
) -> bool:
    """Run the demo; return whether everything added up. ``dashboard_port``: serve the
    dashboard on 127.0.0.1 at that port meanwhile, until Ctrl-C after the summary."""
    tally = _Tally()
    # The progress lines and the summary tell the story; the worker's own log would repeat
    # it (the first attempts of the uploads fail on purpose).
    worker_log = logging.getLogger("sqla_pgjobs.worker")
    level, worker_log.level = worker_log.level, logging.ERROR
    try:
        return _run(database_url, job_count, concurrency, echo, tally, dashboard_port)
    finally:
        worker_log.setLevel(level)


def _run(
    database_url: str | None,
    job_count: int,
    concurrency: int,
    echo: Callable[[str], None],
    tally: _Tally,
    dashboard_port: int | None = None,
) -> bool:
    lingered: bool | None = None  # with the dashboard: the summary, already shown
    with _database(database_url, echo) as url, contextlib.ExitStack() as served:
        engine = create_job_engine(url, DEMO_SCHEMA)
        try:
            echo(f"Installing the job schema (op.create_pgjobs_schema) as {DEMO_SCHEMA!r}...")
            _install(engine)
            tasks = _tasks(tally)
            expected = _enqueue(engine, job_count, tasks)
            if dashboard_port is not None:
                served.callback(_serve_dashboard(engine, dashboard_port, echo).stop)
            total = _remaining(engine)[0]
            echo(
                f"Enqueued {total} jobs: {job_count} emails, 3 reminders delayed by "
                f"{DELAY.total_seconds():g} s, {FLAKY_JOBS} uploads that fail once, "
                f"{KEYED_CALLS} calls for one keyed report, {ORDERS} orders shipped by a trigger."
            )
            if dashboard_port is not None:
                echo(f"The worker starts in {DASHBOARD_HEAD_START:g} s: watch the dashboard.")
                time.sleep(DASHBOARD_HEAD_START)
            started = time.monotonic()
            finished = asyncio.run(_run_worker(url, engine, tasks, total, concurrency, echo))
            elapsed = time.monotonic() - started
            if dashboard_port is not None:
                lingered = _summary(expected, tally, finished, elapsed, echo, removed=False)
                echo("The dashboard stays up: press Ctrl-C to stop it and remove the schema.")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
                served.close()  # the dashboard stops before its schema goes
        finally:
            with contextlib.suppress(Exception):
                _uninstall(engine)
            engine.dispose()
    if lingered is not None:
        echo(f"Removed the {DEMO_SCHEMA!r} schema.")
        return lingered
    return _summary(expected, tally, finished, elapsed, echo)


def _summary(
    expected: dict[str, int],
    tally: _Tally,
    finished: bool,
    elapsed: float,
    echo: Callable[[str], None],
    *,
    removed: bool = True,
) -> bool:
    echo("")
    echo(f"{'task':<15}{'runs':>6}{'failed':>8}{'expected runs':>15}")
    ok = finished and tally.early_starts == 0
    for task, want in expected.items():
        runs = tally.runs[task]
        mark = "" if runs == want else "   <-- mismatch"
        ok = ok and runs == want
        echo(f"{task:<15}{runs:>6}{tally.failures[task]:>8}{want:>15}{mark}")
    echo("")
    echo(
        f"Every job done in {elapsed:.1f} s: each ran once (the failed uploads twice, as "
        f"retried after the backoff), the {KEYED_CALLS} keyed calls made one report, and no "
        "delayed job started early."
        if ok
        else "Something did not add up: see the table above."
    )
    if removed:
        echo(f"Removed the {DEMO_SCHEMA!r} schema.")
    return ok


def _serve_dashboard(engine: Engine, port: int, echo: Callable[[str], None]) -> Any:
    from sqla_pgjobs.dashboard import create_app
    from sqla_pgjobs.dashboard.server import BackgroundServer

    app = create_app(engine, schema=DEMO_SCHEMA, refresh_seconds=1)
    server = BackgroundServer(app, host="127.0.0.1", port=port).start()
    echo(f"Dashboard at {server.url}")
    return server
