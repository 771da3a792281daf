"""The job schema's SQL: versioned ``.sql`` files rendered for a schema name.

Every way of installing the schema (the Alembic ops online and with ``--sql``, the test
bed, later ``pgjobs migrate``) goes through :func:`install_statements`,
:func:`upgrade_statements`, :func:`downgrade_statements` and :func:`drop_statements`, and
executes each statement with :func:`as_text`. That is the one execution path the
escaping is pinned for.

The ``.sql`` files write the schema as ``app_jobs``; :func:`render` replaces that token
with the quoted identifier of the configured schema. It is the only place a schema name
is substituted.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy import TextClause, text
from sqlalchemy.dialects import postgresql

from sqla_pgjobs.errors import InvalidArgumentError, SchemaNameError, SchemaVersionError
from sqla_pgjobs.validation import MAX_IDENTIFIER_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.engine import Connection

__all__ = [
    "DEFAULT_SCHEMA",
    "LATEST_VERSION",
    "OPTIONAL_INDEXES",
    "access_statement",
    "as_text",
    "built_indexes",
    "check_index_names",
    "check_version",
    "create_index_statements",
    "create_indexes",
    "downgrade_statements",
    "drop",
    "drop_index_statements",
    "drop_indexes",
    "drop_statements",
    "install",
    "install_statements",
    "installed_version",
    "invalid_indexes",
    "migrate",
    "named_statements",
    "quote_identifier",
    "quote_literal",
    "quote_schema",
    "render",
    "split_statements",
    "upgrade_statements",
    "validate_schema_name",
]

DEFAULT_SCHEMA = "app_jobs"

#: The newest schema version this library knows. Version 1 is ``schema_v1.sql``; version
#: N > 1 is reached from N - 1 with ``upgrade_v{N-1}_to_v{N}.sql`` (and left again with
#: ``downgrade_v{N}_to_v{N-1}.sql``). Each step file, in order:
#:
#: 1. takes the migrations' advisory lock (the first statement of ``schema_v1.sql``);
#: 2. checks ``max(version)`` in ``app_jobs.migrations`` is the version it starts from,
#:    raising otherwise (this is what makes offline ``--sql`` output safe to replay);
#: 3. makes its changes, revoking from PUBLIC whatever it creates;
#: 4. grants new functions and tables to the roles that hold an access level (the catalog
#:    says who: EXECUTE on ``add_job``, ``get_jobs`` or ``complete_jobs``), since
#:    ``grant_access`` only reached the objects that existed when it ran;
#: 5. inserts (or, going down, deletes) its version in ``app_jobs.migrations``.
#:
#: ``upgrade_v1_to_v2.sql`` is the first real step; the test suite's ``fake_version_3``
#: fixture is a minimal worked example.
LATEST_VERSION = 2

_TOKEN = re.compile(r"\bapp_jobs\b")
# What sqlalchemy.text() would take for a bind parameter (its own pattern, see
# sqlalchemy.sql.elements.TextClause._bind_params_regex).
_BIND = re.compile(r"(?<![:\w\x5c]):(?=\w+(?!:))")
# paramstyle="named": the identifier must not have its % doubled (that is a driver concern).
_PREPARER = postgresql.dialect(paramstyle="named").identifier_preparer  # type: ignore[no-untyped-call]
# What text() would read as an escaped colon (its BIND_PARAMS_ESC): a backslash there is
# doubled, so that it reaches the database as written.
_ESCAPED_COLON = re.compile(r"\x5c(?=:\w*(?![:\w]))")


def validate_schema_name(schema: str) -> str:
    """Return ``schema`` if PostgreSQL can hold it as the job schema, else raise.

    Any name PostgreSQL accepts as a quoted identifier works, except names that would be
    silently truncated, system names (``pg_*``, ``information_schema``) and names with
    ``$`` (the SQL files quote function bodies with ``$$``).
    """
    if not isinstance(schema, str) or not schema:
        raise SchemaNameError(schema, "a non-empty string")
    if len(schema.encode()) > MAX_IDENTIFIER_BYTES:
        raise SchemaNameError(schema, f"at most {MAX_IDENTIFIER_BYTES} bytes")
    if "\x00" in schema or "$" in schema:
        raise SchemaNameError(schema, "no NUL or '$' characters")
    if schema.startswith("pg_") or schema == "information_schema":
        raise SchemaNameError(schema, "not a system schema name (pg_*, information_schema)")
    return schema


def quote_schema(schema: str) -> str:
    """The schema name as a SQL identifier: bare when that reads back unchanged, else quoted."""
    validate_schema_name(schema)
    return _PREPARER.quote(schema)


def quote_identifier(name: str) -> str:
    """Any identifier (a table, column or trigger name) as SQL: bare when that reads back
    unchanged, else quoted."""
    return _PREPARER.quote(name)


def quote_literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings, the default since PostgreSQL 9.1),
    for the few statements that must carry a value inline: offline ``--sql`` output has no
    bind parameters, and a trigger's arguments are part of its definition."""
    return "'" + value.replace("'", "''") + "'"


def render(sql: str, schema: str = DEFAULT_SCHEMA) -> str:
    """Replace the ``app_jobs`` token in ``sql`` with ``schema`` as an identifier."""
    quoted = quote_schema(schema)
    return _TOKEN.sub(lambda _: quoted, sql)


def split_statements(sql: str) -> list[str]:
    """Split a SQL script into statements at top-level semicolons.

    Understands ``--`` and ``/* */`` comments, ``'...'``, ``E'...'``, ``"..."`` and
    ``$tag$...$tag$`` quoting, which is all the package's SQL files use. Statements are
    returned without their terminating semicolon; comment-only pieces are dropped.
    """
    statements: list[str] = []
    start = 0
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif ch in "'\"":
            i = _end_of_quoted(sql, i, ch)
        elif ch == "$":
            match = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$").match(sql, i)
            if match:
                end = sql.find(match.group(0), match.end())
                i = n if end == -1 else end + len(match.group(0))
            else:
                i += 1
        elif ch == ";":
            statements.append(sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _end_of_quoted(sql: str, i: int, quote: str) -> int:
    backslash_escapes = quote == "'" and i > 0 and sql[i - 1] in "eE"
    j = i + 1
    while j < len(sql):
        if backslash_escapes and sql[j] == "\\":
            j += 2
            continue
        if sql[j] == quote:
            if sql.startswith(quote * 2, j):
                j += 2
                continue
            return j + 1
        j += 1
    return j


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without_comments.strip())


def as_text(statement: str) -> TextClause:
    """Wrap one statement for execution, so that nothing in it is taken for a bind.

    Colons that :func:`sqlalchemy.text` would read as ``:name`` parameters are escaped;
    ``%`` is left alone (``text()`` doubles it for pyformat drivers online, and Alembic's
    offline mode with ``paramstyle="named"`` prints it as is).
    """
    return text(_BIND.sub(r"\\:", _ESCAPED_COLON.sub(r"\\\\", statement)))


@cache
def _read(name: str) -> str:
    return resources.files("sqla_pgjobs").joinpath("sql", name).read_text(encoding="utf-8")


def check_version(version: object, argument: str = "version") -> int:
    """``version`` if it is a schema version this library knows, else SchemaVersionError."""
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not (1 <= version <= LATEST_VERSION)
    ):
        raise SchemaVersionError(
            f"{argument} {version!r} is not a schema version this library knows; "
            f"known versions are 1 to {LATEST_VERSION}"
        )
    return version


def install_statements(schema: str = DEFAULT_SCHEMA, version: int = 1) -> list[str]:
    """The statements that create the job schema at ``version`` in an empty database."""
    check_version(version, "version")
    statements = split_statements(render(_read("schema_v1.sql"), schema))
    if version > 1:
        statements += upgrade_statements(schema, 1, version)
    return statements


def upgrade_statements(schema: str, from_version: int, to_version: int) -> list[str]:
    """The statements that move an installed schema from one version up to a later one."""
    check_version(from_version, "from_version")
    check_version(to_version, "to_version")
    if to_version <= from_version:
        raise SchemaVersionError(
            f"cannot upgrade from version {from_version} to {to_version}: "
            "to_version must be greater than from_version"
        )
    statements: list[str] = []
    for step in range(from_version, to_version):
        statements += split_statements(render(_read(f"upgrade_v{step}_to_v{step + 1}.sql"), schema))
    return statements


def downgrade_statements(schema: str, from_version: int, to_version: int) -> list[str]:
    """The statements that move an installed schema from one version down to an earlier one."""
    check_version(from_version, "from_version")
    check_version(to_version, "to_version")
    if to_version >= from_version:
        raise SchemaVersionError(
            f"cannot downgrade from version {from_version} to {to_version}: "
            "to_version must be less than from_version"
        )
    statements: list[str] = []
    for step in range(from_version, to_version, -1):
        statements += split_statements(
            render(_read(f"downgrade_v{step}_to_v{step - 1}.sql"), schema)
        )
    return statements


def drop_statements(schema: str = DEFAULT_SCHEMA) -> list[str]:
    """The statements that remove the job schema, refusing while user objects depend on it."""
    return split_statements(render(_read("drop.sql"), schema))


def install(connection: Connection, schema: str = DEFAULT_SCHEMA, version: int = 1) -> None:
    """Create the job schema at ``version`` through ``connection`` (in its transaction)."""
    for statement in install_statements(schema, version):
        connection.execute(as_text(statement))


def drop(connection: Connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Remove the job schema through ``connection``; refuses while user objects depend on it."""
    for statement in drop_statements(schema):
        connection.execute(as_text(statement))


def access_statement(verb: str, schema: str, role_name: str, access: str) -> str:
    """``SELECT <schema>.grant_access('<role>', '<access>')`` (or ``revoke_access``), with
    the values inlined so the statement also works in offline ``--sql`` mode."""
    if verb not in ("grant", "revoke"):
        raise ValueError(f"verb must be grant or revoke, not {verb!r}")
    return render(
        f"SELECT app_jobs.{verb}_access({quote_literal(role_name)}, {quote_literal(access)})",
        schema,
    )


_STATEMENT_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


def named_statements(filename: str, schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
    """The statements of ``sql/<filename>`` by their ``-- name:`` lines, rendered for
    ``schema`` and ready for psycopg (``%`` in the schema name doubled)."""
    identifier = quote_schema(schema).replace("%", "%%")
    parts = _STATEMENT_NAME.split(_read(filename))
    names, bodies = parts[1::2], parts[2::2]
    return {
        name: _TOKEN.sub(lambda _: identifier, body.strip().rstrip(";"))
        for name, body in zip(names, bodies, strict=True)
    }


def _optional_indexes() -> dict[str, str]:
    parts = _STATEMENT_NAME.split(_read("indexes.sql"))
    return {
        name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def _index_name(statement: str) -> str:
    found = re.search(r"IF NOT EXISTS (\w+)", statement)
    if found is None:
        raise ValueError(f"indexes.sql: no IF NOT EXISTS name in {statement!r}")
    return found.group(1)


#: The optional indexes of ``sql/indexes.sql`` by name, with the index each creates.
OPTIONAL_INDEXES: dict[str, str] = {
    name: _index_name(body) for name, body in _optional_indexes().items()
}


def check_index_names(names: Iterable[object], argument: str = "names") -> list[str]:
    """``names`` as a list if there is at least one and each is one of
    :data:`OPTIONAL_INDEXES`, else InvalidArgumentError naming the bad value."""
    checked = list(names)
    allowed = ", ".join(OPTIONAL_INDEXES)
    if not checked:
        raise InvalidArgumentError(argument, checked, f"name at least one index: {allowed}")
    valid: list[str] = []
    for name in checked:
        if not isinstance(name, str) or name not in OPTIONAL_INDEXES:
            raise InvalidArgumentError(argument, name, f"each must be one of {allowed}")
        valid.append(name)
    return valid


def _drop_index(name: str, schema: str) -> str:
    return f"DROP INDEX CONCURRENTLY IF EXISTS {quote_schema(schema)}.{OPTIONAL_INDEXES[name]}"


def create_index_statements(
    names: Iterable[str], schema: str = DEFAULT_SCHEMA, *, invalid: Iterable[str] = ()
) -> list[str]:
    """``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` for each optional index named, to run
    outside a transaction block (autocommit), each preceded by ``DROP INDEX CONCURRENTLY``
    when it is one of ``invalid`` (:func:`invalid_indexes`: left invalid by a build that
    failed, which ``IF NOT EXISTS`` would keep, unused)."""
    statements = _optional_indexes()
    leftovers = set(invalid)
    planned: list[str] = []
    for name in check_index_names(names):
        if name in leftovers:
            planned.append(_drop_index(name, schema))
        planned.append(render(statements[name], schema))
    return planned


def drop_index_statements(names: Iterable[str], schema: str = DEFAULT_SCHEMA) -> list[str]:
    """``DROP INDEX CONCURRENTLY IF EXISTS`` for each optional index named (autocommit)."""
    return [_drop_index(name, schema) for name in check_index_names(names)]


def built_indexes(connection: Connection, schema: str = DEFAULT_SCHEMA) -> dict[str, bool]:
    """The optional indexes present (by name), each with whether it is valid: a
    concurrent build that failed or was interrupted leaves an invalid one, which the
    planner never uses."""
    rows = connection.execute(
        text(
            "SELECT c.relname::text, i.indisvalid FROM pg_catalog.pg_index i"
            " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relname = ANY(:indexes)"
        ),
        {"schema": schema, "indexes": list(OPTIONAL_INDEXES.values())},
    ).all()
    by_index = {index: name for name, index in OPTIONAL_INDEXES.items()}
    return {by_index[index]: bool(valid) for index, valid in rows}


def invalid_indexes(connection: Connection, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """The optional indexes (by name) left invalid by a build: ``IF NOT EXISTS`` would keep
    such an index, unused."""
    return sorted(name for name, valid in built_indexes(connection, schema).items() if not valid)


def create_indexes(
    connection: Connection, names: Iterable[str], schema: str = DEFAULT_SCHEMA
) -> None:
    """Build the optional indexes named (``failed``, ``payload``) without locking the jobs
    table against writes. ``connection`` must be in autocommit mode
    (``isolation_level="AUTOCOMMIT"``): ``CONCURRENTLY`` cannot run in a transaction. An
    index an earlier build left invalid is dropped and built again; a valid one is kept."""
    wanted = check_index_names(names)  # before any statement
    invalid = invalid_indexes(connection, schema)
    for statement in create_index_statements(wanted, schema, invalid=invalid):
        connection.execute(as_text(statement))


def drop_indexes(
    connection: Connection, names: Iterable[str], schema: str = DEFAULT_SCHEMA
) -> None:
    """Drop the optional indexes named, concurrently (``connection`` in autocommit mode)."""
    for statement in drop_index_statements(names, schema):
        connection.execute(as_text(statement))


def installed_version(connection: Connection, schema: str = DEFAULT_SCHEMA) -> int | None:
    """The version of the job schema installed as ``schema``, or None when there is none."""
    found = connection.execute(
        text("SELECT pg_catalog.to_regclass(:table) IS NOT NULL"),
        {"table": f"{quote_schema(schema)}.migrations"},
    ).scalar_one()
    if not found:
        return None
    version = connection.execute(
        as_text(render("SELECT max(version) FROM app_jobs.migrations", schema))
    ).scalar_one()
    return int(version) if version is not None else None


def migrate(
    connection: Connection, schema: str = DEFAULT_SCHEMA, to_version: int = LATEST_VERSION
) -> tuple[int | None, int]:
    """Install the job schema, or upgrade it, to ``to_version`` (without Alembic; the same
    SQL and the same bookkeeping as the Alembic operations). Returns (before, after)."""
    check_version(to_version, "to_version")
    current = installed_version(connection, schema)
    if current is None:
        install(connection, schema, to_version)
    elif current < to_version:
        for statement in upgrade_statements(schema, current, to_version):
            connection.execute(as_text(statement))
    elif current > to_version:
        raise SchemaVersionError(
            f"the job schema {schema!r} is at version {current}, newer than {to_version}; "
            "downgrades are Alembic's job (op.downgrade_pgjobs_schema)"
        )
    return current, to_version
