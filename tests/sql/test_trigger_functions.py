"""The trigger functions that enqueue jobs from row changes, and the two security fixes
that concern them: S1 (no SQL built from row values) and S2 (pinned search_path)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests.helpers import SCHEMA, quote_schema, sql
from tests.roles import is_superuser, shadow_builtins

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection, Engine

TENANT = "5b720132-17d5-424d-9bcb-ee7b17c13d43"


def jobs(connection: Connection) -> list[tuple[Any, ...]]:
    rows = connection.execute(
        sql("SELECT database_id, task_identifier, payload::text FROM app_jobs.jobs ORDER BY id")
    ).all()
    return [(str(row[0]) if row[0] else None, row[1], row[2]) for row in rows]


@pytest.fixture
def widgets(engine: Engine) -> Engine:
    with engine.begin() as connection:
        connection.execute(
            text(
                'CREATE TABLE widgets (id serial PRIMARY KEY, name text, qty int, "CamelCol" text,'
                " tags text[], uid uuid DEFAULT gen_random_uuid())"
            )
        )
    return engine


def trigger(connection: Connection, function: str, args: str, events: str = "INSERT") -> None:
    connection.execute(
        sql(
            f"CREATE TRIGGER enqueue AFTER {events} ON widgets FOR EACH ROW "
            f"EXECUTE FUNCTION app_jobs.{function}({args})"
        )
    )


def test_row_id_trigger_with_tenant_as_in_the_seed_readme(widgets: Engine) -> None:
    with widgets.begin() as connection:
        trigger(connection, "tg_add_job_with_row_id", f"'{TENANT}', 'process_record', 'id'")
        connection.execute(text("INSERT INTO widgets (name) VALUES ('a'), ('b')"))
        assert jobs(connection) == [
            (TENANT, "process_record", '{"id" : 1}'),
            (TENANT, "process_record", '{"id" : 2}'),
        ]


def test_row_id_trigger_old_form_and_a_custom_id_column(widgets: Engine) -> None:
    with widgets.begin() as connection:
        trigger(connection, "tg_add_job_with_row_id", "'process_record'", "INSERT OR DELETE")
        connection.execute(text("INSERT INTO widgets (name) VALUES ('a')"))
        connection.execute(text("DELETE FROM widgets"))
        assert jobs(connection) == [
            (None, "process_record", '{"id" : 1}'),
            (None, "process_record", '{"id" : 1}'),
        ]
        connection.execute(text("DROP TRIGGER enqueue ON widgets"))
        connection.execute(text("DELETE FROM " + "widgets"))
        connection.execute(sql("DELETE FROM app_jobs.jobs"))
        trigger(connection, "tg_add_job_with_row_id", f"'{TENANT}', 'by_uid', 'uid'")
        uid = connection.execute(
            text("INSERT INTO widgets (name) VALUES ('c') RETURNING uid")
        ).scalar_one()
        assert jobs(connection) == [(TENANT, "by_uid", f'{{"id" : "{uid}"}}')]


def test_row_id_trigger_without_the_column_aborts_the_write_clearly(widgets: Engine) -> None:
    with widgets.begin() as connection:
        trigger(connection, "tg_add_job_with_row_id", f"'{TENANT}', 'x', 'nope'")
    with (
        pytest.raises(
            DBAPIError, match="enqueue trigger on widgets for task x: the row has no column nope"
        ),
        widgets.begin() as connection,
    ):
        connection.execute(text("INSERT INTO widgets (name) VALUES ('a')"))
    with widgets.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM widgets")).scalar_one() == 0


def test_row_trigger_payload_is_the_whole_row(widgets: Engine) -> None:
    with widgets.begin() as connection:
        trigger(connection, "tg_add_job_with_row", f"'{TENANT}', 'sync_widget'", "UPDATE")
        connection.execute(text("INSERT INTO widgets (name, qty, uid) VALUES ('w', 3, NULL)"))
        connection.execute(text("UPDATE widgets SET qty = 4"))
        assert jobs(connection) == [
            (
                TENANT,
                "sync_widget",
                '{"id":1,"name":"w","qty":4,"CamelCol":null,"tags":null,"uid":null}',
            )
        ]


def test_fields_trigger_keeps_order_types_and_mixed_case_names(widgets: Engine) -> None:
    for function in ("tg_add_job_with_fields", "trigger_job_with_fields"):
        with widgets.begin() as connection:
            trigger(connection, function, f"'{TENANT}', 'f', 'qty', 'CamelCol', 'name', 'tags'")
            connection.execute(
                text(
                    'INSERT INTO widgets (name, qty, "CamelCol", tags)'
                    " VALUES ('n', 2, NULL, '{a}')"
                )
            )
            assert jobs(connection) == [
                (TENANT, "f", '{ "qty" : 2, "CamelCol" : null, "name" : "n", "tags" : ["a"] }')
            ]
            connection.rollback()


def test_fields_trigger_names_missing_columns(widgets: Engine) -> None:
    with widgets.begin() as connection:
        trigger(connection, "tg_add_job_with_fields", "'f', 'name', 'missing', 'Other'")
    with pytest.raises(DBAPIError, match='the row has no column missing, "Other"'):
        with widgets.begin() as connection:
            connection.execute(text("INSERT INTO widgets (name) VALUES ('a')"))


def test_trigger_without_a_task_is_refused(widgets: Engine) -> None:
    with widgets.begin() as connection:
        trigger(connection, "tg_add_job_with_row", "")
    with pytest.raises(DBAPIError, match="has no task identifier argument"):
        with widgets.begin() as connection:
            connection.execute(text("INSERT INTO widgets (name) VALUES ('a')"))


# --- S1: row values never become SQL ------------------------------------------------------------

HOSTILE = [
    "O'Brien",
    "x'); DROP TABLE victims; --",
    "', (SELECT rolpassword FROM pg_authid LIMIT 1)) --",
    "$$; DROP TABLE victims; $$",
    'back\\slash "quotes" \n newline \t tab',
    "日本語 ✓ \u2028",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "function", ["tg_add_job_with_fields", "tg_add_job_with_row", "trigger_job_with_fields"]
)
def test_s1_hostile_row_values_land_in_the_payload_verbatim(
    widgets: Engine, value: str, function: str
) -> None:
    with widgets.begin() as connection:
        connection.execute(text("CREATE TABLE victims (id int)"))
        trigger(connection, function, f"'{TENANT}', 't', 'name'")
        connection.execute(text("INSERT INTO widgets (name) VALUES (:v)"), {"v": value})
        payload = connection.execute(sql("SELECT payload FROM app_jobs.jobs")).scalar_one()
        assert payload["name"] == value
        assert connection.execute(text("SELECT count(*) FROM victims")).scalar_one() == 0


def test_s1_json_build_object_apply_executes_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE victims (id int)"))
        result = connection.execute(
            sql("SELECT app_jobs.json_build_object_apply(ARRAY['a', :v, 'b', NULL])::text"),
            {"v": "x'); DROP TABLE victims; --"},
        ).scalar_one()
        assert result == '{ "a" : "x\'); DROP TABLE victims; --", "b" : "" }'
        assert connection.execute(text("SELECT count(*) FROM victims")).scalar_one() == 0


# --- S2: a caller's search_path cannot hijack SECURITY DEFINER functions -----------------------


#: Built-ins the job functions use, shadowed in the attacker's own schema.
SHADOWS = [
    ("now()", "timestamptz", "pg_catalog.now()"),
    ("to_json(anyelement)", "json", "'{}'::json"),
    ("json_build_object(text, jsonb)", "json", "'{}'::json"),
    ("coalesce_(json, json)", "json", "'{}'::json"),
    ("length(text)", "integer", "1"),
    ("format(text, text)", "text", "''"),
    ("exp(integer)", "double precision", "1"),
    ("quote_ident(text)", "text", "''"),
    ("jsonb_exists(jsonb, text)", "boolean", "true"),
]


@pytest.fixture
def attacker(engine: Engine) -> Iterator[tuple[str, Engine]]:
    """A login role without privileges but CREATE on a schema of its own, which shadows
    built-ins used by the job functions with functions that would make it a superuser."""
    role = f"attacker_{uuid.uuid4().hex[:8]}"
    schema = quote_schema(SCHEMA)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN"))
        connection.execute(text(f"CREATE SCHEMA evil AUTHORIZATION {role}"))
        connection.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        connection.execute(
            text(
                f"GRANT EXECUTE ON FUNCTION {schema}.add_job("
                f"uuid, text, json, text, text, timestamptz, integer, integer) TO {role}"
            )
        )
        connection.execute(text("CREATE TABLE widgets (id serial PRIMARY KEY, name text)"))
        connection.execute(text(f"GRANT INSERT ON widgets TO {role}"))
        connection.execute(text(f"GRANT USAGE ON SEQUENCE widgets_id_seq TO {role}"))
    url = engine.url.set(username=role)
    attacker_engine = create_engine(url)
    with attacker_engine.begin() as connection:
        shadow_builtins(connection, role, SHADOWS, [("?", "jsonb_exists")])
    yield role, attacker_engine
    attacker_engine.dispose()
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA evil CASCADE"))
        connection.execute(text(f"DROP OWNED BY {role}"))
        connection.execute(text(f"DROP ROLE {role}"))


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("tg_add_job_with_row_id", f"'{TENANT}', 't', 'id'"),
        ("tg_add_job_with_row", f"'{TENANT}', 't'"),
        ("tg_add_job_with_fields", f"'{TENANT}', 't', 'name'"),
    ],
)
def test_s2_search_path_hijack_through_triggers_gains_nothing(
    engine: Engine, attacker: tuple[str, Engine], function: str, args: str
) -> None:
    role, attacker_engine = attacker
    with engine.begin() as connection:
        trigger(connection, function, args)
    with attacker_engine.begin() as connection:
        connection.execute(text("SET search_path = evil, pg_catalog, public"))
        connection.execute(text("INSERT INTO widgets (name) VALUES ('x')"))
    assert not is_superuser(engine, role)
    with engine.connect() as connection:
        assert len(jobs(connection)) == 1


def test_s2_search_path_hijack_through_add_job_gains_nothing(
    engine: Engine, attacker: tuple[str, Engine]
) -> None:
    role, attacker_engine = attacker
    with attacker_engine.begin() as connection:
        connection.execute(text("SET search_path = evil, pg_catalog, public"))
        created = connection.execute(
            sql("SELECT id, run_at FROM app_jobs.add_job(NULL, 'task', '{}', 'key', NULL, NULL)")
        ).one()
        assert created.run_at is not None
    assert not is_superuser(engine, role)


def test_s2_control_an_unpinned_definer_function_is_hijacked(
    engine: Engine, attacker: tuple[str, Engine]
) -> None:
    """The attacker above is real: against the reference's shape of function (SECURITY
    DEFINER, no pinned search_path) it becomes a superuser. Our functions resist it."""
    role, attacker_engine = attacker
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION public.unpinned() RETURNS timestamptz LANGUAGE plpgsql "
                "SECURITY DEFINER AS $$ BEGIN RETURN now(); END $$"
            )
        )
        connection.execute(text(f"GRANT EXECUTE ON FUNCTION public.unpinned() TO {role}"))
    with attacker_engine.begin() as connection:
        connection.execute(text("SET search_path = evil, pg_catalog, public"))
        connection.execute(text("SELECT public.unpinned()"))
    assert is_superuser(engine, role)
