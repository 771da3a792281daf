"""Installing, upgrading and dropping the job schema on a real PostgreSQL."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from sqla_pgjobs import schema as schema_module
from sqla_pgjobs.schema import (
    LATEST_VERSION,
    install,
    install_statements,
    quote_schema,
    render,
)
from tests.helpers import SCHEMA, catalog, run_ops, sql

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import URL, Engine

# The SQL API: every function of the reference package plus ours, with its signature.
EXPECTED_FUNCTIONS = {
    "add_job": "db_id uuid, identifier text, payload json DEFAULT '{}'::json, "
    "job_key text DEFAULT NULL::text, queue_name text DEFAULT NULL::text, "
    "run_at timestamp with time zone DEFAULT now(), max_attempts integer DEFAULT 25, "
    "priority integer DEFAULT 0",
    "add_scheduled_job": "db_id uuid, identifier text, payload json DEFAULT '{}'::json, "
    "schedule_info json DEFAULT '{}'::json, job_key text DEFAULT NULL::text, "
    "queue_name text DEFAULT NULL::text, max_attempts integer DEFAULT 25, "
    "priority integer DEFAULT 0",
    "get_job": "worker_id text, task_identifiers text[] DEFAULT NULL::text[], "
    "job_expiry interval DEFAULT '04:00:00'::interval",
    "get_scheduled_job": "worker_id text, task_identifiers text[] DEFAULT NULL::text[], "
    "lease interval DEFAULT '00:05:00'::interval",
    "complete_job": "worker_id text, job_id bigint",
    "complete_jobs": "job_ids bigint[], job_expiry interval DEFAULT '04:00:00'::interval, "
    "force boolean DEFAULT false",
    "fail_job": "worker_id text, job_id bigint, error_message text DEFAULT NULL::text",
    "permanently_fail_jobs": "job_ids bigint[], error_message text DEFAULT NULL::text, "
    "job_expiry interval DEFAULT '04:00:00'::interval, force boolean DEFAULT false",
    "reschedule_jobs": "job_ids bigint[], run_at timestamp with time zone DEFAULT NULL::"
    "timestamp with time zone, priority integer DEFAULT NULL::integer, attempts integer "
    "DEFAULT NULL::integer, max_attempts integer DEFAULT NULL::integer, job_expiry interval "
    "DEFAULT '04:00:00'::interval, force boolean DEFAULT false",
    "release_jobs": "worker_id text, keep_job_ids bigint[] DEFAULT NULL::bigint[]",
    "release_scheduled_jobs": "worker_id text, ids bigint[] DEFAULT NULL::bigint[]",
    "run_scheduled_job": "id bigint, job_expiry interval DEFAULT '01:00:00'::interval, "
    "fire_time timestamp with time zone DEFAULT NULL::timestamp with time zone",
    "tg_add_job_with_row_id": "",
    "tg_add_job_with_row": "",
    "tg_add_job_with_fields": "",
    "trigger_job_with_fields": "",
    "json_build_object_apply": "arguments text[]",
    # Beyond the reference: the worker's batch calls and scheduled-job leases.
    "get_jobs": "worker_id text, task_identifiers text[] DEFAULT NULL::text[], "
    "job_expiry interval DEFAULT '04:00:00'::interval, max_jobs integer DEFAULT 1",
    "complete_job_batch": "worker_id text, job_ids bigint[]",
    "fail_job_batch": "worker_id text, job_ids bigint[], error_messages text[] DEFAULT "
    "NULL::text[]",
    "add_jobs": "identifiers text[], payloads json[] DEFAULT NULL::json[], db_ids uuid[] "
    "DEFAULT NULL::uuid[], job_keys text[] DEFAULT NULL::text[], queue_names text[] DEFAULT "
    "NULL::text[], run_ats timestamp with time zone[] DEFAULT NULL::timestamp with time "
    "zone[], max_attempts integer[] DEFAULT NULL::integer[], priorities integer[] DEFAULT "
    "NULL::integer[]",
    "get_scheduled_jobs": "worker_id text, task_identifiers text[] DEFAULT NULL::text[], "
    "lease interval DEFAULT '00:05:00'::interval, max_jobs integer DEFAULT 1",
    "renew_scheduled_jobs": "worker_id text, ids bigint[] DEFAULT NULL::bigint[], "
    "lease interval DEFAULT '00:05:00'::interval",
}


def test_installed_functions_have_the_reference_signatures(engine: Engine) -> None:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT p.proname, pg_get_function_arguments(p.oid) FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"
            ),
            {"s": SCHEMA},
        ).all()
    installed = dict(rows)
    assert len(installed) == len(rows), "no function is overloaded (untyped calls stay unambiguous)"
    for name, arguments in EXPECTED_FUNCTIONS.items():
        assert installed.get(name) == arguments, name


def test_security_definer_functions_pin_search_path(engine: Engine) -> None:
    with engine.connect() as connection:
        unpinned = (
            connection.execute(
                text(
                    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = :s AND p.prosecdef "
                    "AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)"
                ),
                {"s": SCHEMA},
            )
            .scalars()
            .all()
        )
    assert unpinned == []


def test_function_bodies_reach_the_database_exactly_as_written(engine: Engine) -> None:
    """Pins the escaping of the one DDL execution path: %, :=, ::, quotes and colons. (A
    function an upgrade step replaces is checked in its latest form.)"""
    bodies = {}
    for statement in install_statements(SCHEMA, LATEST_VERSION):
        match = re.search(
            rf"^CREATE (?:OR REPLACE )?FUNCTION {re.escape(quote_schema(SCHEMA))}\.(\w+)\("
            r".*\bAS \$\$(.*)\$\$$",
            statement,
            re.S | re.M,
        )
        if match:
            bodies[match.group(1)] = match.group(2)
    assert len(bodies) >= 30
    with engine.connect() as connection:
        stored = dict(
            connection.execute(
                text(
                    "SELECT p.proname, p.prosrc FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"
                ),
                {"s": SCHEMA},
            ).all()
        )
    for name, body in bodies.items():
        assert stored[name] == body, name
    assert "% 2" in stored["json_build_object_apply"]
    assert "'jobs:insert'" in stored["release_jobs"]


def test_installing_twice_is_refused_with_a_clear_message(engine: Engine) -> None:
    with (
        pytest.raises(
            DBAPIError, match=rf"the job schema is already installed \(version {LATEST_VERSION}\)"
        ),
        engine.begin() as connection,
    ):
        install(connection, SCHEMA)


def test_schema_under_an_awkward_name_matches_the_default(empty_database_url: URL) -> None:
    awkward = 'Job Queue\'s "Schema"'
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            install(connection, "app_jobs", LATEST_VERSION)
            install(connection, awkward, LATEST_VERSION)
        with engine.begin() as connection:
            assert catalog(connection, awkward) == catalog(connection, "app_jobs")
            job = connection.execute(
                text(render("SELECT * FROM app_jobs.add_job(NULL, 'task', '{\"a\": 1}')", awkward))
            ).one()
            taken = connection.execute(
                text(render("SELECT * FROM app_jobs.get_job('worker-1')", awkward))
            ).one()
            assert taken.id == job.id
            assert connection.execute(text("SELECT count(*) FROM app_jobs.jobs")).scalar_one() == 0
    finally:
        engine.dispose()


def test_two_installers_at_once_run_one_after_the_other(empty_database_url: URL) -> None:
    engine = create_engine(empty_database_url)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def installer() -> None:
        barrier.wait()
        try:
            with engine.begin() as connection:
                install(connection, SCHEMA)
            outcomes.append("installed")
        except DBAPIError as exc:
            outcomes.append(str(exc.orig))

    threads = [threading.Thread(target=installer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engine.dispose()
    assert len(outcomes) == 2
    assert outcomes.count("installed") == 1
    [refusal] = [outcome for outcome in outcomes if outcome != "installed"]
    assert "the job schema is already installed (version 1)" in refusal


def test_drop_refuses_while_user_triggers_depend_on_it(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (id serial PRIMARY KEY)"))
        connection.execute(
            sql(
                "CREATE TRIGGER enqueue AFTER INSERT ON orders FOR EACH ROW "
                "EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('process_order')"
            )
        )
    with (
        pytest.raises(DBAPIError, match="trigger enqueue on table orders") as info,
        engine.begin() as connection,
    ):
        schema_module.drop(connection, SCHEMA)
    assert info.value.orig is not None
    assert info.value.orig.sqlstate == "2BP01"  # type: ignore[attr-defined]

    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER enqueue ON orders"))
        schema_module.drop(connection, SCHEMA)
        assert (
            connection.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": SCHEMA}
            ).scalar_one()
            == 0
        )
        # The user's table is untouched.
        assert connection.execute(text("SELECT count(*) FROM orders")).scalar_one() == 0


def test_latest_schema_equals_v1_plus_every_real_upgrade_step(
    new_database: Callable[..., URL],
) -> None:
    """The CI check of the shipped files: a fresh install at the latest version and version
    1 upgraded one real step at a time have the same catalog."""
    direct = create_engine(new_database())
    stepwise = create_engine(new_database())
    try:
        run_ops(direct, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=LATEST_VERSION))
        run_ops(stepwise, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=1))
        for version in range(2, LATEST_VERSION + 1):
            run_ops(
                stepwise,
                lambda op, v=version: op.upgrade_pgjobs_schema(
                    v, from_version=v - 1, schema=SCHEMA
                ),
            )
        with direct.connect() as a, stepwise.connect() as b:
            assert catalog(a) == catalog(b)
            assert a.execute(sql("SELECT max(version) FROM app_jobs.migrations")).scalar_one() == (
                LATEST_VERSION
            )
    finally:
        direct.dispose()
        stepwise.dispose()


@pytest.mark.usefixtures("fake_version_3")
def test_latest_directly_equals_v1_plus_every_upgrade(new_database: Callable[..., URL]) -> None:
    direct = create_engine(new_database())
    stepwise = create_engine(new_database())
    try:
        run_ops(direct, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=3))
        run_ops(stepwise, lambda op: op.create_pgjobs_schema(schema=SCHEMA))
        with stepwise.connect() as connection:
            before = catalog(connection)
        # Two steps in one op: the real 1 -> 2, then the fixture's 2 -> 3.
        run_ops(stepwise, lambda op: op.upgrade_pgjobs_schema(3, from_version=1, schema=SCHEMA))
        with direct.connect() as a, stepwise.connect() as b:
            assert catalog(a) == catalog(b)
            assert "hello" in {row[0] for row in catalog(b)["functions"]}
        # Upgrading again from 2 is refused by the SQL's own version check.
        with pytest.raises(DBAPIError, match="not at version 2"):
            run_ops(stepwise, lambda op: op.upgrade_pgjobs_schema(3, from_version=2, schema=SCHEMA))
        run_ops(stepwise, lambda op: op.downgrade_pgjobs_schema(1, from_version=3, schema=SCHEMA))
        with stepwise.connect() as connection:
            assert catalog(connection) == before
    finally:
        direct.dispose()
        stepwise.dispose()


def test_s6_public_gets_nothing(engine: Engine) -> None:
    with engine.connect() as connection:
        functions = (
            connection.execute(
                text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = :s AND has_function_privilege('public', p.oid, 'EXECUTE')"
                ),
                {"s": SCHEMA},
            )
            .scalars()
            .all()
        )
        tables = (
            connection.execute(
                text(
                    "SELECT c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :s AND c.relkind = 'r' AND has_table_privilege("
                    "'public', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')"
                ),
                {"s": SCHEMA},
            )
            .scalars()
            .all()
        )
        usage = connection.execute(
            text("SELECT has_schema_privilege('public', :s, 'USAGE')"), {"s": SCHEMA}
        ).scalar_one()
    assert functions == []
    assert tables == []
    assert usage is False


def test_a_percent_sign_in_the_schema_name(empty_engine: Engine) -> None:
    """text() doubles % for psycopg online; the schema's own name must not be doubled too."""
    with empty_engine.begin() as connection:
        install(connection, '50% "jobs"')
        job = connection.execute(
            text(render("SELECT * FROM app_jobs.add_job(NULL, 'x')", '50% "jobs"'))
        ).one()
        assert job.id == 1
        assert (
            connection.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": '50% "jobs"'}
            ).scalar_one()
            == 1
        )
