"""The step files between schema versions 1 and 2 (upgrade_v1_to_v2.sql,
downgrade_v2_to_v1.sql): catalogs, offline ``--sql`` replayed through psql, and the upgrade
run on a live queue while version 1 workers (ours, and the reference Node worker's calls)
keep working.
"""

from __future__ import annotations

import collections
import shutil
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.types.json import Json
from sqlalchemy import create_engine

from sqla_pgjobs import TaskRegistry, Worker
from sqla_pgjobs.database import on_schema
from sqla_pgjobs.schema import as_text, install, named_statements, upgrade_statements
from tests.helpers import SCHEMA, libpq_url, quote_schema, raw, run_ops, sql
from tests.migrations.test_alembic_ops import (
    REPO,
    alembic,
    assert_same_catalog,
    ok,
    psql,
    schema_catalog,
)
from tests.roles import role_maker

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy.engine import URL, Engine


def value(
    connection: psycopg.Connection[Any], statement: str, *params: Any, row: bool = False
) -> Any:
    """The first column (or, with ``row``, the first row) a statement returns."""
    found = connection.execute(raw(statement), params).fetchone()
    assert found is not None
    return found if row else found[0]


def fresh_catalog(new_database: Callable[..., URL], version: int) -> dict[str, Any]:
    engine = create_engine(new_database())
    try:
        run_ops(engine, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=version))
        return schema_catalog(engine, SCHEMA)
    finally:
        engine.dispose()


# --- Catalogs --------------------------------------------------------------------------------


def test_v1_upgraded_equals_a_fresh_v2_and_downgraded_equals_a_fresh_v1(
    new_database: Callable[..., URL],
) -> None:
    """Up, down and up again: each state has exactly the catalog of a fresh install (every
    function body, setting, privilege and comment; tables, columns, indexes, triggers)."""
    v1, v2 = fresh_catalog(new_database, 1), fresh_catalog(new_database, 2)
    assert v1 != v2
    engine = create_engine(new_database())
    try:
        run_ops(engine, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=1))
        for step in range(2):
            run_ops(engine, lambda op: op.upgrade_pgjobs_schema(2, from_version=1, schema=SCHEMA))
            assert_same_catalog(schema_catalog(engine, SCHEMA), v2)
            if step == 0:
                run_ops(
                    engine,
                    lambda op: op.downgrade_pgjobs_schema(1, from_version=2, schema=SCHEMA),
                )
                assert_same_catalog(schema_catalog(engine, SCHEMA), v1)
    finally:
        engine.dispose()


def test_roles_holding_a_level_get_what_version_2_adds_to_it_and_lose_it_going_down(
    new_database: Callable[..., URL],
) -> None:
    """alive_until joins the operator level: an operator granted at version 1 can execute it
    after the upgrade (worker and enqueue roles cannot), and not after the downgrade."""
    engine = create_engine(new_database())
    try:
        run_ops(engine, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=1))
        with role_maker(engine) as make:
            roles = {level: make(f"pgjobs_{level[:3]}_").name for level in ("operator", "worker")}
            for level, role in roles.items():
                run_ops(
                    engine, lambda op, r=role, a=level: op.grant_pgjobs_access(r, a, schema=SCHEMA)
                )

            def may_call() -> dict[str, bool]:
                query = sql(
                    "SELECT has_function_privilege(:role, p.oid, 'EXECUTE') FROM pg_proc p"
                    " WHERE p.proname = 'alive_until'"
                    " AND p.pronamespace = CAST(:schema AS regnamespace)"
                )
                with engine.connect() as connection:
                    return {
                        level: bool(
                            connection.execute(
                                query, {"role": role, "schema": quote_schema(SCHEMA)}
                            ).scalar_one()
                        )
                        for level, role in roles.items()
                    }

            assert may_call() == {"operator": False, "worker": False}
            run_ops(engine, lambda op: op.upgrade_pgjobs_schema(2, from_version=1, schema=SCHEMA))
            assert may_call() == {"operator": True, "worker": False}
            run_ops(engine, lambda op: op.downgrade_pgjobs_schema(1, from_version=2, schema=SCHEMA))
            assert may_call() == {"operator": False, "worker": False}
    finally:
        engine.dispose()


def test_a_read_role_granted_at_version_2_keeps_only_reads_going_down(
    new_database: Callable[..., URL],
) -> None:
    """Version 1 has no read level: the downgrade takes alive_until from a read role, which
    keeps USAGE and SELECT (it was granted to see the tables), and version 1's
    revoke_access(role, 'operator') takes those back."""
    engine = create_engine(new_database())
    try:
        run_ops(engine, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=2))
        with role_maker(engine) as make:
            role = make("pgjobs_rea_").name
            run_ops(engine, lambda op: op.grant_pgjobs_access(role, "read", schema=SCHEMA))

            def rights() -> tuple[bool, bool, bool]:
                with engine.connect() as connection:
                    row = connection.execute(
                        sql(
                            "SELECT has_schema_privilege(:role, :schema_name, 'USAGE'),"
                            " has_table_privilege(:role, :jobs, 'SELECT'),"
                            " coalesce(bool_or(has_function_privilege(:role, p.oid, 'EXECUTE'))"
                            "          FILTER (WHERE p.proname = 'alive_until'), false)"
                            " FROM pg_proc p WHERE p.pronamespace = CAST(:schema AS regnamespace)"
                        ),
                        {
                            "role": role,
                            "schema_name": SCHEMA,
                            "schema": quote_schema(SCHEMA),
                            "jobs": f"{quote_schema(SCHEMA)}.jobs",
                        },
                    ).one()
                return (row[0], row[1], row[2])

            assert rights() == (True, True, True)
            run_ops(engine, lambda op: op.downgrade_pgjobs_schema(1, from_version=2, schema=SCHEMA))
            assert rights() == (True, True, False)
            run_ops(engine, lambda op: op.revoke_pgjobs_access(role, "operator", schema=SCHEMA))
            assert rights() == (False, False, False)
    finally:
        engine.dispose()


# --- Offline (--sql), replayed through psql --------------------------------------------------

REVISIONS = {
    "0001_install_pgjobs": (None, "op.create_pgjobs_schema(version=1, schema={schema!r})",
                            "op.drop_pgjobs_schema(version=1, schema={schema!r})"),
    "0002_pgjobs_v2": ("0001_install_pgjobs",
                       "op.upgrade_pgjobs_schema(2, from_version=1, schema={schema!r})",
                       "op.downgrade_pgjobs_schema(1, from_version=2, schema={schema!r})"),
}  # fmt: skip


def project(directory: Path) -> Path:
    """alembic_ops' environment with two revisions of its own: install version 1, then
    upgrade to 2 (in this run's schema). Returns its alembic.ini."""
    for name in ("alembic.ini", "env.py", "script.py.mako"):
        shutil.copy(REPO / "alembic_ops" / name, directory / name)
    (directory / "versions").mkdir()
    for revision, (down, upgrade, downgrade) in REVISIONS.items():
        (directory / "versions" / f"{revision}.py").write_text(
            "from alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n    {upgrade.format(schema=SCHEMA)}\n\n\n"
            f"def downgrade() -> None:\n    {downgrade.format(schema=SCHEMA)}\n",
            encoding="utf-8",
        )
    return directory / "alembic.ini"


def test_offline_sql_of_the_upgrade_and_the_downgrade_replays_through_psql(
    new_database: Callable[..., URL], tmp_path: Path
) -> None:
    ini = project(tmp_path)
    scripts = {}
    for name, arguments in {
        "install_and_upgrade": ("upgrade", "head"),
        "downgrade": ("downgrade", "0002_pgjobs_v2:0001_install_pgjobs"),
        "upgrade": ("upgrade", "0001_install_pgjobs:0002_pgjobs_v2"),
    }.items():
        text = ok(alembic(*arguments, "--sql", config=ini, cwd=tmp_path))
        assert "%%" not in text
        scripts[name] = tmp_path / f"{name}.sql"
        scripts[name].write_text(text, encoding="utf-8")
    assert "CREATE OR REPLACE FUNCTION" in scripts["upgrade"].read_text(encoding="utf-8")
    # Online: new tables and functions only, no table of version 1 altered.
    assert "ALTER TABLE" not in scripts["upgrade"].read_text(encoding="utf-8")

    v1, v2 = fresh_catalog(new_database, 1), fresh_catalog(new_database, 2)
    url = new_database()
    engine = create_engine(url)
    try:
        psql(scripts["install_and_upgrade"], url)
        assert_same_catalog(schema_catalog(engine, SCHEMA), v2)
        psql(scripts["downgrade"], url)
        assert_same_catalog(schema_catalog(engine, SCHEMA), v1)
        psql(scripts["upgrade"], url)
        assert_same_catalog(schema_catalog(engine, SCHEMA), v2)
        # Replayed once too often, the step's own version check stops it, changing nothing.
        with pytest.raises(AssertionError, match="not at version 1"):
            psql(scripts["upgrade"], url)
        assert_same_catalog(schema_catalog(engine, SCHEMA), v2)
    finally:
        engine.dispose()


# --- Online, beside version 1 workers --------------------------------------------------------

JOBS = 600


class Loop(threading.Thread):
    """Calls ``step`` until told to stop, keeping the first error."""

    def __init__(self, step: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.step = step
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.steps = 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.step()
                self.steps += 1
                time.sleep(0.002)  # so that the run outlasts the upgrade on a fast machine
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_the_upgrade_commits_on_a_live_queue_while_version_1_workers_keep_working(
    empty_engine: Engine,
) -> None:
    """A worker of ours (its own cycle statement for a version 1 schema, which it keeps
    until it restarts, prepared by psycopg after five calls, in binary) and the reference
    Node worker and scheduler (their exact calls, untyped parameters, unnamed statements)
    run against version 1; the upgrade commits in the middle. No call fails, every job
    runs exactly once, and the upgrade waits for no lock."""
    with empty_engine.begin() as connection:
        install(connection, SCHEMA, 1)
    url = libpq_url(empty_engine.url)
    statements = named_statements("worker.sql", SCHEMA)
    completed: list[int] = []
    completed_after: list[int] = []  # by calls that began after the upgrade committed
    after_upgrade: set[str] = set()
    upgraded = threading.Event()

    with (
        psycopg.connect(url, autocommit=True) as setup,
        psycopg.connect(url, autocommit=True) as ours,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as node,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as scheduler,
    ):
        add = "SELECT id FROM app_jobs.add_jobs(array_fill('t'::text, ARRAY[%s]))"
        ids = [row[0] for row in setup.execute(raw(add), [JOBS])]
        schedule = str(value(setup, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'tick')"))
        ours.execute(
            statements["heartbeat_version_1"],
            {"worker_id": "ours-1", "heartbeat_timeout": timedelta(seconds=30), "info": Json({})},
        )
        done: list[int] = []

        def our_cycle() -> None:
            later = upgraded.is_set()
            rows = ours.cursor(binary=True).execute(
                statements["cycle_version_1"],
                {
                    "worker_id": "ours-1",
                    "completed_ids": list(done),
                    "failed_ids": [],
                    "error_messages": [],
                    "task_identifiers": None,
                    "job_expiry": timedelta(hours=4),
                    "max_jobs": 3,
                },
            )
            taken = [row[5] for row in rows if row[5] is not None]  # the jobs' id column
            completed.extend(done)
            if later:
                completed_after.extend(done)
            done[:] = taken
            if upgraded.is_set() and taken:
                after_upgrade.add("ours")

        def node_worker() -> None:
            later = upgraded.is_set()
            get = "SELECT * FROM app_jobs.get_job(%s, %s::text[])"
            job = value(node, get, "node-1", None, row=True)
            if job[0] is None:
                return
            job_id = str(job[0])  # node-postgres sends every parameter as untyped text
            if job[0] % 7 == 0 and job[7] == 1:  # attempts: some fail once, retried 2.7 s later
                value(node, "SELECT * FROM app_jobs.fail_job(%s, %s, %s)", "node-1", job_id, "x")
            elif value(node, "SELECT * FROM app_jobs.complete_job(%s, %s)", "node-1", job_id):
                completed.append(job[0])
                if later:
                    completed_after.append(job[0])
            if upgraded.is_set():
                after_upgrade.add("node")

        def node_scheduler() -> None:
            claim = "SELECT * FROM app_jobs.get_scheduled_job(%s, %s::text[])"
            value(scheduler, claim, "sched-1", None)
            try:
                value(scheduler, "SELECT * FROM app_jobs.run_scheduled_job(%s)", schedule)
            except psycopg.errors.RaiseException as exc:
                assert exc.diag.message_primary == "ALREADY_SCHEDULED"
            if upgraded.is_set():
                after_upgrade.add("scheduler")

        loops = [Loop(our_cycle), Loop(node_worker), Loop(node_scheduler)]
        for loop in loops:
            loop.start()
        try:
            deadline = time.monotonic() + 60
            while len(completed) < JOBS // 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert all(loop.steps > 5 for loop in loops), [loop.steps for loop in loops]
            started = time.monotonic()
            with empty_engine.begin() as connection:
                for statement in upgrade_statements(SCHEMA, 1, 2):
                    connection.execute(as_text(statement))
            took = time.monotonic() - started
            upgraded.set()
            while time.monotonic() < deadline and not (
                set(ids) <= set(completed) and len(after_upgrade) == 3
            ):
                assert all(loop.error is None for loop in loops), [loop.error for loop in loops]
                time.sleep(0.01)
        finally:
            for loop in loops:
                loop.stopping.set()
            for loop in loops:
                loop.join(10)
    assert [loop.error for loop in loops] == [None, None, None]
    assert after_upgrade == {"ours", "node", "scheduler"}
    assert set(ids) <= set(completed)
    assert len(completed) == len(set(completed)), "a job ran twice"
    # Version 2 records what the version 1 clients finish after the upgrade.
    with empty_engine.connect() as connection:
        recorded = (
            connection.execute(
                sql("SELECT job_id FROM app_jobs.job_history WHERE outcome = 'completed'")
            )
            .scalars()
            .all()
        )
    assert len(recorded) == len(set(recorded)) and set(recorded) <= set(completed)
    assert completed_after and set(completed_after) <= set(recorded)
    assert took < 5, took  # no lock waited for; measured ~0.1 s on a busy 2-core machine
    print(f"\nupgrade committed in {took * 1000:.0f} ms beside three version 1 clients")


DRAINED = 100_000


@pytest.mark.slow
def test_the_upgrade_of_a_queue_of_100000_jobs_that_a_worker_drains_loses_and_repeats_nothing(
    empty_engine: Engine,
) -> None:
    """Our worker drains 100,000 pending jobs of a version 1 schema; the upgrade commits
    while it does. Every job runs exactly once, and version 2 records the completions
    that come after it."""
    with empty_engine.begin() as connection:
        install(connection, SCHEMA, 1)
        connection.execute(
            sql(
                "SELECT count(*) FROM app_jobs.add_jobs(array_fill('n'::text, ARRAY[:n]),"
                " ARRAY(SELECT json_build_object('n', g) FROM generate_series(1, :n) g))"
            ),
            {"n": DRAINED},
        )
    runs: collections.Counter[int] = collections.Counter()
    tasks = TaskRegistry()
    tasks.add("n", lambda payload: runs.update([payload["n"]]))
    engine = on_schema(empty_engine, SCHEMA)
    worker = Worker(engine, tasks, schema=SCHEMA, concurrency=4)
    stats: list[Any] = []
    thread = threading.Thread(
        target=lambda: stats.append(worker.run(drain=True, install_signal_handlers=False))
    )
    thread.start()
    deadline = time.monotonic() + 300
    while sum(runs.values()) < DRAINED // 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    with empty_engine.begin() as connection:
        for statement in upgrade_statements(SCHEMA, 1, 2):
            connection.execute(as_text(statement))
    during = sum(runs.values())
    thread.join(300)
    assert not thread.is_alive()
    assert during < DRAINED, "the drain ended before the upgrade: the test proves nothing"
    assert sorted(runs) == list(range(1, DRAINED + 1))
    assert set(runs.values()) == {1}, "a job ran twice"
    with empty_engine.connect() as connection:
        left = connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one()
        recorded = connection.execute(
            sql("SELECT count(*), count(DISTINCT job_id) FROM app_jobs.job_history")
        ).one()
    assert left == 0
    assert recorded[0] == recorded[1] >= DRAINED - during - 1000  # a batch may straddle
    print(f"\n{during} of {DRAINED} jobs ran before the upgrade; {recorded[0]} recorded after")
