"""Security promises under attack (issue 8, part 3), on a real server.

1. Injection: hostile row values, column names, table names and task names through every
   trigger payload mode (the seed's four trigger functions and the model triggers' RowId,
   Row and Fields) land in the payload verbatim and execute nothing (S1).
2. search_path hijack: every SECURITY DEFINER function pins its search_path, and a role
   that shadows every built-in the job functions use (functions, aggregates, operators)
   on its own search_path runs each SECURITY DEFINER function without its trap firing (S2).
3. Code run as the owner: a role's own cast to json on a column type of its own table
   would run with the job schema owner's rights inside the trigger functions; it is refused.
4. Tenants: no path lets tenant B overwrite or detach tenant A's job or schedule by key (S4).
5. Roles: an enqueue role and a worker role cannot drop, alter, extend or bypass the
   schema, call its internal functions or re-grant what they were given (S6); PUBLIC has
   nothing on any object of the schema.

Roles are cluster-wide: each role made here has a unique name and is dropped afterwards
(the ``make_role`` fixture, tests/roles.py).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sqla_pgjobs import InvalidArgumentError
from sqla_pgjobs.functions import (
    JobSpec,
    add_job,
    add_jobs,
    add_scheduled_job,
    cancel_jobs,
    complete_job,
    complete_job_batch,
    complete_jobs,
    discard_jobs,
    fail_job,
    fail_job_batch,
    fail_jobs_for_good,
    get_job,
    get_jobs,
    get_scheduled_job,
    get_scheduled_jobs,
    heartbeat,
    next_run_at,
    pause_queue,
    pause_task,
    permanently_fail_jobs,
    prune_job_history,
    recover_jobs,
    release_jobs,
    release_scheduled_jobs,
    renew_scheduled_jobs,
    reschedule_jobs,
    resume_queue,
    resume_task,
    retry_jobs_at,
    run_scheduled_job,
    set_history_retention,
)
from sqla_pgjobs.schema import as_text
from sqla_pgjobs.triggers import Fields, JobTrigger, Row, RowId, create_trigger_sql
from tests.helpers import SCHEMA, catalog, quote_schema, sql, translated
from tests.roles import Role, ident, is_superuser
from tests.security.test_access import assert_refused, grant, role_at, sqlstate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Connection, Engine

TENANT_A = uuid.UUID("5b720132-17d5-424d-9bcb-ee7b17c13d43")
TENANT_B = uuid.UUID("0f6d3a4e-8d0c-4f55-a3b5-2d9b8f1c7e21")
WORKER = "worker-1"

#: Values that break naively built SQL, format() strings, JSON or dollar quoting.
HOSTILE = [
    "O'Brien",
    "x'); DROP TABLE victims; --",
    "', (SELECT rolpassword FROM pg_authid LIMIT 1)) --",
    "$$; DROP TABLE victims; $$",
    "%s %L %I %1$s",
    '\\"}, "id": 666, "x": {"',
    'back\\slash "quotes" \n newline \t tab \r',
    "日本語 ✓ \u2028 \U0001f600",
    "",
]
#: A task name, a table name and a column name that are each an attack of their own.
TASK = "O'Brien's \"task\"; DROP TABLE victims; -- $$ %s"
TABLE = 'orders "x"); DROP TABLE victims; --'
COLUMN = "x'); DROP TABLE victims; --"


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def victims_intact(connection: Connection) -> bool:
    return connection.execute(text("SELECT count(*) FROM victims")).scalar_one() == 0


def job_payloads(connection: Connection) -> list[tuple[Any, ...]]:
    rows = connection.execute(
        sql(
            "SELECT task_identifier, payload, database_id FROM app_jobs.jobs"
            " ORDER BY (payload->>'ord')::int NULLS LAST, id"
        )
    ).all()
    return [tuple(row) for row in rows]


# --- 1. Injection through every trigger payload mode ----------------------------------------

#: name -> (how to create the trigger on TABLE, the payload expected for a row).
LEGACY_MODES: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "tg_add_job_with_row_id": (
        f"{literal(str(TENANT_A))}, {literal(TASK)}, {literal(COLUMN)}",
        lambda row: {"id": row[COLUMN]},
    ),
    "tg_add_job_with_row": (f"{literal(str(TENANT_A))}, {literal(TASK)}", lambda row: row),
    "tg_add_job_with_fields": (
        f"{literal(str(TENANT_A))}, {literal(TASK)}, {literal(COLUMN)}, 'ord'",
        lambda row: {COLUMN: row[COLUMN], "ord": row["ord"]},
    ),
    "trigger_job_with_fields": (
        f"{literal(TASK)}, {literal(COLUMN)}, 'ord'",
        lambda row: {COLUMN: row[COLUMN], "ord": row["ord"]},
    ),
}
MODEL_MODES: dict[str, tuple[Any, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "RowId": (RowId(COLUMN), lambda row: {"id": row[COLUMN]}),
    "Row": (Row(), lambda row: row),
    "Fields": (Fields(COLUMN, "ord"), lambda row: {COLUMN: row[COLUMN], "ord": row["ord"]}),
}


def hostile_table(connection: Connection) -> None:
    connection.execute(text("CREATE TABLE victims (id int)"))
    connection.execute(
        text(f"CREATE TABLE {ident(TABLE)} (ord int PRIMARY KEY, {ident(COLUMN)} text)")
    )


def write_hostile_rows(connection: Connection) -> list[dict[str, Any]]:
    """Insert, update and delete a row per hostile value; the rows each event saw."""
    seen: list[dict[str, Any]] = []
    table, column = ident(TABLE), ident(COLUMN)
    for ord_, value in enumerate(HOSTILE):
        connection.execute(
            text(f"INSERT INTO {table} (ord, {column}) VALUES (:o, :v)"), {"o": ord_, "v": value}
        )
        seen.append({"ord": ord_, COLUMN: value})
    for ord_, value in enumerate(HOSTILE):
        changed = value[::-1] + "'"
        connection.execute(
            text(f"UPDATE {table} SET {column} = :v WHERE ord = :o"), {"o": ord_, "v": changed}
        )
        seen.append({"ord": ord_, COLUMN: changed})
    connection.execute(text(f"DELETE FROM {table}"))
    seen.extend({"ord": ord_, COLUMN: value[::-1] + "'"} for ord_, value in enumerate(HOSTILE))
    return seen


@pytest.mark.parametrize("function", sorted(LEGACY_MODES))
def test_s1_seed_trigger_functions_keep_hostile_values_and_names_verbatim(
    engine: Engine, function: str
) -> None:
    arguments, expected = LEGACY_MODES[function]
    with engine.begin() as connection:
        hostile_table(connection)
        connection.execute(
            sql(
                f"CREATE TRIGGER enqueue AFTER INSERT OR UPDATE OR DELETE ON {ident(TABLE)}"
                f" FOR EACH ROW EXECUTE FUNCTION app_jobs.{function}({arguments})"
            )
        )
        seen = write_hostile_rows(connection)
        tenant = None if function == "trigger_job_with_fields" else TENANT_A
        found = connection.execute(
            sql("SELECT task_identifier, payload, database_id FROM app_jobs.jobs ORDER BY id")
        ).all()
        assert [tuple(row) for row in found] == [(TASK, expected(row), tenant) for row in seen]
        assert victims_intact(connection)


@pytest.mark.parametrize("mode", sorted(MODEL_MODES))
def test_s1_model_triggers_keep_hostile_values_and_names_verbatim(
    engine: Engine, mode: str
) -> None:
    payload, expected = MODEL_MODES[mode]
    declared = JobTrigger(
        TASK,
        on=("insert", "update", "delete"),
        payload=payload,
        key=f"k'{{{COLUMN}}}",
        queue="q:{ord}",
        name="enqueue",
        job_schema=SCHEMA,
    )
    with engine.begin() as connection:
        hostile_table(connection)
        connection.execute(as_text(create_trigger_sql(declared, TABLE)))
        seen = write_hostile_rows(connection)
        found = connection.execute(
            sql("SELECT task_identifier, payload, key, queue_name FROM app_jobs.jobs ORDER BY id")
        ).all()
        # One pending job per key: the delete's job replaces the update's (same key).
        final = {row[COLUMN]: row for row in seen}
        assert sorted((tuple(row) for row in found), key=lambda row: row[2]) == sorted(
            (
                (TASK, expected(row), f"k'{value}", f"q:{row['ord']}")
                for value, row in final.items()
            ),
            key=lambda row: row[2],
        )
        assert victims_intact(connection)


@pytest.fixture
def notes(engine: Engine) -> Engine:
    """A table with a Row trigger and a Fields trigger, for the property below."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE victims (id int)"))
        connection.execute(text("CREATE TABLE notes (id int PRIMARY KEY, body text)"))
        for name, payload in [("whole", Row()), ("fields", Fields("body"))]:
            declared = JobTrigger(name, payload=payload, name=name, job_schema=SCHEMA)
            connection.execute(as_text(create_trigger_sql(declared, "notes")))
        connection.execute(
            sql(
                "CREATE TRIGGER seed AFTER INSERT ON notes FOR EACH ROW"
                " EXECUTE FUNCTION app_jobs.tg_add_job_with_fields('seed', 'body')"
            )
        )
    return engine


# PostgreSQL text holds any Unicode character but NUL; st.text() leaves out surrogates.
ROW_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)


@settings(
    max_examples=25,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=ROW_TEXT)
def test_s1_any_text_lands_verbatim_in_every_payload_mode(notes: Engine, value: str) -> None:
    with notes.connect() as connection:
        transaction = connection.begin()
        try:
            connection.execute(text("INSERT INTO notes VALUES (1, :v)"), {"v": value})
            found = dict(
                connection.execute(sql("SELECT task_identifier, payload FROM app_jobs.jobs")).all()
            )
            assert found == {
                "whole": {"id": 1, "body": value},
                "fields": {"body": value},
                "seed": {"body": value},
            }
            assert victims_intact(connection)
        finally:
            transaction.rollback()


# --- 2. search_path hijack against every SECURITY DEFINER function ----------------------------

DEFINERS = """
SELECT p.proname::text, p.proconfig, p.prosrc
  FROM pg_proc p
 WHERE p.pronamespace = (SELECT t.typnamespace FROM pg_type t
                          WHERE t.oid = pg_typeof(NULL::app_jobs.jobs))
   AND p.prosecdef
 ORDER BY 1
"""


def definer_functions(engine: Engine) -> dict[str, tuple[list[str], str]]:
    with engine.connect() as connection:
        rows = connection.execute(sql(DEFINERS)).all()
    return {name: (config, source) for name, config, source in rows}


def test_s2_every_security_definer_function_pins_search_path_and_builds_no_sql(
    engine: Engine,
) -> None:
    definers = definer_functions(engine)
    assert len(definers) >= 25
    for name, (config, source) in definers.items():
        assert config is not None and "search_path=pg_catalog, pg_temp" in config, name
        # No dynamic SQL at all: nothing a caller passes can become a statement.
        assert not re.search(r"\bEXECUTE\b", source, re.IGNORECASE), name


#: Aggregates and operators the job functions use, shadowed by traps (functions are found
#: in the function bodies, below).
TRAP_AGGREGATES = [
    ("string_agg", "text, text", "text", "text, text, text"),
    ("min", "integer", "integer", "integer, integer"),
    ("min", "timestamptz", "timestamptz", "timestamptz, timestamptz"),
    ("max", "integer", "integer", "integer, integer"),
    ("array_agg", "text", "text", "text, text"),
]
TRAP_OPERATORS = [
    ("=", "text", "text", "boolean"),
    ("=", "bigint", "bigint", "boolean"),
    ("=", "integer", "integer", "boolean"),
    ("<>", "integer", "integer", "boolean"),
    ("<", "integer", "integer", "boolean"),
    (">", "integer", "integer", "boolean"),
    ("<=", "integer", "integer", "boolean"),
    (">=", "integer", "integer", "boolean"),
    ("<", "timestamptz", "timestamptz", "boolean"),
    (">", "timestamptz", "timestamptz", "boolean"),
    ("<=", "timestamptz", "timestamptz", "boolean"),
    (">=", "timestamptz", "timestamptz", "boolean"),
    ("+", "timestamptz", "interval", "timestamptz"),
    ("-", "timestamptz", "interval", "timestamptz"),
    ("+", "timestamptz", "timestamptz", "timestamptz"),
    ("-", "integer", "integer", "integer"),
    ("+", "integer", "integer", "integer"),
    ("||", "text", "text", "text"),
    ("||", "bigint[]", "bigint", "bigint[]"),
    ("||", "text[]", "text", "text[]"),
    ("?", "jsonb", "text", "boolean"),
    ("->", "jsonb", "text", "jsonb"),
    ("->>", "jsonb", "text", "text"),
    ("->", "jsonb", "integer", "jsonb"),
    ("~*", "text", "text", "boolean"),
    ("<=", "interval", "interval", "boolean"),
]
CATALOG_OVERLOADS = """
SELECT p.proname::text, pg_get_function_identity_arguments(p.oid),
       pg_get_function_result(p.oid)
  FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
   AND p.proname = ANY (:names)
   AND pg_get_function_identity_arguments(p.oid) !~ '"any"|internal|cstring|anymultirange'
   AND pg_get_function_result(p.oid) !~ 'internal|cstring|trigger|record|"any"'
 ORDER BY 1, 2
"""


def trap_body(name: str) -> str:
    return f"$$ BEGIN RAISE EXCEPTION 'HIJACKED %', {literal(name)}; END $$"


def lay_traps(attacker: Engine, admin_engine: Engine) -> int:
    """Shadow, in the attacker's schema ``evil``, every pg_catalog function whose name
    appears in a function of the job schema, and the aggregates and operators above, with
    functions that raise HIJACKED. Returns how many traps were laid."""
    with admin_engine.connect() as connection:
        sources = connection.execute(
            sql(
                "SELECT string_agg(p.prosrc, ' ') FROM pg_proc p WHERE p.pronamespace ="
                " (SELECT t.typnamespace FROM pg_type t"
                "   WHERE t.oid = pg_typeof(NULL::app_jobs.jobs))"
            )
        ).scalar_one()
        names = sorted(set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*\(", sources.lower())))
        overloads = connection.execute(text(CATALOG_OVERLOADS), {"names": names}).all()
    laid = 0
    with attacker.connect() as connection:
        for name, arguments, result in overloads:
            try:
                with connection.begin():
                    connection.execute(
                        text(
                            f"CREATE FUNCTION evil.{ident(name)}({arguments}) RETURNS {result}"
                            f" LANGUAGE plpgsql AS {trap_body(name)}"
                        )
                    )
                laid += 1
            except DBAPIError:
                pass  # a polymorphic signature plpgsql cannot take: not a function we shadow
        connection.begin()
        for i, (name, argument, state, step) in enumerate(TRAP_AGGREGATES):
            connection.execute(
                text(
                    f"CREATE FUNCTION evil.agg_step_{i}({step}) RETURNS {state}"
                    f" LANGUAGE plpgsql AS {trap_body(name)}"
                )
            )
            connection.execute(
                text(
                    f"CREATE AGGREGATE evil.{name}({argument})"
                    f" (SFUNC = evil.agg_step_{i}, STYPE = {state})"
                )
            )
            laid += 1
        for i, (operator, left, right, result) in enumerate(TRAP_OPERATORS):
            connection.execute(
                text(
                    f"CREATE FUNCTION evil.op_{i}({left}, {right}) RETURNS {result}"
                    f" LANGUAGE plpgsql AS {trap_body(operator)}"
                )
            )
            connection.execute(
                text(
                    f"CREATE OPERATOR evil.{operator} (LEFTARG = {left}, RIGHTARG = {right},"
                    f" FUNCTION = evil.op_{i})"
                )
            )
            laid += 1
        connection.commit()
    return laid


@pytest.fixture
def hijacker(
    engine: Engine, admin: Engine, make_role: Callable[..., Role]
) -> Iterator[tuple[Role, Engine]]:
    """An operator-level role whose search_path starts with its own schema ``evil``, full
    of traps; pg_catalog comes after it, so an unpinned function would fall in."""
    role = role_at(make_role, admin, "operator")
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA evil AUTHORIZATION {ident(role.name)}"))
    plain = create_engine(role.engine.url)
    try:
        assert lay_traps(plain, admin) > 50
    finally:
        plain.dispose()
    hijacking = translated(
        create_engine(
            role.engine.url, connect_args={"options": "-c search_path=evil,pg_catalog,public"}
        )
    )
    yield role, hijacking
    hijacking.dispose()
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA evil CASCADE"))


def test_s2_control_the_traps_catch_an_unpinned_definer_function(
    engine: Engine, hijacker: tuple[Role, Engine]
) -> None:
    role, hijacking = hijacker
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION public.unpinned(t text) RETURNS integer LANGUAGE plpgsql"
                " SECURITY DEFINER AS $$ BEGIN RETURN length(t); END $$"
            )
        )
        connection.execute(
            text(f"GRANT EXECUTE ON FUNCTION public.unpinned(text) TO {ident(role.name)}")
        )
    with pytest.raises(DBAPIError, match="HIJACKED length"):
        with hijacking.begin() as connection:
            connection.execute(text("SELECT public.unpinned('x')"))


def hijack_scenario(hijacking: Engine, admin: Engine) -> set[str]:
    """Call every SECURITY DEFINER function of the job schema as the hijacker, each on a
    path that does real work; return the names of the functions called."""
    called: set[str] = set()

    def run(name: str, statement: Any, **params: Any) -> list[Any]:
        called.add(name)
        with hijacking.begin() as connection:
            return list(connection.execute(statement, params).all())

    # Work for recover_jobs: a registered worker gone silent, and an expired foreign lock.
    with admin.begin() as connection:
        stale = connection.execute(add_job("stale")).one().id
        connection.execute(
            sql(
                "UPDATE app_jobs.jobs SET locked_by = 'node-old', attempts = 1,"
                " locked_at = now() - interval '5 hours' WHERE id = :id"
            ),
            {"id": stale},
        )
        connection.execute(
            sql(
                "INSERT INTO app_jobs.workers (worker_id, heartbeat_timeout, last_heartbeat)"
                " VALUES ('gone-1', interval '1 second', now() - interval '1 hour')"
            )
        )

    (keyed,) = run("add_job", add_job("a", {"n": 1}, job_key="k1", queue_name="q1"))
    run("add_job", add_job("a", {"n": 2}, job_key="k1", db_id=TENANT_A))
    bulk = run("add_jobs", add_jobs([JobSpec("b", 1), JobSpec("b", 2, job_key="k2")]))
    assert len(bulk) == 2
    run("add_jobs", sql("SELECT id FROM app_jobs.add_jobs(ARRAY['raw'])"))
    assert run("heartbeat", heartbeat(WORKER)) == [(False,)]
    run("recover_jobs", recover_jobs(job_expiry=timedelta(hours=1)))
    assert run("next_run_at", next_run_at())[0][0] is not None
    taken = run("get_jobs", get_jobs(WORKER, max_jobs=3))
    assert len(taken) == 3
    assert len(run("get_job", get_job(WORKER))) == 1
    ids = [row.id for row in taken]
    assert [row.id for row in run("complete_job", complete_job(WORKER, ids[0]))] == ids[:1]
    assert len(run("complete_job_batch", complete_job_batch(WORKER, ids[1:2]))) == 1
    assert len(run("fail_job", fail_job(WORKER, ids[2], "boom"))) == 1
    run("get_job", get_job(WORKER))
    run("fail_job_batch", fail_job_batch(WORKER, [keyed.id, stale], ["x", "y"]))
    run("release_jobs", release_jobs(WORKER, [1]))
    run("release_jobs", release_jobs(WORKER))
    cycle = sql(
        "SELECT c.completed, ARRAY(SELECT t.id FROM pg_catalog.unnest(c.taken) AS t) AS taken"
        " FROM app_jobs.worker_cycle(:w, :done, NULL, NULL, NULL, NULL, :n) AS c"
    )
    [(_, cycled)] = run("worker_cycle", cycle, w=WORKER, done=None, n=2)
    assert cycled
    [(completed, _)] = run("worker_cycle", cycle, w=WORKER, done=cycled, n=0)
    assert completed == len(cycled)
    with admin.connect() as connection:
        remaining = connection.execute(sql("SELECT id FROM app_jobs.jobs ORDER BY id")).scalars()
        left = list(remaining)
    run("reschedule_jobs", reschedule_jobs(left[:1], priority=5, run_at=datetime.now(UTC)))
    run("permanently_fail_jobs", permanently_fail_jobs(left[1:2], "no"))
    run("complete_jobs", complete_jobs(left[2:3]))
    (spare,) = run("add_job", add_job("spare"))
    assert [row.id for row in run("discard_jobs", discard_jobs([spare.id]))] == [spare.id]

    (schedule,) = run("add_scheduled_job", add_scheduled_job("tick", {"n": 1}, job_key="s1"))
    run("add_scheduled_job", add_scheduled_job("tock", None, "0 3 * * *"))
    assert len(run("get_scheduled_job", get_scheduled_job(WORKER, ["tick"]))) == 1
    assert len(run("get_scheduled_jobs", get_scheduled_jobs(WORKER, max_jobs=5))) == 1
    run("add_scheduled_job", add_scheduled_job("tick", {"n": 2}, job_key="s1"))  # claimed path
    renewed = run("renew_scheduled_jobs", renew_scheduled_jobs(WORKER))
    assert len(renewed) == 1
    with admin.connect() as connection:
        tick = connection.execute(
            sql("SELECT id FROM app_jobs.scheduled_jobs WHERE key = 's1'")
        ).scalar_one()
    assert len(run("run_scheduled_job", run_scheduled_job(tick))) == 1
    run("run_scheduled_job", run_scheduled_job(schedule.id))  # gone: the NULL row
    run("release_scheduled_jobs", release_scheduled_jobs(WORKER, [tick]))
    run("release_scheduled_jobs", release_scheduled_jobs(WORKER))

    # The job history (version 2): a retention rule, and a prune that deletes rows the
    # calls above recorded.
    rule = set_history_retention("completed", timedelta(0), task_identifier="quiet")
    assert [row.keep for row in run("set_history_retention", rule)] == [timedelta(0)]
    [(pruned,)] = run("prune_job_history", prune_job_history(older_than=timedelta(microseconds=1)))
    assert pruned > 0
    claim = sql("SELECT app_jobs.claim_maintenance('prune_job_history', :w, interval '1 hour')")
    assert run("claim_maintenance", claim, w=WORKER) == [(True,)]
    # Pausing and resuming (version 2).
    assert run("pause_queue", pause_queue("q1")) == [(True,)]
    assert run("resume_queue", resume_queue("q1")) == [(True,)]
    assert run("pause_task", pause_task("a")) == [(True,)]
    assert run("resume_task", resume_task("a")) == [(True,)]
    # Cancelling (version 2): a waiting job at once; running ones by request, ended by a
    # failed run and by a release.
    (waiting,) = run("add_job", add_job("to-cancel"))
    run("heartbeat", heartbeat(WORKER))
    (running,) = run("add_job", add_job("to-stop"))
    (given_back,) = run("add_job", add_job("to-stop"))
    assert len(run("get_jobs", get_jobs(WORKER, ["to-stop"], max_jobs=2))) == 2
    results = run("cancel_jobs", cancel_jobs([waiting.id, running.id, given_back.id]))
    assert [row.result for row in results] == ["cancelled", "cancel_requested", "cancel_requested"]
    requested = sql("SELECT app_jobs.cancel_requested_jobs(:w)")
    assert run("cancel_requested_jobs", requested, w=WORKER) == [([running.id, given_back.id],)]
    run("fail_job_batch", fail_job_batch(WORKER, [running.id], ["stopped"]))
    run("release_jobs", release_jobs(WORKER))
    (doomed,) = run("add_job", add_job("typed", {"bad": True}))
    assert len(run("get_jobs", get_jobs(WORKER, ["typed"]))) == 1
    failed = run("fail_jobs_for_good", fail_jobs_for_good(WORKER, [doomed.id], ["bad payload"]))
    assert [(row.id, row.attempts) for row in failed] == [(doomed.id, doomed.max_attempts)]
    (later,) = run("add_job", add_job("typed", {"later": True}))
    (snoozed,) = run("add_job", add_job("typed", {"snooze": True}))
    assert len(run("get_jobs", get_jobs(WORKER, ["typed"], max_jobs=2))) == 2
    when = datetime.now(UTC) + timedelta(hours=1)
    retry = retry_jobs_at(WORKER, [later.id, snoozed.id], [when, when], ["x", None], [False, True])
    assert sorted(row.id for row in run("retry_jobs_at", retry)) == [later.id, snoozed.id]
    run("release_jobs", release_jobs(WORKER))
    # Tracing's: store a context with a waiting job, and read it back.
    (traced,) = run("add_job", add_job("traced"))
    context = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    stored = sql("SELECT app_jobs.set_trace_contexts(ARRAY[:id]::bigint[], CAST(:c AS jsonb))")
    assert run("set_trace_contexts", stored, id=traced.id, c=context) == [(1,)]
    read = sql("SELECT job_id FROM app_jobs.trace_contexts(ARRAY[:id]::bigint[])")
    assert run("trace_contexts", read, id=traced.id) == [(traced.id,)]

    # The trigger functions, on the hijacker's own table.
    with hijacking.begin() as connection:
        connection.execute(text("CREATE TABLE evil.t (id int PRIMARY KEY, name text)"))
        for function, arguments in [
            ("tg_add_job_with_row_id", f"'{TENANT_A}', 'tr'"),
            ("tg_add_job_with_row", "'tr'"),
            ("tg_add_job_with_fields", f"'{TENANT_A}', 'tr', 'name'"),
            ("trigger_job_with_fields", "'tr', 'name', 'id'"),
        ]:
            connection.execute(
                sql(
                    f"CREATE TRIGGER {function} AFTER INSERT OR UPDATE OR DELETE ON evil.t"
                    f" FOR EACH ROW EXECUTE FUNCTION app_jobs.{function}({arguments})"
                )
            )
            called.add(function)
        declared = JobTrigger(
            "model",
            on=("insert", "update", "delete"),
            payload=Fields("name"),
            key="m:{id}",
            queue="q:{name}",
            tenant="{name}",
            priority=3,
            max_attempts=2,
            delay=timedelta(seconds=5),
            job_schema=SCHEMA,
        )
        connection.execute(as_text(create_trigger_sql(declared, "t", "evil")))
        called.update({"tg_add_job", "add_job_from_trigger"})
    with hijacking.begin() as connection:
        connection.execute(text(f"INSERT INTO evil.t VALUES (1, '{TENANT_B}')"))
        connection.execute(text(f"UPDATE evil.t SET name = '{TENANT_A}'"))
        connection.execute(text("DELETE FROM evil.t"))
    with admin.connect() as connection:
        counts = dict(
            connection.execute(
                sql("SELECT task_identifier, count(*) FROM app_jobs.jobs GROUP BY 1")
            ).all()
        )
    # The model trigger keys per tenant: B's insert, then A's update replaced by its delete.
    assert (counts["tr"], counts["model"]) == (12, 2)
    return called


def test_s2_hijacked_search_path_springs_no_trap_in_any_security_definer_function(
    engine: Engine, admin: Engine, hijacker: tuple[Role, Engine]
) -> None:
    role, hijacking = hijacker
    called = hijack_scenario(hijacking, admin)
    assert called == set(definer_functions(engine))
    with engine.connect() as connection:
        assert not connection.execute(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role.name}
        ).scalar_one()


# --- 3. A role's own cast to json must not run with the owner's rights --------------------------

#: Column types that carry the role's enum ``evil.mood``, whose cast to json is a trap.
MOOD_COLUMNS = ["evil.mood", "evil.mood[]", "evil.pair", "evil.sad", "evil.pair[]"]
SEED_TRIGGERS = [
    ("tg_add_job_with_row_id", "'t', 'id'"),
    ("tg_add_job_with_row", "'t'"),
    ("tg_add_job_with_fields", "'t', 'id', 'v'"),
    ("trigger_job_with_fields", "'t', 'v'"),
]


@pytest.fixture
def caster(engine: Engine, admin: Engine, make_role: Callable[..., Role]) -> Iterator[Role]:
    """An enqueue role with a schema of its own holding an enum whose cast to json makes
    whoever runs it a superuser."""
    role = role_at(make_role, admin, "enqueue")
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA evil AUTHORIZATION {ident(role.name)}"))
    with role.engine.begin() as connection:
        connection.execute(text("CREATE TYPE evil.mood AS ENUM ('happy', 'sad')"))
        connection.execute(text("CREATE TYPE evil.pair AS (a int, m evil.mood)"))
        connection.execute(text("CREATE DOMAIN evil.sad AS evil.mood"))
        connection.execute(
            text(
                "CREATE FUNCTION evil.mood_json(m evil.mood) RETURNS json LANGUAGE plpgsql AS"
                f" $$ BEGIN EXECUTE 'ALTER ROLE {ident(role.name)} SUPERUSER';"
                " RETURN to_json(m::text); END $$"
            )
        )
        connection.execute(
            text("CREATE CAST (evil.mood AS json) WITH FUNCTION evil.mood_json(evil.mood)")
        )
    yield role
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA evil CASCADE"))


def mood_value(column_type: str) -> str:
    return {
        "evil.mood": "'happy'",
        "evil.mood[]": "ARRAY['happy']::evil.mood[]",
        "evil.pair": "ROW(1, 'happy')::evil.pair",
        "evil.sad": "'sad'",
        "evil.pair[]": "ARRAY[ROW(1, 'happy')::evil.pair]",
    }[column_type]


#: Every trigger function with the enum column itself, and the model trigger with the enum
#: hidden in an array, a composite, a domain and an array of composites.
CAST_CASES = [(function, arguments, "evil.mood") for function, arguments in SEED_TRIGGERS] + [
    ("tg_add_job", None, column_type) for column_type in MOOD_COLUMNS
]


@pytest.mark.parametrize(("function", "arguments", "column_type"), CAST_CASES)
def test_s6_own_cast_to_json_is_refused_instead_of_running_as_the_owner(
    engine: Engine, caster: Role, function: str, arguments: str | None, column_type: str
) -> None:
    with caster.engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE evil.t (id int PRIMARY KEY, v {column_type})"))
        if arguments is None:
            declared = JobTrigger("t", payload=Row(), job_schema=SCHEMA)
            connection.execute(as_text(create_trigger_sql(declared, "t", "evil")))
        else:
            connection.execute(
                sql(
                    f"CREATE TRIGGER t AFTER INSERT ON evil.t FOR EACH ROW"
                    f" EXECUTE FUNCTION app_jobs.{function}({arguments})"
                )
            )
    with pytest.raises(DBAPIError) as raised:
        with caster.engine.begin() as connection:
            connection.execute(text(f"INSERT INTO evil.t VALUES (1, {mood_value(column_type)})"))
    assert sqlstate(raised.value) == "42501"
    assert "evil.mood_json(evil.mood)" in str(raised.value)
    assert not is_superuser(engine, caster.name)
    with engine.connect() as connection:
        assert connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one() == 0


def test_s6_control_the_cast_trap_is_real_without_the_check(engine: Engine, caster: Role) -> None:
    """A SECURITY DEFINER trigger that turns the row into JSON without the check makes the
    role a superuser: the refusal above is what stops it."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION public.unchecked() RETURNS trigger LANGUAGE plpgsql"
                " SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
                " AS $$ BEGIN PERFORM to_json(NEW); RETURN NEW; END $$"
            )
        )
        connection.execute(
            text(f"GRANT EXECUTE ON FUNCTION public.unchecked() TO {ident(caster.name)}")
        )
    with caster.engine.begin() as connection:
        connection.execute(text("CREATE TABLE evil.t (id int, v evil.mood)"))
        connection.execute(
            text(
                "CREATE TRIGGER t AFTER INSERT ON evil.t FOR EACH ROW"
                " EXECUTE FUNCTION public.unchecked()"
            )
        )
        connection.execute(text("INSERT INTO evil.t VALUES (1, 'happy')"))
    assert is_superuser(engine, caster.name)
    with engine.begin() as connection:
        connection.execute(text(f"ALTER ROLE {ident(caster.name)} NOSUPERUSER"))


def test_s6_a_cast_the_owner_trusts_still_shapes_the_payload(engine: Engine) -> None:
    """Casts owned by the job schema's owner (or a superuser: PostGIS's, say) run as before."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TYPE mood AS ENUM ('happy')"))
        connection.execute(
            text(
                "CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE sql"
                " AS $$ SELECT json_build_object('mood', m::text) $$"
            )
        )
        connection.execute(text("CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood)"))
        connection.execute(text("CREATE TABLE t (id int, v mood)"))
        connection.execute(
            sql(
                "CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW"
                " EXECUTE FUNCTION app_jobs.tg_add_job_with_row('t')"
            )
        )
        connection.execute(text("INSERT INTO t VALUES (1, 'happy')"))
        payload = connection.execute(sql("SELECT payload FROM app_jobs.jobs")).scalar_one()
    assert payload == {"id": 1, "v": {"mood": "happy"}}


# --- 4. Tenants: no key overwrite across tenants (S4) ------------------------------------------

JOB_COLUMNS = (
    "id, database_id, task_identifier, payload::text, key, queue_name, priority, run_at,"
    " attempts, max_attempts, locked_by, locked_at, last_error, updated_at"
)
SCHEDULE_COLUMNS = (
    "id, database_id, task_identifier, payload::text, key, schedule_info::text, locked_by,"
    " locked_at, last_scheduled, last_scheduled_id"
)


def rows_of(connection: Connection, table: str, columns: str, tenant: uuid.UUID | None) -> Any:
    return connection.execute(
        sql(
            f"SELECT {columns} FROM app_jobs.{table}"
            " WHERE database_id IS NOT DISTINCT FROM :t ORDER BY id"
        ),
        {"t": tenant},
    ).all()


TENANT_PAIRS = [(TENANT_A, TENANT_B), (None, TENANT_A), (TENANT_A, None)]
PAIR_IDS = ["A-then-B", "none-then-A", "A-then-none"]


@pytest.mark.parametrize(("victim", "attacker"), TENANT_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("running", [False, True], ids=["pending", "running"])
@pytest.mark.parametrize("path", ["add_job", "add_jobs", "trigger", "run_scheduled_job"])
def test_s4_another_tenant_never_overwrites_or_detaches_a_job_by_key(
    engine: Engine,
    victim: uuid.UUID | None,
    attacker: uuid.UUID | None,
    running: bool,
    path: str,
) -> None:
    with Session(translated(engine)) as session, session.begin():
        session.execute(add_job("victim_task", {"mine": True}, db_id=victim, job_key="shared"))
        if running:
            assert session.execute(get_job(WORKER)).one().database_id == victim
    with engine.connect() as connection:
        before = rows_of(connection, "jobs", JOB_COLUMNS, victim)
    with Session(translated(engine)) as session, session.begin():
        if path == "add_job":
            session.execute(add_job("evil", {"theirs": 1}, db_id=attacker, job_key="shared"))
        elif path == "add_jobs":
            session.execute(
                add_jobs([JobSpec("evil", {"theirs": 1}, db_id=attacker, job_key="shared")])
            )
        elif path == "trigger":
            session.execute(text("CREATE TABLE t (id int, tenant uuid)"))
            declared = JobTrigger(
                "evil",
                payload=Row(),
                key="shared",
                tenant="{tenant}" if attacker else None,
                job_schema=SCHEMA,
            )
            session.execute(as_text(create_trigger_sql(declared, "t")))
            session.execute(text("INSERT INTO t VALUES (1, :t)"), {"t": attacker})
        else:
            schedule = session.execute(
                add_scheduled_job("evil", {"theirs": 1}, db_id=attacker, job_key="shared")
            ).one()
            session.execute(run_scheduled_job(schedule.id))
    with engine.connect() as connection:
        assert rows_of(connection, "jobs", JOB_COLUMNS, victim) == before
        theirs = rows_of(connection, "jobs", JOB_COLUMNS, attacker)
    assert [(row.task_identifier, row.key) for row in theirs] == [("evil", "shared")]


@pytest.mark.parametrize(("victim", "attacker"), TENANT_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("claimed", [False, True], ids=["unclaimed", "claimed"])
def test_s4_another_tenant_never_replaces_a_schedule_by_key(
    engine: Engine, victim: uuid.UUID | None, attacker: uuid.UUID | None, claimed: bool
) -> None:
    with Session(translated(engine)) as session, session.begin():
        session.execute(
            add_scheduled_job("victim_tick", {"mine": True}, "0 3 * * *", db_id=victim, job_key="s")
        )
        if claimed:
            session.execute(get_scheduled_job(WORKER))
    with engine.connect() as connection:
        before = rows_of(connection, "scheduled_jobs", SCHEDULE_COLUMNS, victim)
    with Session(translated(engine)) as session, session.begin():
        session.execute(add_scheduled_job("evil", {"theirs": 1}, db_id=attacker, job_key="s"))
    with engine.connect() as connection:
        assert rows_of(connection, "scheduled_jobs", SCHEDULE_COLUMNS, victim) == before
        theirs = rows_of(connection, "scheduled_jobs", SCHEDULE_COLUMNS, attacker)
    assert [(row.task_identifier, row.key) for row in theirs] == [("evil", "s")]


TENANTS = st.sampled_from([None, TENANT_A, TENANT_B])
KEYED_CALLS = st.lists(
    st.tuples(TENANTS, st.sampled_from(["a", "b", "a'b", "B"]), st.integers(0, 9)),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(calls=KEYED_CALLS)
def test_s4_keyed_enqueues_keep_one_job_per_tenant_and_key_with_the_last_payload(
    engine: Engine, calls: list[tuple[uuid.UUID | None, str, int]]
) -> None:
    expected: dict[tuple[uuid.UUID | None, str], int] = {}
    for tenant, key, n in calls:
        expected[(tenant, key)] = n
    with translated(engine).connect() as connection:
        transaction = connection.begin()
        try:
            for tenant, key, n in calls:
                connection.execute(add_job("t", {"n": n}, db_id=tenant, job_key=key))
            rows = connection.execute(
                sql("SELECT database_id, key, payload FROM app_jobs.jobs")
            ).all()
        finally:
            transaction.rollback()
    assert len(rows) == len(expected)
    assert {(row[0], row[1]): row[2]["n"] for row in rows} == expected


# --- 5. What an enqueue role and a worker role can never do (S6) -------------------------------

#: Beyond test_access's FORBIDDEN_FOR_ALL: changing, extending or bypassing the schema.
HOSTILE_STATEMENTS = [
    "ALTER SCHEMA app_jobs RENAME TO stolen",
    "ALTER SCHEMA app_jobs OWNER TO CURRENT_USER",
    "CREATE FUNCTION app_jobs.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE OR REPLACE FUNCTION app_jobs.release_jobs(worker_id text,"
    " keep_job_ids bigint[] DEFAULT NULL) RETURNS void LANGUAGE sql AS 'SELECT'",
    "DROP FUNCTION app_jobs.add_job(uuid, text, json, text, text, timestamptz, integer, integer)",
    "ALTER FUNCTION app_jobs.add_job(uuid, text, json, text, text, timestamptz, integer,"
    " integer) SET search_path = public",
    "ALTER FUNCTION app_jobs.add_job(uuid, text, json, text, text, timestamptz, integer,"
    " integer) OWNER TO CURRENT_USER",
    "CREATE VIEW app_jobs.peek AS SELECT 1 AS one",
    "CREATE TYPE app_jobs.mine AS (a int)",
    "COMMENT ON TABLE app_jobs.jobs IS 'mine'",
    "CREATE INDEX mine ON app_jobs.jobs (payload)",
    "CREATE TRIGGER mine AFTER INSERT ON app_jobs.jobs"
    " FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row('x')",
    "ALTER TABLE app_jobs.jobs DISABLE TRIGGER ALL",
    "ALTER TABLE app_jobs.jobs ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY mine ON app_jobs.jobs USING (true)",
    "LOCK TABLE app_jobs.jobs IN ACCESS EXCLUSIVE MODE",
    "SELECT id FROM app_jobs.jobs FOR UPDATE",
    "REINDEX TABLE app_jobs.jobs",
    "CLUSTER app_jobs.jobs USING jobs_pkey",
    "ALTER SEQUENCE app_jobs.jobs_id_seq RESTART WITH 1",
    "INSERT INTO app_jobs.workers (worker_id, heartbeat_timeout) VALUES ('fake', '1 hour')",
    "DELETE FROM app_jobs.workers",
    "UPDATE app_jobs.job_queues SET locked_by = NULL",
    "TRUNCATE app_jobs.scheduled_jobs",
    "SELECT app_jobs.add_job_from_trigger('row', ARRAY['x'], '{}', 't')",
    "SELECT app_jobs.change_access(CURRENT_USER, 'operator', true)",
    "SELECT app_jobs.grant_access(CURRENT_USER, 'operator')",
    "SELECT app_jobs.access_functions('operator')",
    "SELECT app_jobs.assert_worker_id('abcd')",
    "SELECT app_jobs.assert_row_json_trusted(0, 't')",
    "SELECT app_jobs.lock_is_held(now(), 'w', now())",
    "SELECT app_jobs.alive_until(now(), interval '1 second')",
    "SELECT app_jobs.trigger_template('[]', '{}', 'key', 't')",
    "SELECT app_jobs.json_build_object_apply(ARRAY['a', 'b'])",
    "SELECT app_jobs.trigger_job_arguments(ARRAY['x'])",
]


@pytest.mark.parametrize("level", ["read", "enqueue", "worker"])
def test_s6_read_enqueue_and_worker_roles_cannot_change_extend_or_bypass_the_schema(
    engine: Engine, admin: Engine, make_role: Callable[..., Role], level: str
) -> None:
    role = role_at(make_role, admin, level)
    owner = engine.url.username or "postgres"
    with admin.begin() as connection:
        connection.execute(add_job("untouchable", {"n": 1}, job_key="k"))
    with engine.connect() as connection:
        before = catalog(connection)
        jobs_before = connection.execute(sql(f"SELECT {JOB_COLUMNS} FROM app_jobs.jobs")).all()
    sequence = literal(quote_schema(SCHEMA) + ".jobs_id_seq")  # a name in a literal
    for statement in [
        # The read level may tell live workers: alive_until is one of its functions.
        *(s for s in HOSTILE_STATEMENTS if level != "read" or "alive_until" not in s),
        f"SELECT nextval({sequence})",
        f"SELECT setval({sequence}, 1)",
        f"SET ROLE {ident(owner)}",
    ]:
        assert_refused(role, statement)
    # Re-granting what it was given: PostgreSQL only warns, and nothing is granted.
    given = (
        "app_jobs.alive_until(timestamptz, interval)"
        if level == "read"
        else "app_jobs.add_job(uuid, text, json, text, text, timestamptz, integer, integer)"
    )
    with role.engine.begin() as connection:
        connection.execute(sql(f"GRANT EXECUTE ON FUNCTION {given} TO PUBLIC"))
        connection.execute(sql("GRANT USAGE ON SCHEMA app_jobs TO PUBLIC"))
    with engine.connect() as connection:
        assert catalog(connection) == before
        assert connection.execute(sql(f"SELECT {JOB_COLUMNS} FROM app_jobs.jobs")).all() == (
            jobs_before
        )
    assert public_privileges(engine) == []


# --- 6. PUBLIC gets nothing -------------------------------------------------------------------

PUBLIC_PRIVILEGES = """
SELECT 'schema ' || p.priv FROM unnest(ARRAY['USAGE', 'CREATE']) AS p(priv)
 WHERE has_schema_privilege('public', :ns, p.priv)
UNION ALL
SELECT 'function ' || f.oid::regprocedure FROM pg_proc f
 WHERE f.pronamespace = :ns AND has_function_privilege('public', f.oid, 'EXECUTE')
UNION ALL
SELECT 'table ' || c.relname || ' ' || p.priv
  FROM pg_class c,
       unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',
                    'TRIGGER']) AS p(priv)
 WHERE c.relnamespace = :ns AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND has_table_privilege('public', c.oid, p.priv)
UNION ALL
SELECT 'column ' || c.relname || ' ' || p.priv
  FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) AS p(priv)
 WHERE c.relnamespace = :ns AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND has_any_column_privilege('public', c.oid, p.priv)
UNION ALL
SELECT 'sequence ' || c.relname || ' ' || p.priv
  FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p(priv)
 WHERE c.relnamespace = :ns AND c.relkind = 'S' AND has_sequence_privilege('public', c.oid, p.priv)
"""


def public_privileges(engine: Engine) -> list[str]:
    """What PUBLIC may do with the job schema and its objects. (Types keep PostgreSQL's
    default USAGE for PUBLIC, useless without USAGE on the schema, which is checked.)"""
    with engine.connect() as connection:
        ns = connection.execute(
            text("SELECT oid FROM pg_namespace WHERE nspname = :name"), {"name": SCHEMA}
        ).scalar_one()
        return list(connection.execute(text(PUBLIC_PRIVILEGES), {"ns": ns}).scalars())


def test_s6_public_has_no_privilege_on_any_object_of_the_schema(
    engine: Engine, admin: Engine, make_role: Callable[..., Role]
) -> None:
    assert public_privileges(engine) == []
    with engine.connect() as connection:
        functions = connection.execute(
            text(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = :s"
            ),
            {"s": SCHEMA},
        ).scalar_one()
    assert functions >= 40
    # PUBLIC is no role: the helpers cannot give it a level.
    for name in ("public", "PUBLIC"):
        with pytest.raises(InvalidArgumentError) as info:
            grant(admin, name, "enqueue")
        assert info.value.argument == "role_name"
    assert public_privileges(engine) == []
    # Granting levels to roles and taking them back leaves PUBLIC with nothing.
    role = make_role("pgjobs_pub_")
    for level in ("read", "enqueue", "worker", "operator"):
        grant(admin, role.name, level)
        assert public_privileges(engine) == []
    with Session(admin) as session:
        session.execute(
            text(f"SELECT {quote_schema(SCHEMA)}.revoke_access(:r, 'operator')"), {"r": role.name}
        )
        session.commit()
    assert public_privileges(engine) == []
