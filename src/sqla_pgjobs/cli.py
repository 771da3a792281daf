"""The ``pgjobs`` command line.

    pgjobs worker myapp.tasks:tasks --database-url postgresql://... --concurrency 20
    pgjobs worker myapp.tasks:tasks --drain       # run what is due, then exit 0
    pgjobs demo                                    # end to end, on an embedded PostgreSQL

Exit codes: 0 done (or stopped by SIGTERM/SIGINT), 1 a failure (the database cannot be
reached, the schema is missing, ...), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from sqla_pgjobs._version import __version__
from sqla_pgjobs.errors import PgJobsError
from sqla_pgjobs.log_format import configure_logging
from sqla_pgjobs.schema import DEFAULT_SCHEMA, OPTIONAL_INDEXES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Connection

    from sqla_pgjobs.admin import (
        ActionResult,
        CancelResult,
        JobView,
        QueueView,
        ScheduleView,
        Status,
    )
    from sqla_pgjobs.history import HistoryView

__all__ = ["main"]

DATABASE_URL_HELP = "PostgreSQL URL (postgresql://user@host/db). Default: $PGJOBS_DATABASE_URL."
LOG_FORMAT = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
LOG_LEVEL = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)


def _required_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    # Not required=True: click's own message would not say where else the URL can come from.
    if not value:
        raise click.MissingParameter(
            ctx=ctx, param=param, message="Pass it, or set PGJOBS_DATABASE_URL."
        )
    return value


DATABASE_URL = click.option(
    "--database-url",
    envvar="PGJOBS_DATABASE_URL",
    callback=_required_url,
    help=DATABASE_URL_HELP,
)
SCHEMA = click.option(
    "--schema", default=DEFAULT_SCHEMA, show_default=True, help="The job schema's name."
)


def _load_registry(spec: str) -> Any:
    from sqla_pgjobs.worker import TaskRegistry

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not MODULE:ATTRIBUTE (e.g. myapp.tasks:tasks)")
    # Like uvicorn and celery: the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import module {module_name!r}: {exc}") from exc
    registry = getattr(module, attribute, None)
    if not isinstance(registry, TaskRegistry):
        found = "nothing" if registry is None else type(registry).__name__
        raise click.BadParameter(
            f"{module_name}.{attribute} must be a sqla_pgjobs TaskRegistry, found {found}"
        )
    return registry


@contextlib.contextmanager
def _reported(schema: str = DEFAULT_SCHEMA, *, usage: bool = False) -> Iterator[None]:
    """Errors as click reports them: the package's refusals with their own message (exit 2
    with ``usage``, else 1), anything else (the database is unreachable, the schema is
    missing...) with its type and message, exit 1."""
    try:
        yield
    except click.ClickException:
        raise
    except PgJobsError as exc:
        if usage:
            raise click.UsageError(str(exc)) from exc
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        logging.getLogger("sqla_pgjobs").debug("command failed", exc_info=True)
        # SQLAlchemy wraps the driver's error (``orig``, which carries the SQLSTATE) in a
        # message that repeats the whole statement: the driver's own says what went wrong.
        error = getattr(exc, "orig", None) or exc
        message = f"{type(error).__name__}: {str(error).strip()}"
        if getattr(error, "sqlstate", None) in ("3F000", "42883", "42P01"):
            message += (
                f"\nIs the job schema installed as {schema!r}, at the latest version? Install "
                "or upgrade it with an Alembic revision (op.create_pgjobs_schema(), "
                "op.upgrade_pgjobs_schema()) or with pgjobs migrate."
            )
        raise click.ClickException(message) from exc


@contextlib.contextmanager
def _connection(database_url: str, schema: str, *, write: bool = False) -> Iterator[Connection]:
    """A connection to the database, mapped to the job schema's name (in a transaction that
    commits with ``write``); the engine is disposed afterwards."""
    from sqla_pgjobs.database import create_job_engine

    engine = create_job_engine(database_url, schema)
    try:
        with engine.begin() if write else engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader went away (pgjobs sql | head): not a failure. Later writes, and the
            # flush at exit, go nowhere instead of raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="pgjobs")
def main() -> None:
    """PostgreSQL-native background jobs for SQLAlchemy: workers, the demo, and more."""


@main.command()
@click.argument("tasks", metavar="MODULE:ATTRIBUTE")
@DATABASE_URL
@click.option(
    "--concurrency",
    "-c",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Jobs run at the same time.",
)
@click.option(
    "--prefetch",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Most jobs held ready beyond the running ones, while jobs are short enough to "
    "start within about 10 ms; 0 takes jobs only for free slots.",
)
@click.option(
    "--drain",
    "--once",
    "drain",
    is_flag=True,
    help="Run the jobs that are due, then exit 0 (for tests, cron and benchmarks).",
)
@SCHEMA
@click.option(
    "--poll-interval",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between polls when no NOTIFY arrives.",
)
@click.option(
    "--no-listen",
    is_flag=True,
    help="Poll only, without LISTEN (for PgBouncer in transaction mode).",
)
@click.option(
    "--worker-id", help="This worker's id (at least 4 characters). Default: host-pid-random."
)
@click.option(
    "--heartbeat-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds of silence after which others take this worker's jobs.",
)
@click.option(
    "--shutdown-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds running jobs get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--unknown-tasks",
    type=click.Choice(["skip", "fail"]),
    default="skip",
    show_default=True,
    help="Jobs of tasks without a handler: leave them, or fail them.",
)
@click.option(
    "--synchronous-commit/--no-synchronous-commit",
    default=True,
    show_default=True,
    help="With --no-synchronous-commit the worker's own commits (taking, completing, failing "
    "jobs) do not wait for the disk: faster, but a PostgreSQL crash may undo the last 0.6 s "
    "of them, and those jobs run again (none is lost). See docs/workers.md.",
)
@click.option(
    "--prune-interval",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between prunes of the job history's expired rows (one worker of the "
    "database does each); 0: never (run pgjobs prune yourself).",
)
@click.option(
    "--with-scheduler",
    is_flag=True,
    help="Also run a scheduler in this process (see pgjobs scheduler).",
)
@click.option(
    "--scheduler-lease",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="With --with-scheduler: seconds a schedule claim lasts unless renewed.",
)
@click.option(
    "--metrics-port",
    type=int,
    help="Serve this worker's Prometheus metrics at http://HOST:PORT/metrics (0: any free "
    "port; needs pip install 'sqla-pgjobs[metrics]'). Default: no metrics.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="With --metrics-port: the address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--tracing",
    is_flag=True,
    help="Run each job in an OpenTelemetry span, continuing the trace it was enqueued in "
    "(needs pip install 'sqla-pgjobs[tracing]' and an SDK: configured in the tasks module, "
    "or by running under opentelemetry-instrument).",
)
@LOG_FORMAT
@LOG_LEVEL
def worker(
    tasks: str,
    database_url: str,
    concurrency: int,
    prefetch: int,
    drain: bool,
    schema: str,
    poll_interval: float,
    no_listen: bool,
    worker_id: str | None,
    heartbeat_timeout: float,
    shutdown_timeout: float,
    unknown_tasks: str,
    synchronous_commit: bool,
    prune_interval: float,
    with_scheduler: bool,
    scheduler_lease: float,
    metrics_port: int | None,
    metrics_host: str,
    tracing: bool,
    log_format: str,
    log_level: str,
) -> None:
    """Run the handlers of the TaskRegistry at MODULE:ATTRIBUTE until SIGTERM or SIGINT.

    A first signal stops taking jobs, lets running ones finish (--shutdown-timeout) and
    gives back the rest; a second exits at once.
    """
    from sqla_pgjobs.worker import Worker

    configure_logging(log_format, log_level)
    registry = _load_registry(tasks)
    if tracing:
        _instrument()
    with _reported(schema):
        runner = Worker(
            database_url,
            registry,
            concurrency=concurrency,
            prefetch=prefetch,
            worker_id=worker_id,
            schema=schema,
            poll_interval=poll_interval,
            listen=not no_listen,
            heartbeat_timeout=heartbeat_timeout,
            shutdown_timeout=shutdown_timeout,
            unknown_tasks=unknown_tasks,
            prune_interval=prune_interval or None,
            synchronous_commit=synchronous_commit,
        )
        if metrics_port is not None:
            runner.observer = _serve_worker_metrics(runner.worker_id, metrics_host, metrics_port)
        if with_scheduler:
            from sqla_pgjobs import service
            from sqla_pgjobs.scheduler import Scheduler

            scheduler = Scheduler(
                database_url, schema=schema, lease=scheduler_lease, listen=not no_listen
            )
            # One loop: a signal stops both, a drained worker stops the scheduler.
            service.run({runner: runner.run_async(drain=drain), scheduler: scheduler.run_async()})
        else:
            runner.run(drain=drain)
    _exit_if_handlers_still_run()


def _instrument() -> None:
    """Turn tracing on with OpenTelemetry's global tracer provider (after the tasks module
    is loaded: it may set one), and say so when there is none: the spans go nowhere."""
    from sqla_pgjobs import tracing

    with _reported(usage=True):
        tracing.instrument()
    from opentelemetry import trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        logging.getLogger("sqla_pgjobs.worker").warning(
            "--tracing: no OpenTelemetry SDK is configured, so the spans are not recorded: "
            "set a tracer provider in the tasks module, or run under opentelemetry-instrument"
        )


def _serve_worker_metrics(worker_id: str, host: str, port: int) -> Any:
    """A worker's metrics, served on a thread; the observer to give the worker."""
    from sqla_pgjobs.validation import check_port

    with _reported(usage=True):
        check_port("--metrics-port", port)
    from sqla_pgjobs.metrics.prometheus import WorkerMetrics, serve

    metrics = WorkerMetrics(worker_id=worker_id)
    serve(metrics.registry, host=host, port=port)
    return metrics


def _exit_if_handlers_still_run() -> None:
    """Plain handlers that outlived the shutdown timeout cannot be stopped; their jobs were
    given back. Do not wait for them at interpreter exit."""
    from sqla_pgjobs.worker.threads import handlers_still_running

    if handlers_still_running():
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


@main.command()
@click.option(
    "--database-url",
    envvar="PGJOBS_DATABASE_URL",
    help="Run in this database (in a schema of its own, dropped afterwards). "
    "Default: $PGJOBS_DATABASE_URL, else an embedded PostgreSQL.",
)
@click.option(
    "--jobs",
    "job_count",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many plain jobs to enqueue.",
)
@click.option("--concurrency", "-c", default=8, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--dashboard",
    "with_dashboard",
    is_flag=True,
    help="Serve the web dashboard on 127.0.0.1 meanwhile, and keep it (and the demo's "
    "schema) until Ctrl-C (needs pip install 'sqla-pgjobs[dashboard]').",
)
@click.option(
    "--dashboard-port", default=8080, show_default=True, type=int, help="The dashboard's port."
)
def demo(
    database_url: str | None,
    job_count: int,
    concurrency: int,
    with_dashboard: bool,
    dashboard_port: int,
) -> None:
    """Enqueue a mix of jobs and run them with a worker, end to end.

    Plain, delayed, failing-then-retried and keyed (deduplicated) jobs, and jobs enqueued by
    a table trigger; then a summary. With no database URL an embedded PostgreSQL is started
    (pip install 'sqla-pgjobs[demo]') and removed afterwards.
    """
    from sqla_pgjobs.demo import run_demo
    from sqla_pgjobs.validation import check_port

    if with_dashboard:
        with _reported(usage=True):
            check_port("--dashboard-port", dashboard_port)

    with _reported():
        ok = run_demo(
            database_url,
            job_count=job_count,
            concurrency=concurrency,
            echo=click.echo,
            dashboard_port=dashboard_port if with_dashboard else None,
        )
    if not ok:
        raise click.ClickException("the demo's summary does not add up (see above)")


@main.command()
@DATABASE_URL
@SCHEMA
@click.option(
    "--lease",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds a claim on a schedule lasts unless renewed (renewed every third); "
    "a dead scheduler's schedules are taken over after at most this long.",
)
@click.option("--task", "tasks", multiple=True, help="Only schedules of this task (repeatable).")
@click.option("--max-claims", type=click.IntRange(min=1), help="Hold at most this many schedules.")
@click.option("--no-listen", is_flag=True, help="Poll only, without LISTEN.")
@click.option("--scheduler-id", help="This scheduler's id (at least 4 characters).")
@LOG_FORMAT
@LOG_LEVEL
def scheduler(
    database_url: str,
    schema: str,
    lease: float,
    tasks: tuple[str, ...],
    max_claims: int | None,
    no_listen: bool,
    scheduler_id: str | None,
    log_format: str,
    log_level: str,
) -> None:
    """Fire scheduled jobs at their times until SIGTERM or SIGINT.

    Run several for availability: they share the schedules through leases, and each fire
    time makes at most one job. Times are in UTC unless a schedule names its "tz".
    """
    from sqla_pgjobs.scheduler import Scheduler

    configure_logging(log_format, log_level)
    with _reported(schema):
        Scheduler(
            database_url,
            scheduler_id=scheduler_id,
            schema=schema,
            lease=lease,
            task_identifiers=tasks or None,
            max_claims=max_claims,
            listen=not no_listen,
        ).run()


@main.command()
@DATABASE_URL
@SCHEMA
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--port", default=9108, show_default=True, type=int, help="The port (0: any free port)."
)
@LOG_FORMAT
@LOG_LEVEL
def metrics(
    database_url: str, schema: str, host: str, port: int, log_format: str, log_level: str
) -> None:
    """Serve the job database's state for Prometheus at http://HOST:PORT/metrics until
    SIGTERM or SIGINT.

    Each scrape runs a few queries that stay cheap on a large table: jobs by task, queue
    and state (estimated from a sample above 500 pages), the oldest due job, live workers,
    late schedules. Run one per database; workers serve their own metrics
    (pgjobs worker --metrics-port). Needs pip install 'sqla-pgjobs[metrics]'.
    """
    import signal
    import threading

    from sqla_pgjobs.validation import check_port

    configure_logging(log_format, log_level)
    with _reported(usage=True):
        check_port("--port", port)
    with _reported(schema):
        from sqla_pgjobs.database import create_job_engine
        from sqla_pgjobs.metrics.database_state import collect
        from sqla_pgjobs.metrics.prometheus import DatabaseCollector, serve

        # A scrape holds a connection for a few tens of milliseconds: 2 cover overlaps.
        engine = create_job_engine(database_url, schema, pool_size=2, max_overflow=2)
        # The first read fails here, with the hint of a wrong URL or a missing schema.
        with engine.connect() as connection:
            collect(connection)
        server = serve(DatabaseCollector(engine).registry(), host=host, port=port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.close()
    engine.dispose()
    logging.getLogger("sqla_pgjobs.metrics").info("metrics server stopped")


@main.command()
@DATABASE_URL
@SCHEMA
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (0.0.0.0: every interface; put authentication in front).",
)
@click.option("--port", default=8080, show_default=True, type=int, help="The port.")
@click.option("--read-only", is_flag=True, help="Show no action and refuse every POST.")
@click.option("--tenant", help="Show and act on this tenant's jobs only (a UUID).")
@click.option(
    "--secret-key",
    envvar="PGJOBS_DASHBOARD_SECRET",
    help="Signs the CSRF tokens (default: random per process). Default: $PGJOBS_DASHBOARD_SECRET.",
)
def dashboard(
    database_url: str,
    schema: str,
    host: str,
    port: int,
    read_only: bool,
    tenant: str | None,
    secret_key: str | None,
) -> None:
    """Serve the web dashboard at http://HOST:PORT/ until SIGTERM or SIGINT.

    Overview, jobs (filtered by state, task, queue, tenant, key, time and payload), job
    pages, workers, schedules and queues, with actions (retry, cancel, delete, run now,
    pause and resume) unless --read-only. It has no login of its own: keep it on
    127.0.0.1, or mount sqla_pgjobs.dashboard.create_app in an app that authenticates.
    Needs pip install 'sqla-pgjobs[dashboard]'.
    """
    from sqla_pgjobs.validation import check_port, check_tenant

    with _reported(usage=True):
        check_port("--port", port)
        check_tenant("--tenant", tenant)
    with _reported(schema):
        from sqla_pgjobs.admin import list_pauses
        from sqla_pgjobs.dashboard import create_app
        from sqla_pgjobs.dashboard.server import serve
        from sqla_pgjobs.database import create_job_engine

        engine = create_job_engine(database_url, schema)
        # The first read fails here, with the hint of a wrong URL or a missing schema.
        with engine.connect() as connection:
            list_pauses(connection)
        app = create_app(
            engine, schema=schema, read_only=read_only, tenant=tenant, secret_key=secret_key
        )
    click.echo(f"Dashboard at http://{host}:{port}/{' (read-only)' if read_only else ''}")
    serve(app, host=host, port=port)
    engine.dispose()


@main.command()
@DATABASE_URL
@SCHEMA
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule.")
def schedules(database_url: str, schema: str, as_json: bool) -> None:
    """List the scheduled jobs with their next fire time, in each schedule's time zone."""
    from sqla_pgjobs.admin import as_json as plain
    from sqla_pgjobs.admin import list_schedules

    with _reported(schema), _connection(database_url, schema) as connection:
        entries = list_schedules(connection)
    if as_json:
        for entry in plain(entries):
            click.echo(_json(entry))
    else:
        _render_schedules(entries)


def _json_or_text(value: str) -> Any:
    """A schedule or payload given on the command line: JSON if it parses, else the text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


@main.command("add-schedule")
@click.argument("task")
@click.argument("schedule")
@DATABASE_URL
@SCHEMA
@click.option("--payload", default="{}", show_default=True, help="The jobs' payload (JSON).")
@click.option("--key", help="Replace the schedule registered under this key instead of adding one.")
@click.option("--queue", help="Queue of the jobs (jobs of one queue run one at a time).")
@click.option("--priority", type=int, help="Priority of the jobs (lower runs first).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts per job.")
@click.option("--tenant", help="The tenant (database_id uuid).")
def add_schedule(
    task: str,
    schedule: str,
    database_url: str,
    schema: str,
    payload: str,
    key: str | None,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
    tenant: str | None,
) -> None:
    """Register a schedule: jobs for TASK at the times SCHEDULE names.

    SCHEDULE is a cron string ("0 2 * * *", 6 fields for seconds), a JSON rule object
    ('{"hour": 2, "minute": 0, "tz": "Europe/Paris"}'), a window or an ISO date. Times are
    in UTC unless the schedule names a "tz".
    """

    from sqla_pgjobs.functions import add_scheduled_job

    with _reported(schema, usage=True):
        statement = add_scheduled_job(
            task,
            _json_or_text(payload),
            _json_or_text(schedule),
            db_id=tenant,
            job_key=key,
            queue_name=queue,
            max_attempts=max_attempts,
            priority=priority,
        )
    with _reported(schema), _connection(database_url, schema, write=True) as connection:
        row = connection.execute(statement).one()
    click.echo(f"scheduled job {row.id}: {task} at {schedule}")


@main.command("sql")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="The schema version to print (default: the newest this library knows).",
)
@SCHEMA
@click.option("--drop", is_flag=True, help="Print the SQL that removes the schema instead.")
def sql_command(version: int | None, schema: str, drop: bool) -> None:
    """Print the job schema's SQL, for installing it without Alembic (e.g. with psql)."""
    from sqla_pgjobs.schema import LATEST_VERSION, drop_statements, install_statements

    with _reported(schema, usage=True):
        statements = (
            drop_statements(schema)
            if drop
            else install_statements(schema, LATEST_VERSION if version is None else version)
        )
    click.echo("BEGIN;\n")
    for statement in statements:
        click.echo(statement + ";\n")
    click.echo("COMMIT;")


@main.command()
@DATABASE_URL
@SCHEMA
@click.option(
    "--to",
    "to_version",
    type=int,
    default=None,
    help="The version to reach (default: the newest this library knows).",
)
@click.option(
    "--index",
    "indexes",
    multiple=True,
    type=click.Choice(list(OPTIONAL_INDEXES)),
    help="Also build this optional index, concurrently (repeat for more): failed (the "
    "failed jobs' listing), payload (filtering by payload; it costs every enqueue).",
)
def migrate(
    database_url: str, schema: str, to_version: int | None, indexes: tuple[str, ...]
) -> None:
    """Install the job schema, or upgrade it, without Alembic.

    The same SQL and version bookkeeping as the Alembic operations, so a project can move
    to Alembic later (or the other way round). The optional indexes are built after the
    schema's transaction commits, with CREATE INDEX CONCURRENTLY: workers keep enqueueing
    and taking jobs while they build.
    """
    from sqla_pgjobs.database import create_job_engine
    from sqla_pgjobs.schema import LATEST_VERSION, create_indexes
    from sqla_pgjobs.schema import migrate as migrate_schema

    target = LATEST_VERSION if to_version is None else to_version
    with _reported(schema), _connection(database_url, schema, write=True) as connection:
        before, after = migrate_schema(connection, schema, target)
    if before is None:
        click.echo(f"Installed the job schema {schema!r} at version {after}.")
    elif before == after:
        click.echo(f"The job schema {schema!r} is already at version {after}.")
    else:
        click.echo(f"Upgraded the job schema {schema!r} from version {before} to {after}.")
    if indexes:
        engine = create_job_engine(database_url, schema)
        try:
            with _reported(schema), engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                create_indexes(connection, indexes, schema)
        finally:
            engine.dispose()
        click.echo(f"Built the optional indexes: {', '.join(indexes)}.")


@main.command()
@DATABASE_URL
@SCHEMA
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(database_url: str, schema: str, as_json: bool) -> None:
    """The queue at a glance: jobs by task, queue and state; held jobs; workers; schedules.

    States: due (waiting its turn), delayed (waiting for its run_at or a retry), running
    (held by a worker), failed (its attempts are used up).
    """
    from sqla_pgjobs.admin import as_json as plain
    from sqla_pgjobs.admin import status as read_status

    with _reported(schema), _connection(database_url, schema) as connection:
        report = read_status(connection)
    if as_json:
        _echo_json(plain(report))
    else:
        _render_status(report)


_WHEN_HELP = (
    "Only jobs that finished {} WHEN: an ISO 8601 time (UTC unless it has an offset) or a "
    "duration ago (30m, 12h, 7d)."
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(option: str, value: str) -> timedelta:
    """A duration written as a number and a unit: 90s, 30m, 12h, 7d."""
    number, unit = value[:-1], value[-1:]
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise click.BadParameter(
            f"{value!r} is not a duration: write a number and a unit, s, m, h or d (30m, 7d)",
            param_hint=option,
        ) from None
    if not 0 < seconds <= 365000 * 86400:
        raise click.BadParameter(
            f"{value!r} must be more than zero and at most 365000 days", param_hint=option
        )
    return timedelta(seconds=seconds)


def _when(option: str, value: str | None) -> datetime | None:
    """A point in time: ISO 8601 (UTC unless it has an offset), or a duration ago."""
    if value is None:
        return None
    if value[-1:] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - _duration(option, value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2026-12-07T10:00+01:00) nor a duration "
            "ago (30m, 12h, 7d)",
            param_hint=option,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _json_argument(option: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not JSON ({exc})", param_hint=option) from None


_PAYLOAD_HELP = "Only jobs whose payload contains this JSON, e.g. '{\"order_id\": 42}'."


def _payload(value: str | None) -> Any:
    """A --payload filter: JSON that the payloads must contain."""
    return None if value is None else _json_argument("--payload", value)


@main.command()
@DATABASE_URL
@SCHEMA
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Delete what finished longer ago than this (30m, 12h, 7d), whatever the retention "
    "rules say. Default: what the rules let expire.",
)
@click.option(
    "--batch",
    default=10_000,
    show_default=True,
    type=click.IntRange(100, 1_000_000),
    help="Most rows one transaction deletes (its locks last that long).",
)
@click.option(
    "--pause",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 60),
    help="Seconds between batches.",
)
def prune(database_url: str, schema: str, older_than: str | None, batch: int, pause: float) -> None:
    """Delete expired rows of the job history, in batches of short transactions."""
    from sqla_pgjobs.database import create_job_engine
    from sqla_pgjobs.history import prune as prune_history

    age = None if older_than is None else _duration("--older-than", older_than)
    engine = create_job_engine(database_url, schema)
    try:
        with _reported(schema, usage=True):
            result = prune_history(engine, older_than=age, batch=batch, pause=pause)
    finally:
        engine.dispose()
    click.echo(
        f"Deleted {result.deleted} history rows in {result.batches} "
        f"batch{'es' if result.batches != 1 else ''} "
        f"(longest {result.longest_batch:.3f} s"
        + (f", {result.timeouts} timed out and were retried smaller" if result.timeouts else "")
        + ")."
    )


@main.group()
def queues() -> None:
    """List queues with their jobs by state, and pause or resume queues and tasks.

    A paused queue or task keeps its jobs and takes new ones; no worker starts them until
    it is resumed (running jobs finish). Needs schema version 2.
    """


@queues.command("list")
@DATABASE_URL
@SCHEMA
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue.")
def queues_list(database_url: str, schema: str, as_json: bool) -> None:
    """Every queue with jobs or paused, jobs by state; then the paused tasks."""
    from sqla_pgjobs.admin import as_json as plain
    from sqla_pgjobs.admin import list_pauses, list_queues

    with _reported(schema), _connection(database_url, schema) as connection:
        rows = list_queues(connection)
        paused_tasks = [p.name for p in list_pauses(connection) if p.kind == "task"]
    if as_json:
        for row in plain(rows):
            click.echo(_json(row))
        return
    _render_queues(rows, paused_tasks)


def _pause_command(name: str, *, paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @click.argument("names", nargs=-1, required=True)
    @DATABASE_URL
    @SCHEMA
    @click.option("--task", "tasks", is_flag=True, help=f"NAMES are tasks: {verb} those.")
    def command(names: tuple[str, ...], database_url: str, schema: str, tasks: bool) -> None:
        from sqla_pgjobs import functions as fn

        kind = "task" if tasks else "queue"
        call = {
            ("queue", True): fn.pause_queue,
            ("queue", False): fn.resume_queue,
            ("task", True): fn.pause_task,
            ("task", False): fn.resume_task,
        }[kind, paused]
        with (
            _reported(schema, usage=True),
            _connection(database_url, schema, write=True) as connection,
        ):
            statements = [call(n) for n in names]  # every name checked before any change
            changed = [bool(connection.execute(st).scalar_one()) for st in statements]
        for item, did in zip(names, changed, strict=True):
            state = "paused" if paused else "resumed"
            click.echo(f"{kind} {item}: {state}" if did else f"{kind} {item}: already {state}")

    command.__doc__ = (
        f"{verb.capitalize()} the queues NAMES (or, with --task, the tasks NAMES): "
        + (
            "no worker starts their jobs until resumed."
            if paused
            else "workers take their jobs again."
        )
    )
    return queues.command(name)(command)


_pause_command("pause", paused=True)
_pause_command("resume", paused=False)


@main.group()
def jobs() -> None:
    """List, inspect, retry, fail, reschedule, cancel and delete jobs.

    The actions leave alone the jobs a live worker holds, unless --force is given (the
    worker's own result for such a job is then ignored); cancel asks that worker to stop
    the job instead.
    """


@jobs.command("list")
@DATABASE_URL
@SCHEMA
@click.option("--task", help="Only this task.")
@click.option("--queue", help="Only this queue.")
@click.option("--tenant", help="Only this tenant (database_id).")
@click.option(
    "--state", type=click.Choice(["due", "delayed", "running", "failed"]), help="Only this state."
)
@click.option("--key", help="Only the job with this key.")
@click.option("--payload", metavar="JSON", help=_PAYLOAD_HELP)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
def jobs_list(
    database_url: str,
    schema: str,
    task: str | None,
    queue: str | None,
    tenant: str | None,
    state: str | None,
    key: str | None,
    payload: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, in the order workers take them."""
    from sqla_pgjobs.admin import as_json as plain
    from sqla_pgjobs.admin import list_jobs

    with _reported(schema, usage=True), _connection(database_url, schema) as connection:
        rows = list_jobs(
            connection,
            task=task,
            queue=queue,
            tenant=tenant,
            state=state,
            key=key,
            payload=_payload(payload),
            limit=limit,
        )
    if as_json:
        for row in plain(rows):
            click.echo(_json(row))
    else:
        _render_jobs(rows)


@jobs.command("show")
@click.argument("job_id", type=int)
@DATABASE_URL
@SCHEMA
def jobs_show(job_id: int, database_url: str, schema: str) -> None:
    """Everything about one job, live or finished, as JSON: its row (while it is in the
    queue), when a cancel request for it was made (cancel_requested_at, null when none:
    its worker stops it), and its history (every finish recorded). Exit 1 if neither is
    there."""
    from sqla_pgjobs.admin import as_json as plain
    from sqla_pgjobs.admin import cancel_requested_at, show_job
    from sqla_pgjobs.history import history_of

    with _reported(schema), _connection(database_url, schema) as connection:
        row = show_job(connection, job_id)
        requested = cancel_requested_at(connection, job_id) if row is not None else None
        finishes = history_of(connection, job_id)
    if row is None and not finishes:
        raise click.ClickException(
            f"no job {job_id}: not in the queue, and no finish of it in the history "
            "(pruned after its retention, or never recorded)"
        )
    shown = (
        {**plain(row), "cancel_requested_at": requested.isoformat() if requested else None}
        if row is not None
        else {"id": job_id, "state": finishes[-1].outcome}
    )
    _echo_json({**shown, "history": [_history_json(finish) for finish in finishes]})


@jobs.command("history")
@DATABASE_URL
@SCHEMA
@click.option("--task", help="Only this task.")
@click.option("--queue", help="Only this queue.")
@click.option("--tenant", help="Only this tenant (database_id).")
@click.option(
    "--outcome",
    type=click.Choice(["completed", "failed", "cancelled", "discarded"]),
    help="Only this outcome.",
)
@click.option("--key", help="Only jobs with this key.")
@click.option("--since", metavar="WHEN", help=_WHEN_HELP.format("at or after"))
@click.option("--until", metavar="WHEN", help=_WHEN_HELP.format("before"))
@click.option("--payload", metavar="JSON", help=_PAYLOAD_HELP)
@click.option(
    "--before", type=int, metavar="ID", help="Continue a listing: entries older than this id."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finish.")
def jobs_history(
    database_url: str,
    schema: str,
    task: str | None,
    queue: str | None,
    tenant: str | None,
    outcome: str | None,
    key: str | None,
    since: str | None,
    until: str | None,
    payload: str | None,
    before: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """Finished jobs, newest first: completed, failed for good, cancelled, discarded."""
    from sqla_pgjobs.history import list_history

    with _reported(schema, usage=True), _connection(database_url, schema) as connection:
        rows = list_history(
            connection,
            task=task,
            queue=queue,
            tenant=tenant,
            outcome=outcome,
            key=key,
            since=_when("--since", since),
            until=_when("--until", until),
            payload=_payload(payload),
            before=before,
            limit=limit,
        )
    if as_json:
        for row in rows:
            click.echo(_json(_history_json(row)))
    else:
        _render_history(rows, limit)


def _job_action(name: str) -> Callable[[Callable[..., ActionResult]], click.Command]:
    """A ``pgjobs jobs NAME JOB_ID...`` command: the decorated function does the action
    (given a connection, the ids, ``force`` and its own options) and returns its result;
    the command reports it, exiting 1 when some jobs were left alone."""

    def register(act: Callable[..., ActionResult]) -> click.Command:
        @click.argument("job_ids", nargs=-1, type=int, required=True)
        @DATABASE_URL
        @SCHEMA
        @click.option("--force", is_flag=True, help="Also jobs that a live worker holds.")
        @functools.wraps(act)
        def command(
            job_ids: tuple[int, ...], database_url: str, schema: str, **options: Any
        ) -> None:
            with (
                _reported(schema, usage=True),
                _connection(database_url, schema, write=True) as connection,
            ):
                result = act(connection, list(job_ids), **options)
            _render_action(name, result)

        return jobs.command(name)(command)

    return register


@_job_action("retry")
def _retry(connection: Connection, job_ids: list[int], *, force: bool) -> ActionResult:
    """Run failed or waiting jobs again now, with their attempts reset; a job that ended
    failed, cancelled or discarded and is no longer in the queue is enqueued again from
    its history, as a new job."""
    from sqla_pgjobs import admin

    return admin.retry(connection, job_ids, force=force)


@click.option("--message", help="The error to record.")
@_job_action("fail")
def _fail(
    connection: Connection, job_ids: list[int], *, force: bool, message: str | None
) -> ActionResult:
    """Mark jobs failed for good (they are kept, and never run again)."""
    from sqla_pgjobs import admin

    return admin.fail(connection, job_ids, message=message, force=force)


@click.option("--in", "in_seconds", type=float, help="Run this many seconds from now.")
@click.option("--priority", type=int, help="The new priority.")
@_job_action("reschedule")
def _reschedule(
    connection: Connection,
    job_ids: list[int],
    *,
    force: bool,
    in_seconds: float | None,
    priority: int | None,
) -> ActionResult:
    """Move jobs in time (--in SECONDS) or priority (--priority)."""
    from sqla_pgjobs import admin

    run_at = None if in_seconds is None else datetime.now(UTC) + timedelta(seconds=in_seconds)
    return admin.reschedule(connection, job_ids, run_at=run_at, priority=priority, force=force)


@_job_action("delete")
def _delete(connection: Connection, job_ids: list[int], *, force: bool) -> ActionResult:
    """Delete jobs without running them."""
    from sqla_pgjobs import admin

    return admin.delete(connection, job_ids, force=force)


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1, type=int)
@DATABASE_URL
@SCHEMA
@click.option("--task", help="Instead of ids: every job of this task that may still run.")
@click.option("--queue", help="... of this queue.")
@click.option("--tenant", help="... of this tenant (database_id).")
@click.option("--key", help="... with this key.")
@click.option("--payload", metavar="JSON", help="... whose payload contains this JSON.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
def jobs_cancel(
    job_ids: tuple[int, ...],
    database_url: str,
    schema: str,
    task: str | None,
    queue: str | None,
    tenant: str | None,
    key: str | None,
    payload: str | None,
    as_json: bool,
) -> None:
    """Cancel jobs, by id or by filters (combined with AND).

    A waiting job goes to the history as cancelled at once. A running one is stopped by
    the worker that runs it, within a second (an async handler is cancelled; a plain one
    is asked, through job.cancel_requested), and is never retried. Exit 1 if some jobs
    could not be cancelled (already finished or failed, or no such job).
    """
    from sqla_pgjobs import admin

    filters = (task, queue, tenant, key, payload)
    if bool(job_ids) == any(value is not None for value in filters):
        raise click.UsageError(
            "give job ids, or filters (--task, --queue, --tenant, --key, --payload), not both"
        )
    with (
        _reported(schema, usage=True),
        _connection(database_url, schema, write=True) as connection,
    ):
        result = admin.cancel(
            connection,
            list(job_ids) if job_ids else None,
            task=task,
            queue=queue,
            tenant=tenant,
            key=key,
            payload=_payload(payload),
        )
    if as_json:
        outcomes = sorted(
            (job_id, name) for name, ids in result.by_result.items() for job_id in ids
        )
        for job_id, name in outcomes:
            click.echo(_json({"job_id": job_id, "result": name}))
    else:
        _render_cancel(result, by_filter=not job_ids)
    if result.ids("already_failed", "already_finished", "not_found"):
        sys.exit(1)


# --- Rendering ----------------------------------------------------------------------------
# How the operator commands print their results as text; --json prints the same views
# (sqla_pgjobs.admin) as JSON.


def _json(value: Any, indent: int | None = None) -> str:
    """JSON text of a view: times in ISO 8601 (as the text tables print them), UUIDs and
    intervals as text."""

    def default(item: Any) -> str:
        return item.isoformat() if isinstance(item, datetime) else str(item)

    return json.dumps(value, default=default, indent=indent)


def _echo_json(value: Any) -> None:
    click.echo(_json(value, indent=2))


def _render_status(report: Status) -> None:
    totals = report.totals
    click.echo(
        "jobs: " + ", ".join(f"{totals[s]} {s}" for s in ("due", "delayed", "running", "failed"))
    )
    if report.by_task:
        click.echo(f"\n{'task':<28}{'queue':<20}{'state':<10}{'jobs':>8}")
        for row in report.by_task:
            click.echo(
                f"{row.task_identifier:<28}{row.queue_name or '-':<20}{row.state:<10}{row.jobs:>8}"
            )
    if report.held:
        click.echo(f"\n{'held by':<40}{'jobs':>6}  oldest lock")
        for holder in report.held:
            click.echo(f"{holder.locked_by:<40}{holder.jobs:>6}  {holder.oldest_lock.isoformat()}")
    click.echo(f"\nworkers: {len(report.workers)}")
    for w in report.workers:
        state = "alive" if w.alive else "SILENT"
        click.echo(
            f"  {w.worker_id:<40}{state:<8} last heartbeat {w.seconds_since_heartbeat} s ago"
            f" (timeout {w.heartbeat_timeout:g} s)"
        )
    click.echo(f"\nscheduled jobs: {len(report.schedules)}")
    for e in report.schedules:
        click.echo(f"  {e.id:>6} {e.task_identifier:<24} next {e.next_fire or '-'}  {e.schedule}")


def _render_schedules(entries: list[ScheduleView]) -> None:
    if not entries:
        click.echo("No scheduled jobs.")
        return
    click.echo(f"{'id':>6}  {'task':<24} {'next fire':<32} {'held by':<20} schedule")
    for e in entries:
        click.echo(
            f"{e.id:>6}  {e.task_identifier:<24} {e.next_fire or '-':<32} "
            f"{e.locked_by or '-':<20} {e.schedule}"
        )


def _render_jobs(rows: list[JobView]) -> None:
    click.echo(f"{'id':>8}  {'task':<24} {'state':<8} {'attempts':>8}  {'run at':<33} last error")
    for row in rows:
        error = (row.last_error or "").split("\n", 1)[0][:60]
        line = (
            f"{row.id:>8}  {row.task_identifier:<24} {row.state:<8} "
            f"{row.attempts:>4}/{row.max_attempts:<3}  {row.run_at.isoformat():<33} {error}"
        )
        click.echo(line.rstrip())


def _history_json(row: HistoryView) -> dict[str, Any]:
    from sqla_pgjobs.admin import as_json as plain

    duration = row.duration
    return {**plain(row), "duration": None if duration is None else duration.total_seconds()}


def _render_history(rows: list[HistoryView], limit: int) -> None:
    if not rows:
        click.echo("No finished jobs (that match).")
        return
    click.echo(
        f"{'id':>8} {'job':>8}  {'task':<24} {'outcome':<10} {'attempts':>8}  "
        f"{'finished at':<33} {'took':>9}  last error"
    )
    for row in rows:
        took = "-" if row.duration is None else f"{row.duration.total_seconds():.3f}s"
        error = (row.last_error or "").split("\n", 1)[0][:60]
        line = (
            f"{row.id:>8} {row.job_id:>8}  {row.task_identifier:<24} {row.outcome:<10} "
            f"{row.attempts:>4}/{row.max_attempts:<3}  {row.finished_at.isoformat():<33} "
            f"{took:>9}  {error}"
        )
        click.echo(line.rstrip())
    if len(rows) == limit:
        click.echo(f"(more: --before {rows[-1].id})")


def _render_queues(rows: list[QueueView], paused_tasks: list[str]) -> None:
    click.echo(
        f"{'queue':<28}{'state':<9}"
        + "".join(f"{s:>9}" for s in ("due", "delayed", "running", "failed"))
    )
    for row in rows:
        label = "(none)" if row.name is None else row.name
        state = "PAUSED" if row.paused else "-"
        counts = "".join(f"{n:>9}" for n in (row.due, row.delayed, row.running, row.failed))
        click.echo(f"{label:<28}{state:<9}{counts}")
    if paused_tasks:
        click.echo(f"\npaused tasks: {', '.join(paused_tasks)}")


#: Why cancel left a job alone.
_NOT_CANCELLED = {
    "already_failed": "failed for good already",
    "already_finished": "finished already",
    "not_found": "no such job",
}


def _render_cancel(result: CancelResult, *, by_filter: bool) -> None:
    if not result.by_result and by_filter:
        click.echo("cancelled: none (no job that may still run matches)")
    if cancelled := result.ids("cancelled"):
        click.echo(f"cancelled: {' '.join(map(str, cancelled))}")
    if requested := result.ids("cancel_requested"):
        click.echo(
            f"cancel requested: {' '.join(map(str, requested))} (running: the workers "
            "that run them stop them)"
        )
    refused = sorted(
        (job_id, reason)
        for result_name, reason in _NOT_CANCELLED.items()
        for job_id in result.ids(result_name)
    )
    if refused:
        listed = ", ".join(f"{job_id} ({reason})" for job_id, reason in refused)
        click.echo(f"not cancelled: {listed}", err=True)


def _render_action(action: str, result: ActionResult) -> None:
    if result.done:
        click.echo(f"{action}: {' '.join(map(str, result.done))}")
    for old, new in sorted(result.requeued.items()):
        click.echo(f"{action}: {old} from the history, as new job {new}")
    if result.skipped:
        raise click.ClickException(
            f"not {action}: {' '.join(map(str, result.skipped))} (no such job, or a live "
            "worker holds it: --force acts anyway)"
        )
