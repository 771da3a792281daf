"""The SQL files and their rendering, without a database."""

from __future__ import annotations

import pytest

from sqla_pgjobs import SchemaNameError, SchemaVersionError
from sqla_pgjobs.schema import (
    LATEST_VERSION,
    as_text,
    downgrade_statements,
    install_statements,
    quote_schema,
    render,
    split_statements,
    upgrade_statements,
)


def test_split_statements_respects_quotes_comments_and_dollar_bodies() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (a text DEFAULT 'x;y');
    /* block ; comment */
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
    BEGIN RETURN 1; END $$;
    CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b' $body$;
    SELECT "odd;name", E'it\\'s;', 'it''s;';
    -- trailing comment only
    """
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[0].endswith("DEFAULT 'x;y')")
    assert "RETURN 1; END $$" in statements[1]
    assert statements[2].endswith("$body$ SELECT 'a;b' $body$")
    assert statements[3] == "SELECT \"odd;name\", E'it\\'s;', 'it''s;'"


@pytest.mark.parametrize(
    ("schema", "quoted"),
    [
        ("app_jobs", "app_jobs"),
        ("jobs2", "jobs2"),
        ("Jobs", '"Jobs"'),
        ("my jobs", '"my jobs"'),
        ('we"ird', '"we""ird"'),
        ("o'neil", '"o\'neil"'),
        ("select", '"select"'),
    ],
)
def test_quote_schema(schema: str, quoted: str) -> None:
    assert quote_schema(schema) == quoted


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ("", "non-empty"),
        ("x" * 64, "at most 63 bytes"),
        ("pg_jobs", "system schema"),
        ("information_schema", "system schema"),
        ("a$b", "'$'"),
        ("a\x00b", "NUL"),
    ],
)
def test_bad_schema_names_are_refused_with_the_rule(schema: str, fragment: str) -> None:
    with pytest.raises(SchemaNameError) as info:
        render("SELECT 1 FROM app_jobs.jobs", schema)
    assert repr(schema) in str(info.value)
    assert fragment in str(info.value)
    assert info.value.schema == schema


def test_render_replaces_only_the_whole_token() -> None:
    out = render("SELECT app_jobs.jobs, my_app_jobs.x, app_jobs_x FROM app_jobs.t", "Q q")
    assert out == 'SELECT "Q q".jobs, my_app_jobs.x, app_jobs_x FROM "Q q".t'


def test_as_text_leaves_no_bind_parameters() -> None:
    clause = as_text("SELECT 'jobs:insert', x::text, :name, ' :other', $$ a := 1 $$")
    assert clause._bindparams == {}
    compiled = str(clause)
    assert ":name" in compiled and ":other" in compiled


def test_install_statements_for_every_known_version() -> None:
    for version in range(1, LATEST_VERSION + 1):
        statements = install_statements("app_jobs", version)
        assert "PERFORM pg_catalog.pg_advisory_xact_lock(" in statements[0]
        assert any("CREATE TABLE app_jobs.jobs" in s for s in statements)


@pytest.mark.parametrize("version", [0, LATEST_VERSION + 1, "1", True, None])
def test_unknown_versions_are_refused(version: object) -> None:
    with pytest.raises(SchemaVersionError, match=f"known versions are 1 to {LATEST_VERSION}"):
        install_statements("app_jobs", version)  # type: ignore[arg-type]


def test_upgrade_and_downgrade_need_a_direction() -> None:
    with pytest.raises(SchemaVersionError, match="greater than"):
        upgrade_statements("app_jobs", 1, 1)
    with pytest.raises(SchemaVersionError, match="less than"):
        downgrade_statements("app_jobs", 1, 1)


def test_percent_in_a_schema_name_is_not_doubled_in_sql_text() -> None:
    assert quote_schema("50% jobs") == '"50% jobs"'
    assert render("SELECT app_jobs.x", "50% jobs") == 'SELECT "50% jobs".x'
