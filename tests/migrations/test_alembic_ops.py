"""The Alembic operations and the alembic_ops environment, on a real PostgreSQL.

alembic_ops' revision installs the job schema under its default name ``app_jobs`` whatever
PGJOBS_TEST_SCHEMA says, so these tests name the schema explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import render_op_text, render_python_code
from alembic.autogenerate.api import AutogenContext
from alembic.migration import MigrationContext
from alembic.operations.ops import UpgradeOps
from sqlalchemy import create_engine, event, text

from sqla_pgjobs import SchemaNameError, SchemaVersionError
from sqla_pgjobs.alembic import (
    CreatePgjobsSchemaOp,
    DowngradePgjobsSchemaOp,
    DropPgjobsSchemaOp,
    UpgradePgjobsSchemaOp,
)
from sqla_pgjobs.schema import render
from tests.helpers import REPO, catalog, libpq_url, run_ops

if TYPE_CHECKING:
    from collections.abc import Callable

    from alembic.operations import MigrateOperation
    from sqlalchemy.engine import URL, Engine

ALEMBIC_INI = REPO / "alembic_ops" / "alembic.ini"
REVISION = "0001_install_pgjobs"
IMPORT_LINE = "import sqla_pgjobs.alembic  # noqa: F401"
# A schema name that needs quoting in SQL and a non-trivial repr() in Python.
TENANT = "Tenant's jobs"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def alembic(
    *args: str, url: URL | None = None, config: Path = ALEMBIC_INI, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run the alembic CLI in a subprocess; PGJOBS_DATABASE_URL is ``url`` or unset."""
    env = {k: v for k, v in os.environ.items() if k != "PGJOBS_DATABASE_URL"}
    if url is not None:
        env["PGJOBS_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(config), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a subprocess that must have succeeded."""
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def schema_exists(engine: Engine, schema: str) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
            ).scalar_one()
        )


def namespaces(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(text("SELECT nspname FROM pg_namespace ORDER BY 1")).scalars()
        )


def alembic_version(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def schema_catalog(engine: Engine, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        return catalog(connection, schema)


def assert_same_catalog(
    actual: dict[str, list[tuple[Any, ...]]], expected: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Equal catalogs, reporting only the rows that differ."""
    assert actual.keys() == expected.keys()
    for key, rows in expected.items():
        extra = [row for row in actual[key] if row not in rows]
        missing = [row for row in rows if row not in actual[key]]
        assert (key, extra, missing) == (key, [], [])
    assert actual == expected


def add_job(engine: Engine, schema: str, task: str = "x") -> str:
    """Enqueue a job through the schema's own API and return its task identifier."""
    with engine.begin() as connection:
        row = connection.execute(
            text(render(f"SELECT * FROM app_jobs.add_job(NULL, '{task}')", schema))
        ).one()
    return str(row.task_identifier)


def psql_executable() -> str:
    found = shutil.which("psql")
    if found:
        return found
    try:
        import pgserver
    except ImportError:
        pytest.skip("no psql: not on PATH and pgserver is not installed")
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    if not bundled.exists():
        pytest.skip(f"no psql: not on PATH and not at {bundled}")
    return str(bundled)


def psql(script: Path, url: URL) -> None:
    """Replay a SQL script with psql, stopping at the first error."""
    result = subprocess.run(
        [psql_executable(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), libpq_url(url)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"psql {script.name} failed:\n{result.stdout}\n{result.stderr}"


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


def installed_version(engine: Engine, schema: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(render("SELECT max(version) FROM app_jobs.migrations", schema))
            ).scalar_one()
        )


def invoke(engine: Engine, operation: MigrateOperation) -> None:
    run_ops(engine, lambda op: op.invoke(operation))


# --------------------------------------------------------------------------------------
# 1. The alembic_ops environment through the CLI
# --------------------------------------------------------------------------------------


def test_cli_upgrade_downgrade_upgrade(empty_database_url: URL) -> None:
    engine = create_engine(empty_database_url)
    try:
        ok(alembic("upgrade", "head", url=empty_database_url))
        assert alembic_version(engine) == [REVISION]
        assert add_job(engine, "app_jobs") == "x"
        first = schema_catalog(engine, "app_jobs")
        assert len(first["functions"]) >= 30

        ok(alembic("downgrade", "base", url=empty_database_url))
        assert not schema_exists(engine, "app_jobs")
        assert alembic_version(engine) == []

        ok(alembic("upgrade", "head", url=empty_database_url))
        assert alembic_version(engine) == [REVISION]
        assert_same_catalog(schema_catalog(engine, "app_jobs"), first)
        assert add_job(engine, "app_jobs", "again") == "again"
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------
# 2. Offline (--sql) output, replayed through psql
# --------------------------------------------------------------------------------------


def test_offline_sql_replays_to_the_online_schema(
    new_database: Callable[..., URL], tmp_path: Path
) -> None:
    # Online without any URL refuses clearly; offline needs none.
    refused = alembic("upgrade", "head")
    assert refused.returncode != 0
    assert "No database URL" in refused.stderr

    upgrade_sql = ok(alembic("upgrade", "head", "--sql"))
    assert "%%" not in upgrade_sql
    assert "% 2" in upgrade_sql  # json_build_object_apply's body, printed as written
    downgrade_sql = ok(alembic("downgrade", f"{REVISION}:base", "--sql"))
    assert "%%" not in downgrade_sql
    assert "DROP SCHEMA app_jobs CASCADE" in downgrade_sql
    upgrade_file = tmp_path / "upgrade.sql"
    upgrade_file.write_text(upgrade_sql, encoding="utf-8")
    downgrade_file = tmp_path / "downgrade.sql"
    downgrade_file.write_text(downgrade_sql, encoding="utf-8")

    offline_url = new_database()
    online_url = new_database()
    offline = create_engine(offline_url)
    online = create_engine(online_url)
    try:
        psql(upgrade_file, offline_url)
        ok(alembic("upgrade", "head", url=online_url))
        assert alembic_version(offline) == alembic_version(online) == [REVISION]
        assert_same_catalog(schema_catalog(offline, "app_jobs"), schema_catalog(online, "app_jobs"))
        assert add_job(offline, "app_jobs") == "x"

        psql(downgrade_file, offline_url)
        assert not schema_exists(offline, "app_jobs")
        assert alembic_version(offline) == []
    finally:
        offline.dispose()
        online.dispose()


# --------------------------------------------------------------------------------------
# 3. The ops in Python: reverse() and argument checks
# --------------------------------------------------------------------------------------


def test_reverse_ops_undo_each_other(empty_engine: Engine) -> None:
    create = CreatePgjobsSchemaOp(TENANT, 1)
    drop = create.reverse()
    assert type(drop) is DropPgjobsSchemaOp
    assert (drop.schema, drop.version) == (TENANT, 1)
    recreate = drop.reverse()
    assert type(recreate) is CreatePgjobsSchemaOp
    assert recreate.to_diff_tuple() == create.to_diff_tuple()
    assert DropPgjobsSchemaOp(version=2).reverse().to_diff_tuple() == (
        CreatePgjobsSchemaOp(version=2).to_diff_tuple()
    )

    upgrade = UpgradePgjobsSchemaOp(2, 1, TENANT)
    downgrade = upgrade.reverse()
    assert type(downgrade) is DowngradePgjobsSchemaOp
    assert (downgrade.from_version, downgrade.to_version, downgrade.schema) == (2, 1, TENANT)
    reupgrade = downgrade.reverse()
    assert type(reupgrade) is UpgradePgjobsSchemaOp
    assert reupgrade.to_diff_tuple() == upgrade.to_diff_tuple()

    # And in the database, each reverse undoes its op.
    invoke(empty_engine, create)
    v1 = schema_catalog(empty_engine, TENANT)
    invoke(empty_engine, upgrade)
    assert installed_version(empty_engine, TENANT) == 2
    v2 = schema_catalog(empty_engine, TENANT)
    assert v2 != v1
    invoke(empty_engine, downgrade)
    assert installed_version(empty_engine, TENANT) == 1
    assert schema_catalog(empty_engine, TENANT) == v1
    invoke(empty_engine, reupgrade)
    assert schema_catalog(empty_engine, TENANT) == v2

    invoke(empty_engine, DropPgjobsSchemaOp(TENANT, 2))
    assert not schema_exists(empty_engine, TENANT)
    # The drop's reverse re-creates the version it was told about.
    invoke(empty_engine, DropPgjobsSchemaOp(TENANT, 2).reverse())
    assert schema_catalog(empty_engine, TENANT) == v2
    invoke(empty_engine, drop)
    assert not schema_exists(empty_engine, TENANT)
    invoke(empty_engine, recreate)
    assert schema_catalog(empty_engine, TENANT) == v1
    assert add_job(empty_engine, TENANT) == "x"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda op: op.create_pgjobs_schema(version=0), SchemaVersionError, "version 0 "),
        (lambda op: op.create_pgjobs_schema(version=99), SchemaVersionError, "version 99 "),
        (lambda op: op.create_pgjobs_schema(version=True), SchemaVersionError, "version True "),
        (lambda op: op.create_pgjobs_schema(schema=""), SchemaNameError, "schema name ''"),
        (lambda op: op.create_pgjobs_schema(schema="pg_x"), SchemaNameError, "'pg_x'"),
        (lambda op: op.drop_pgjobs_schema(schema="pg_x"), SchemaNameError, "'pg_x'"),
        (lambda op: op.drop_pgjobs_schema(version=99), SchemaVersionError, "version 99 "),
        (
            lambda op: op.upgrade_pgjobs_schema(1, from_version=1),
            SchemaVersionError,
            "from_version=1, to_version=1",
        ),
        (
            lambda op: op.upgrade_pgjobs_schema(3, from_version=2),
            SchemaVersionError,
            "to_version 3 ",
        ),
        (
            lambda op: op.upgrade_pgjobs_schema(1, from_version=0),
            SchemaVersionError,
            "from_version 0 ",
        ),
        (
            lambda op: op.downgrade_pgjobs_schema(1, from_version=1),
            SchemaVersionError,
            "from_version=1, to_version=1",
        ),
    ],
    ids=[
        "version-0",
        "version-99",
        "version-bool",
        "schema-empty",
        "schema-pg",
        "drop-schema-pg",
        "drop-version-99",
        "upgrade-not-up",
        "upgrade-unknown-to",
        "upgrade-unknown-from",
        "downgrade-not-down",
    ],
)
def test_invalid_arguments_are_refused_before_any_sql(
    empty_engine: Engine,
    call: Callable[[Any], None],
    error: type[Exception],
    message: str,
) -> None:
    before = namespaces(empty_engine)
    statements: list[str] = []

    @event.listens_for(empty_engine, "before_cursor_execute")
    def record(*args: Any) -> None:
        statements.append(args[2])

    try:
        with pytest.raises(error, match=re.escape(message)):
            run_ops(empty_engine, call)
        assert statements == []
        assert namespaces(empty_engine) == before
        assert len(statements) == 1  # the listener does see statements
    finally:
        event.remove(empty_engine, "before_cursor_execute", record)
    assert "app_jobs" not in before


# --------------------------------------------------------------------------------------
# 4. Autogenerate rendering
# --------------------------------------------------------------------------------------


def autogen_context() -> AutogenContext:
    return AutogenContext(MigrationContext.configure(dialect_name="postgresql"))


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (CreatePgjobsSchemaOp(), "op.create_pgjobs_schema(version=1)"),
        (
            CreatePgjobsSchemaOp(TENANT, 1),
            'op.create_pgjobs_schema(version=1, schema="Tenant\'s jobs")',
        ),
        (DropPgjobsSchemaOp(), "op.drop_pgjobs_schema(version=1)"),
        (DropPgjobsSchemaOp("other"), "op.drop_pgjobs_schema(version=1, schema='other')"),
    ],
    ids=["create", "create-schema", "drop", "drop-schema"],
)
def test_render_op_text(operation: MigrateOperation, expected: str) -> None:
    context = autogen_context()
    assert render_op_text(context, operation) == expected
    assert context.imports == {IMPORT_LINE}


@pytest.mark.usefixtures("fake_version_3")
def test_render_upgrade_and_downgrade_op_text() -> None:
    # Built inside the test: version 3 only exists while the fixture is active.
    cases: list[tuple[MigrateOperation, str]] = [
        (CreatePgjobsSchemaOp(version=3), "op.create_pgjobs_schema(version=3)"),
        (UpgradePgjobsSchemaOp(3, 2), "op.upgrade_pgjobs_schema(3, from_version=2)"),
        (
            DowngradePgjobsSchemaOp(2, 3, "other"),
            "op.downgrade_pgjobs_schema(2, from_version=3, schema='other')",
        ),
    ]
    for operation, expected in cases:
        context = autogen_context()
        assert render_op_text(context, operation) == expected
        assert context.imports == {IMPORT_LINE}


def test_rendered_revision_code_runs(empty_engine: Engine) -> None:
    upgrade_ops = UpgradeOps(
        ops=[
            CreatePgjobsSchemaOp(),
            CreatePgjobsSchemaOp(TENANT),
            UpgradePgjobsSchemaOp(2, 1),
        ]
    )
    migration_context = MigrationContext.configure(dialect_name="postgresql")
    upgrade_code = render_python_code(upgrade_ops, migration_context=migration_context)
    downgrade_code = render_python_code(upgrade_ops.reverse(), migration_context=migration_context)
    assert "    op.create_pgjobs_schema(version=1)\n" in upgrade_code
    assert '    op.create_pgjobs_schema(version=1, schema="Tenant\'s jobs")\n' in upgrade_code
    assert "    op.upgrade_pgjobs_schema(2, from_version=1)\n" in upgrade_code
    assert downgrade_code.index("op.downgrade_pgjobs_schema(1, from_version=2)") < (
        downgrade_code.index('op.drop_pgjobs_schema(version=1, schema="Tenant\'s jobs")')
    )

    def run(code: str) -> Callable[[Any], None]:
        # As script.py.mako places it: the imports on top, the code as a function body.
        source = f"{IMPORT_LINE}\n\n\ndef migrate():\n    {code}\n\n\nmigrate()\n"
        return lambda op: exec(compile(source, "<rendered revision>", "exec"), {"op": op})

    run_ops(empty_engine, run(upgrade_code))
    assert installed_version(empty_engine, "app_jobs") == 2
    assert installed_version(empty_engine, TENANT) == 1
    assert add_job(empty_engine, TENANT) == "x"

    run_ops(empty_engine, run(downgrade_code))
    assert not schema_exists(empty_engine, "app_jobs")
    assert not schema_exists(empty_engine, TENANT)


# --------------------------------------------------------------------------------------
# 5. A user's own Alembic project: one import is all it takes
# --------------------------------------------------------------------------------------

USER_REVISION = '''\
"""Install the job queue."""

from alembic import op

revision = "0001_pgjobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_pgjobs_schema()


def downgrade() -> None:
    op.drop_pgjobs_schema()
'''

# Generates a second revision the way autogenerate would: the ops are put into the
# MigrationScript by a process_revision_directives hook and rendered by sqla_pgjobs.
GENERATE_REVISION = f"""\
import sys

from alembic import command
from alembic.config import Config

from sqla_pgjobs.alembic import CreatePgjobsSchemaOp


def hook(context, revision, directives):
    create = CreatePgjobsSchemaOp(schema={TENANT!r})
    directives[0].upgrade_ops.ops.append(create)
    directives[0].downgrade_ops.ops.append(create.reverse())


config = Config(sys.argv[1])
config.set_main_option("revision_environment", "true")
command.revision(
    config, message="tenant jobs", rev_id="0002_tenant", process_revision_directives=hook
)
"""


def test_user_project_needs_only_the_import(empty_database_url: URL, tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ok(alembic("init", "migrations", config=ini, cwd=tmp_path))
    env_py = tmp_path / "migrations" / "env.py"
    env_source = env_py.read_text(encoding="utf-8")
    assert "from alembic import context\n" in env_source
    env_py.write_text(
        env_source.replace(
            "from alembic import context\n",
            f"from alembic import context\n\n{IMPORT_LINE}\n",
            1,
        ),
        encoding="utf-8",
    )
    url = empty_database_url.render_as_string(hide_password=False).replace("%", "%%")
    ini_source = ini.read_text(encoding="utf-8")
    assert "sqlalchemy.url = driver://user:pass@localhost/dbname\n" in ini_source
    ini.write_text(
        ini_source.replace(
            "sqlalchemy.url = driver://user:pass@localhost/dbname\n", f"sqlalchemy.url = {url}\n"
        ),
        encoding="utf-8",
    )
    (tmp_path / "migrations" / "versions" / "0001_pgjobs.py").write_text(
        USER_REVISION, encoding="utf-8"
    )

    engine = create_engine(empty_database_url)
    try:
        # Offline, the stock env.py prints the SQL correctly too.
        offline = ok(alembic("upgrade", "head", "--sql", config=ini, cwd=tmp_path))
        assert "%%" not in offline
        assert "% 2" in offline
        assert not schema_exists(engine, "app_jobs")

        ok(alembic("upgrade", "head", config=ini, cwd=tmp_path))
        assert alembic_version(engine) == ["0001_pgjobs"]
        assert add_job(engine, "app_jobs") == "x"

        # A revision generated with sqla_pgjobs' renderers imports what it needs and runs.
        generator = tmp_path / "generate_revision.py"
        generator.write_text(GENERATE_REVISION, encoding="utf-8")
        ok(
            subprocess.run(
                [sys.executable, str(generator), str(ini)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        )
        [generated] = (tmp_path / "migrations" / "versions").glob("0002_tenant_*.py")
        source = generated.read_text(encoding="utf-8")
        assert f"\n{IMPORT_LINE}\n" in source
        assert 'op.create_pgjobs_schema(version=1, schema="Tenant\'s jobs")' in source
        assert 'op.drop_pgjobs_schema(version=1, schema="Tenant\'s jobs")' in source

        ok(alembic("upgrade", "head", config=ini, cwd=tmp_path))
        assert alembic_version(engine) == ["0002_tenant"]
        assert_same_catalog(schema_catalog(engine, TENANT), schema_catalog(engine, "app_jobs"))
        assert add_job(engine, TENANT, "tenant") == "tenant"

        ok(alembic("downgrade", "base", config=ini, cwd=tmp_path))
        assert alembic_version(engine) == []
        assert not schema_exists(engine, TENANT)
        assert not schema_exists(engine, "app_jobs")
    finally:
        engine.dispose()
