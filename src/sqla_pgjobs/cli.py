"""The ``pgjobs`` command line.

    pgjobs worker myapp.tasks:tasks --database-url postgresql://... --concurrency 20
    pgjobs worker myapp.tasks:tasks --drain       # run what is due, then exit 0
    pgjobs demo                                    # end to end, on an embedded PostgreSQL

Exit codes: 0 done (or stopped by SIGTERM/SIGINT), 1 a failure (the database cannot be
reached, the schema is missing, ...), 2 a usage error.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from typing import Any

import click

from sqla_pgjobs._version import __version__
from sqla_pgjobs.errors import PgJobsError
from sqla_pgjobs.log_format import configure_logging
from sqla_pgjobs.schema import DEFAULT_SCHEMA

__all__ = ["main"]

DATABASE_URL_HELP = "PostgreSQL URL (postgresql://user@host/db). Default: $PGJOBS_DATABASE_URL."


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pgjobs")
def main() -> None:
    """PostgreSQL-native background jobs for SQLAlchemy: workers, the demo, and more."""


@main.command()
@click.argument("tasks", metavar="MODULE:ATTRIBUTE")
@click.option("--database-url", envvar="PGJOBS_DATABASE_URL", required=True, help=DATABASE_URL_HELP)
@click.option(
    "--concurrency",
    "-c",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Jobs run at the same time.",
)
@click.option(
    "--drain",
    "--once",
    "drain",
    is_flag=True,
    help="Run the jobs that are due, then exit 0 (for tests, cron and benchmarks).",
)
@click.option("--schema", default=DEFAULT_SCHEMA, show_default=True, help="The job schema's name.")
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
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def worker(
    tasks: str,
    database_url: str,
    concurrency: int,
    drain: bool,
    schema: str,
    poll_interval: float,
    no_listen: bool,
    worker_id: str | None,
    heartbeat_timeout: float,
    shutdown_timeout: float,
    unknown_tasks: str,
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
    try:
        runner = Worker(
            database_url,
            registry,
            concurrency=concurrency,
            worker_id=worker_id,
            schema=schema,
            poll_interval=poll_interval,
            listen=not no_listen,
            heartbeat_timeout=heartbeat_timeout,
            shutdown_timeout=shutdown_timeout,
            unknown_tasks=unknown_tasks,
        )
        runner.run(drain=drain)
    except PgJobsError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the database is unreachable, the schema missing, ...
        logging.getLogger("sqla_pgjobs.worker").debug("worker failed", exc_info=True)
        message = f"{type(exc).__name__}: {exc}"
        if getattr(exc, "sqlstate", None) in ("3F000", "42883"):  # no such schema / function
            message += (
                f"\nIs the job schema installed as {schema!r}? Install it with "
                "op.create_pgjobs_schema() in an Alembic revision."
            )
        raise click.ClickException(message) from exc
    _exit_if_handlers_still_run()


def _exit_if_handlers_still_run() -> None:
    """Plain handlers that outlived the shutdown timeout cannot be stopped; their jobs were
    given back. Do not wait for them at interpreter exit."""
    if any(t.name.startswith("pgjobs-handler") and t.is_alive() for t in threading.enumerate()):
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
def demo(database_url: str | None, job_count: int, concurrency: int) -> None:
    """Enqueue a mix of jobs and run them with a worker, end to end.

    Plain, delayed, failing-then-retried and keyed (deduplicated) jobs, and jobs enqueued by
    a table trigger; then a summary. With no database URL an embedded PostgreSQL is started
    (pip install 'sqla-pgjobs[demo]') and removed afterwards.
    """
    from sqla_pgjobs.demo import run_demo

    try:
        ok = run_demo(database_url, job_count=job_count, concurrency=concurrency, echo=click.echo)
    except PgJobsError as exc:
        raise click.ClickException(str(exc)) from exc
    if not ok:
        raise click.ClickException("the demo's summary does not add up (see above)")
