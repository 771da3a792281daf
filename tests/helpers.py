"""Helpers shared by the tests."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import TextClause, text

import sqla_pgjobs.alembic  # noqa: F401  (registers the ops)
from sqla_pgjobs.database import libpq_url, on_schema
from sqla_pgjobs.schema import DEFAULT_SCHEMA, quote_schema, render

__all__ = [
    "REPO",
    "SCHEMA",
    "catalog",
    "libpq_url",
    "listening",
    "notifications",
    "quote_schema",
    "raw",
    "run_ops",
    "sql",
    "translated",
    "wait_for",
]

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL, Connection, Engine

#: The repository's root (tests/ lives in it; ``pgjobs worker`` subprocesses run there).
REPO = Path(__file__).resolve().parent.parent

#: The job schema's name in this test run (CI runs the suite once under an awkward name).
SCHEMA = os.environ.get("PGJOBS_TEST_SCHEMA", DEFAULT_SCHEMA)


def sql(statement: str) -> TextClause:
    """``text()`` of a statement written with ``app_jobs``, for this run's schema."""
    return text(render(statement, SCHEMA))


def translated(engine: Engine) -> Engine:
    """``engine`` with the job tables and wrappers, written for ``app_jobs``, resolving to
    this run's schema (:func:`sqla_pgjobs.database.on_schema`)."""
    return on_schema(engine, SCHEMA)


def raw(statement: str) -> str:
    """A statement written with ``app_jobs``, as a string for this run's schema (psycopg)."""
    return render(statement, SCHEMA)


_CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, row_number() OVER (PARTITION BY c.relname ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = :ns AND c.relkind IN ('r', 'p') AND a.attnum > 0
           AND NOT a.attisdropped
         ORDER BY 1, 2""",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
         WHERE c.relnamespace = :ns ORDER BY 1, 2""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
         WHERE schemaname = :name ORDER BY 1""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               p.prosecdef, p.provolatile, p.proisstrict, p.proconfig, p.prosrc,
               obj_description(p.oid, 'pg_proc'), p.proacl::text
          FROM pg_proc p WHERE p.pronamespace = :ns ORDER BY 1, 2""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = :ns AND NOT t.tgisinternal ORDER BY 1, 2""",
    "tables": """
        SELECT c.relname, c.relkind, c.relacl::text FROM pg_class c
         WHERE c.relnamespace = :ns ORDER BY 1""",
}


def catalog(connection: Connection, schema: str = SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
    """Everything about the job schema that a migration decides, with the schema's own name
    replaced by ``app_jobs`` so that catalogs of differently named schemas compare equal."""
    ns = connection.execute(
        text("SELECT oid FROM pg_namespace WHERE nspname = :name"), {"name": schema}
    ).scalar_one()
    quoted = re.escape(quote_schema(schema))

    def normal(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(rf"(?<![\w\"]){quoted}(?=\.)", "app_jobs", value)
        if isinstance(value, list):
            return [normal(v) for v in value]
        return value

    result: dict[str, list[tuple[Any, ...]]] = {}
    for key, query in _CATALOG_QUERIES.items():
        rows = connection.execute(text(query), {"ns": ns, "name": schema}).all()
        result[key] = [tuple(normal(v) for v in row) for row in rows]
    return result


def wait_for(
    condition: Callable[[], object],
    timeout: float = 20.0,
    describe: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``timeout`` with
    ``describe()`` (a log, say) in the message. Every 50 ms by default: quick enough for
    the worker's and scheduler's sub-second timings, cheap for a query per poll."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            detail = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"not within {timeout} s{detail}")
        time.sleep(interval)
    return time.monotonic() - started


def run_ops(engine: Engine, ops: Callable[[Any], None]) -> None:
    """Run Alembic operations online, in one transaction, as a revision would."""
    with engine.begin() as connection:
        ops(Operations(MigrationContext.configure(connection)))


@contextlib.contextmanager
def listening(url: URL, channel: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection that LISTENs on ``channel``."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(f'LISTEN "{channel}"')
        yield connection


def notifications(connection: psycopg.Connection[Any], timeout: float = 0.5) -> list[str]:
    """The channels of the notifications that arrive within ``timeout`` seconds."""
    return [n.channel for n in connection.notifies(timeout=timeout)]


def index_entries_read(engine: Engine) -> int:
    """Entries read so far by scans of jobs_available_idx, the index get_jobs walks (dead
    entries it must step over included): the work behind taking jobs, whatever the load
    of the machine. Statistics reach the view within about a second of a session's
    activity (PostgreSQL 15+), so wait until the figure stops changing."""
    query = text(
        "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelid = CAST(:index AS regclass)"
    )
    index = f"{quote_schema(SCHEMA)}.jobs_available_idx"
    last = -1
    while True:
        with engine.connect() as connection:
            reads = int(connection.execute(query, {"index": index}).scalar_one())
        if reads == last:
            return reads
        last = reads
        time.sleep(1.5)
