"""The optional indexes of ``sql/indexes.sql`` (``failed``, ``payload``): built with
``CREATE INDEX CONCURRENTLY`` outside the migration's transaction, by
``op.create_pgjobs_indexes``, ``sqla_pgjobs.schema.create_indexes`` and ``pgjobs migrate
--index``; used by the reads they serve; never blocking writers while they build.
"""

from __future__ import annotations

import io
import threading
import time
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import render_op_text
from alembic.autogenerate.api import AutogenContext
from alembic.migration import MigrationContext
from alembic.operations import Operations
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from sqla_pgjobs import InvalidArgumentError, add_job, fail_job
from sqla_pgjobs.alembic import CreatePgjobsIndexesOp, DropPgjobsIndexesOp
from sqla_pgjobs.cli import main
from sqla_pgjobs.database import on_schema
from sqla_pgjobs.schema import (
    OPTIONAL_INDEXES,
    create_index_statements,
    create_indexes,
    drop_indexes,
)
from tests.helpers import SCHEMA, sql

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL, Engine

ALL = tuple(OPTIONAL_INDEXES)


@pytest.fixture
def engine(new_database: Callable[..., URL], template_database: str) -> Iterator[Engine]:
    """A fresh database with the job schema, mapped to this run's schema name."""
    engine = create_engine(new_database(template_database))
    yield on_schema(engine, SCHEMA)
    engine.dispose()


def in_migration(engine: Engine, ops: Callable[[Operations], None]) -> None:
    """Run ``ops`` as Alembic's env.py runs a revision: in the context's own transaction
    (``autocommit_block`` commits that one and begins the next)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        with context.begin_transaction():
            ops(Operations(context))


def indexes(engine: Engine) -> dict[str, bool]:
    """The optional indexes present, by index name, with whether each is valid."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.relname::text, i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :schema AND c.relname = ANY(:names)"
            ),
            {"schema": SCHEMA, "names": list(OPTIONAL_INDEXES.values())},
        ).all()
    return {name: valid for name, valid in rows}


def plan(engine: Engine, query: str) -> str:
    """The plan of ``query`` with sequential scans priced out, as on a large table."""
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(connection.execute(sql(f"EXPLAIN {query}")).scalars())


# The reads the indexes serve, as the dashboard and pgjobs jobs list write them
# (sqla_pgjobs.admin.state_condition("failed"); sqla_pgjobs.filters' payload containment).
FAILED_PAGE = (
    "SELECT id FROM app_jobs.jobs WHERE locked_at IS NULL AND attempts >= max_attempts"
    " ORDER BY id DESC LIMIT 50"
)
# On a table this small the planner would walk the primary key backwards for the page
# (benchmarks/dashboard.py shows the choice on 1,000,000 jobs): count the matches instead.
PAYLOAD_MATCHES = (
    "SELECT count(*) FROM app_jobs.jobs WHERE CAST(payload AS jsonb) @> '{\"account_id\": 7}'"
)


def test_the_op_builds_both_in_a_revision_and_the_reads_use_them(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(add_job("charge", {"account_id": 7}))
    in_migration(engine, lambda op: op.create_pgjobs_indexes(*ALL, schema=SCHEMA))
    assert indexes(engine) == {"jobs_failed_idx": True, "jobs_payload_idx": True}
    assert "jobs_failed_idx" in plan(engine, FAILED_PAGE)
    assert "jobs_payload_idx" in plan(engine, PAYLOAD_MATCHES)

    def again_then_more(op: Operations) -> None:
        op.create_pgjobs_indexes("failed", schema=SCHEMA)  # already there: kept
        op.execute(text("CREATE TABLE after_the_indexes (id integer)"))

    # The migration goes on after the block, in a transaction of its own.
    in_migration(engine, again_then_more)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM after_the_indexes")).scalar() == 0
    in_migration(engine, lambda op: op.drop_pgjobs_indexes(*ALL, schema=SCHEMA))
    assert indexes(engine) == {}


def test_a_job_that_fails_for_good_is_found_through_the_failed_index(engine: Engine) -> None:
    in_migration(engine, lambda op: op.create_pgjobs_indexes("failed", schema=SCHEMA))
    with engine.begin() as connection:
        doomed = connection.execute(add_job("doomed", max_attempts=1)).one().id
        connection.execute(add_job("fine"))
    with engine.begin() as connection:
        connection.execute(sql("SELECT * FROM app_jobs.get_job('w-1234', ARRAY['doomed'])"))
        connection.execute(fail_job("w-1234", doomed, "boom"))
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        found = connection.execute(sql(FAILED_PAGE)).scalars().all()
    assert found == [doomed]


def test_an_index_a_failed_build_left_invalid_is_built_again(engine: Engine) -> None:
    """CREATE INDEX CONCURRENTLY that fails leaves an invalid index under its name, which
    IF NOT EXISTS alone would keep (unused) forever."""
    with engine.begin() as connection:
        connection.execute(add_job("same"))
        connection.execute(add_job("same"))
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with pytest.raises(DBAPIError), autocommit.connect() as connection:
        connection.execute(
            sql(
                "CREATE UNIQUE INDEX CONCURRENTLY jobs_failed_idx"
                " ON app_jobs.jobs (task_identifier)"
            )
        )
    assert indexes(engine) == {"jobs_failed_idx": False}
    in_migration(engine, lambda op: op.create_pgjobs_indexes("failed", schema=SCHEMA))
    assert indexes(engine) == {"jobs_failed_idx": True}
    assert "jobs_failed_idx" in plan(engine, FAILED_PAGE)
    # The same without Alembic.
    with autocommit.connect() as connection:
        drop_indexes(connection, ["failed"], SCHEMA)
        with pytest.raises(DBAPIError):
            connection.execute(
                sql(
                    "CREATE UNIQUE INDEX CONCURRENTLY jobs_failed_idx"
                    " ON app_jobs.jobs (task_identifier)"
                )
            )
        create_indexes(connection, ["failed"], SCHEMA)
    assert indexes(engine) == {"jobs_failed_idx": True}


def test_enqueueing_goes_on_while_an_index_waits_for_an_open_transaction(
    engine: Engine,
) -> None:
    """What CONCURRENTLY buys: the build waits for a transaction that was open when it
    started, and writers that come meanwhile are not queued behind it, as they would be
    behind a plain CREATE INDEX's SHARE lock."""
    done = threading.Event()
    errors: list[BaseException] = []

    def build() -> None:
        try:
            in_migration(engine, lambda op: op.create_pgjobs_indexes(*ALL, schema=SCHEMA))
        except BaseException as error:  # reported by the test below
            errors.append(error)
        finally:
            done.set()

    with engine.connect() as open_one:
        open_one.begin()
        open_one.execute(add_job("held_open", {"account_id": 1}))
        builder = threading.Thread(target=build)
        builder.start()
        deadline = time.monotonic() + 10
        while not waiting_builds(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_builds(engine), "the build never started waiting"
        for n in range(20):
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '2s'"))
                connection.execute(add_job("meanwhile", {"account_id": n}))
        assert not done.is_set()
        open_one.commit()
    builder.join(timeout=60)
    assert done.is_set() and errors == []
    assert indexes(engine) == {"jobs_failed_idx": True, "jobs_payload_idx": True}
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        found = connection.execute(
            sql("SELECT count(*) FROM app_jobs.jobs WHERE CAST(payload AS jsonb) @> '{}'")
        ).scalar_one()
    assert found == 21


def waiting_builds(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE query LIKE '%CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
                    " AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def test_offline_sql_commits_before_the_build_and_begins_again_after() -> None:
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "dialect_opts": {"paramstyle": "named"}},
    )
    with context.begin_transaction():
        Operations(context).create_pgjobs_indexes("payload", schema="we:ird")
    lines = [line for line in buffer.getvalue().splitlines() if line and not line.startswith("-")]
    assert lines == [
        "BEGIN;",
        "COMMIT;",  # the revision's transaction so far
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_payload_idx ON "we:ird".jobs',
        "  USING gin ((payload::jsonb) jsonb_path_ops);",
        "BEGIN;",  # the rest of the revision
        "COMMIT;",
    ]


def test_unknown_or_no_index_names_are_refused_before_anything_runs() -> None:
    for names, bad in ((("failed", "payloads"), "payloads"), ((), [])):
        with pytest.raises(InvalidArgumentError) as info:
            CreatePgjobsIndexesOp(names)
        assert info.value.argument == "names"
        assert info.value.value == bad
        assert "failed, payload" in str(info.value)
    with pytest.raises(InvalidArgumentError):
        create_index_statements(["failed", 3])  # type: ignore[list-item]


def test_the_ops_reverse_and_render_for_autogenerate() -> None:
    create = CreatePgjobsIndexesOp(("failed", "payload"), "we:ird")
    drop = create.reverse()
    assert isinstance(drop, DropPgjobsIndexesOp)
    assert (drop.names, drop.schema) == (("failed", "payload"), "we:ird")
    assert isinstance(drop.reverse(), CreatePgjobsIndexesOp)
    context = AutogenContext(MigrationContext.configure(dialect_name="postgresql"))
    assert render_op_text(context, create) == (
        "op.create_pgjobs_indexes('failed', 'payload', schema='we:ird')"
    )
    assert render_op_text(context, DropPgjobsIndexesOp(("failed",))) == (
        "op.drop_pgjobs_indexes('failed')"
    )


def test_pgjobs_migrate_builds_the_indexes_it_is_given(
    new_database: Callable[..., URL],
) -> None:
    url = new_database()
    runner = CliRunner()
    database_url = url.render_as_string(hide_password=False)
    args: list[str] = ["migrate", "--database-url", database_url, "--schema", SCHEMA]
    result = runner.invoke(main, [*args, "--index", "failed", "--index", "payload"])
    assert result.exit_code == 0, result.output
    assert "Built the optional indexes: failed, payload." in result.output
    engine = create_engine(url)
    try:
        assert indexes(engine) == {"jobs_failed_idx": True, "jobs_payload_idx": True}
    finally:
        engine.dispose()
    refused = runner.invoke(main, [*args, "--index", "nope"])
    assert refused.exit_code == 2
    assert "'nope' is not one of 'failed', 'payload'" in refused.output
