"""More of sqla_pgjobs.alembic: the autogenerate filter, the typed ``op`` twins, access grants.

Every user project here installs the job schema with ``op.create_pgjobs_schema()``, that is
under its default name ``app_jobs`` whatever PGJOBS_TEST_SCHEMA says.
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import render_op_text
from alembic.autogenerate.api import AutogenContext
from alembic.migration import MigrationContext
from alembic.operations import MigrateOperation, Operations
from sqlalchemy import create_engine

import sqla_pgjobs.alembic.ops as ops_module
from sqla_pgjobs import InvalidArgumentError, SchemaNameError
from sqla_pgjobs import tables as job_tables
from sqla_pgjobs.alembic import (
    GrantPgjobsAccessOp,
    RevokePgjobsAccessOp,
    include_name,
    pgjobs_include_name,
)
from sqla_pgjobs.alembic import op as pgjobs
from sqla_pgjobs.schema import DEFAULT_SCHEMA
from tests.helpers import run_ops
from tests.migrations.test_alembic_ops import (
    IMPORT_LINE,
    USER_REVISION,
    alembic,
    assert_same_catalog,
    ok,
    schema_catalog,
    schema_exists,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from sqlalchemy.engine import URL

#: The six operations sqla_pgjobs.alembic registers on Alembic's ``Operations``.
OP_NAMES = {
    "create_pgjobs_schema",
    "drop_pgjobs_schema",
    "upgrade_pgjobs_schema",
    "downgrade_pgjobs_schema",
    "grant_pgjobs_access",
    "revoke_pgjobs_access",
    "create_pgjobs_indexes",
    "drop_pgjobs_indexes",
    "create_job_trigger",
    "drop_job_trigger",
}


# --------------------------------------------------------------------------------------
# Helpers: a user's own Alembic project in tmp_path
# --------------------------------------------------------------------------------------

MODELS = '''\
"""The user's own models: nothing to do with the job schema."""

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    total_cents: Mapped[int]


class JobPosting(Base):
    """A table of the user's own that is also called ``jobs``, in schema public."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
'''

STOCK_IMPORT = "from alembic import context\n"
STOCK_METADATA = "target_metadata = None\n"
STOCK_CONFIGURE = """\
        context.configure(
            connection=connection, target_metadata=target_metadata
        )
"""
STOCK_URL = "sqlalchemy.url = driver://user:pass@localhost/dbname\n"


@dataclass(frozen=True)
class UserProject:
    """An ``alembic init`` project: its alembic.ini, env.py and env.py as Alembic wrote it."""

    ini: Path
    env_py: Path
    stock_env: str

    @property
    def root(self) -> Path:
        return self.ini.parent

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return alembic(*args, config=self.ini, cwd=self.root)

    def use_env(self, *, models: bool, include_name_filter: bool) -> None:
        """Rewrite env.py from the stock one: import sqla_pgjobs.alembic, optionally use
        models.py as target_metadata with ``include_schemas=True`` and, optionally, the
        job schema filter."""
        imports = (
            "from sqla_pgjobs.alembic import include_name\n"
            if include_name_filter
            else f"{IMPORT_LINE}\n"
        )
        if models:
            imports += "\nfrom models import Base\n"
        source = self.stock_env.replace(STOCK_IMPORT, f"{STOCK_IMPORT}\n{imports}", 1)
        if models:
            filter_line = "            include_name=include_name,\n" if include_name_filter else ""
            source = source.replace(STOCK_METADATA, "target_metadata = Base.metadata\n", 1).replace(
                STOCK_CONFIGURE,
                "        context.configure(\n"
                "            connection=connection,\n"
                "            target_metadata=target_metadata,\n"
                "            include_schemas=True,\n"
                f"{filter_line}"
                "        )\n",
                1,
            )
        self.env_py.write_text(source, encoding="utf-8")


def user_project(tmp_path: Path, url: str) -> UserProject:
    """``alembic init`` in tmp_path, pointed at ``url``, with models.py and the revision
    ``0001_pgjobs`` (``op.create_pgjobs_schema()``); env.py is still the stock one."""
    ini = tmp_path / "alembic.ini"
    ok(alembic("init", "migrations", config=ini, cwd=tmp_path))
    env_py = tmp_path / "migrations" / "env.py"
    stock_env = env_py.read_text(encoding="utf-8")
    for anchor in (STOCK_IMPORT, STOCK_METADATA, STOCK_CONFIGURE):
        assert anchor in stock_env, f"Alembic's env.py template changed: no {anchor!r}"
    ini_source = ini.read_text(encoding="utf-8")
    assert STOCK_URL in ini_source
    ini.write_text(
        ini_source.replace(STOCK_URL, f"sqlalchemy.url = {url.replace('%', '%%')}\n"),
        encoding="utf-8",
    )
    (tmp_path / "models.py").write_text(MODELS, encoding="utf-8")
    (tmp_path / "migrations" / "versions" / "0001_pgjobs.py").write_text(
        USER_REVISION, encoding="utf-8"
    )
    return UserProject(ini, env_py, stock_env)


def project_with_models_and_jobs(tmp_path: Path, url: URL) -> UserProject:
    """A user project whose database holds the job schema and the models' tables, both
    through revisions: ``0001_pgjobs`` and an autogenerated ``0002_models``."""
    project = user_project(tmp_path, url.render_as_string(hide_password=False))
    project.use_env(models=True, include_name_filter=True)
    ok(project.run("upgrade", "head"))

    ok(project.run("revision", "--autogenerate", "-m", "models", "--rev-id", "0002_models"))
    [models_revision] = project.versions.glob("0002_models_*.py")
    calls = op_calls(models_revision, "upgrade")
    # The filter hides the job schema, not the user's tables (one of them is called jobs).
    created = {name for operation, name, _ in calls if operation == "create_table"}
    assert created == {"customers", "orders", "jobs"}, calls
    assert all(schema is None for _, _, schema in calls), calls
    assert not [call for call in calls if call[0].startswith("drop_")], calls
    ok(project.run("upgrade", "head"))
    return project


def function_body(revision: Path, function: str) -> list[ast.stmt]:
    """The statements of ``function`` in a revision file, without its docstring."""
    tree = ast.parse(revision.read_text(encoding="utf-8"))
    [found] = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function
    ]
    body = found.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body


def op_calls(revision: Path, function: str) -> list[tuple[str, str | None, str | None]]:
    """``(operation, first argument, schema=)`` for each ``op.<operation>(...)`` statement
    of ``function``; the first argument is None unless it is a string literal."""
    calls: list[tuple[str, str | None, str | None]] = []
    for statement in function_body(revision, function):
        if isinstance(statement, ast.Pass):
            continue
        assert isinstance(statement, ast.Expr), ast.unparse(statement)
        call = statement.value
        assert isinstance(call, ast.Call), ast.unparse(statement)
        assert isinstance(call.func, ast.Attribute), ast.unparse(statement)
        assert ast.unparse(call.func.value) == "op", ast.unparse(statement)
        first = call.args[0] if call.args else None
        schemas = [kw.value for kw in call.keywords if kw.arg == "schema"]
        calls.append(
            (
                call.func.attr,
                first.value if isinstance(first, ast.Constant) else None,
                schemas[0].value if schemas and isinstance(schemas[0], ast.Constant) else None,
            )
        )
    return calls


# --------------------------------------------------------------------------------------
# 1. The autogenerate filter
# --------------------------------------------------------------------------------------


def test_autogenerate_with_the_filter_finds_nothing_to_do(
    empty_database_url: URL, tmp_path: Path
) -> None:
    project = project_with_models_and_jobs(tmp_path, empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        assert schema_exists(engine, "app_jobs")
    finally:
        engine.dispose()

    checked = project.run("check")
    assert checked.returncode == 0, f"{checked.stdout}\n{checked.stderr}"
    assert "No new upgrade operations detected" in checked.stdout

    ok(project.run("revision", "--autogenerate", "-m", "check", "--rev-id", "0003_check"))
    [revision] = project.versions.glob("0003_check_*.py")
    for function in ("upgrade", "downgrade"):
        body = function_body(revision, function)
        assert [type(statement) for statement in body] == [ast.Pass], (
            f"{function}() is not empty:\n{revision.read_text(encoding='utf-8')}"
        )
    assert "app_jobs" not in revision.read_text(encoding="utf-8")


def test_autogenerate_without_the_filter_drops_the_job_schema(
    empty_database_url: URL, tmp_path: Path
) -> None:
    """The control: the same project and database, only without include_name."""
    project = project_with_models_and_jobs(tmp_path, empty_database_url)
    project.use_env(models=True, include_name_filter=False)

    checked = project.run("check")
    assert checked.returncode != 0
    assert "New upgrade operations detected" in checked.stderr
    assert "app_jobs" in checked.stderr

    ok(project.run("revision", "--autogenerate", "-m", "unfiltered", "--rev-id", "0003_unf"))
    [revision] = project.versions.glob("0003_unf_*.py")
    source = revision.read_text(encoding="utf-8")
    assert "op.drop_table('jobs', schema='app_jobs')" in source
    calls = op_calls(revision, "upgrade")
    dropped = {name for operation, name, _ in calls if operation == "drop_table"}
    # The project installs version 1 (op.create_pgjobs_schema() without a version).
    version_2 = {
        "job_history",
        "history_retention",
        "pauses",
        "cancel_requests",
        "job_trace_contexts",
    }
    assert dropped >= {t.name for t in job_tables.metadata.tables.values()} - version_2
    # Everything proposed is in the job schema: the user's tables are in sync.
    assert {schema for _, _, schema in calls} == {"app_jobs"}, calls


def test_pgjobs_include_name_hides_its_schema_and_defers_other_names_to_then() -> None:
    seen: list[tuple[str | None, str, dict[str, str | None]]] = []

    def user_filter(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        seen.append((name, type_, dict(parent_names)))
        return False  # so that a True below cannot come from the user's filter

    hook = pgjobs_include_name("custom_jobs", then=user_filter)

    assert hook("custom_jobs", "schema", {}) is False
    assert hook("t", "table", {"schema_name": "custom_jobs"}) is False
    assert hook("ix", "index", {"schema_name": "custom_jobs", "table_name": "t"}) is False
    assert seen == []
    assert hook("t", "table", {"schema_name": "public"}) is False
    assert seen == [("t", "table", {"schema_name": "public"})]

    without_then = pgjobs_include_name("custom_jobs")
    assert without_then("custom_jobs", "schema", {}) is False
    assert without_then("t", "table", {"schema_name": "public"}) is True
    assert without_then("app_jobs", "schema", {}) is True


def test_include_name_hides_only_the_default_job_schema() -> None:
    assert include_name("app_jobs", "schema", {}) is False
    assert include_name("jobs", "table", {"schema_name": "app_jobs"}) is False
    assert (
        include_name(
            "jobs_pkey", "unique_constraint", {"schema_name": "app_jobs", "table_name": "jobs"}
        )
        is False
    )
    # The default schema (None), a user's own table called jobs, another job schema.
    assert include_name(None, "schema", {}) is True
    assert include_name("jobs", "table", {"schema_name": None}) is True
    assert include_name("jobs", "table", {"schema_name": "public"}) is True
    assert include_name("custom_jobs", "schema", {}) is True


@pytest.mark.parametrize("bad", ["pg_x", "", "a$b", "information_schema", "x" * 64])
def test_pgjobs_include_name_refuses_a_bad_schema_name(bad: str) -> None:
    with pytest.raises(SchemaNameError):
        pgjobs_include_name(bad)
    with pytest.raises(SchemaNameError):
        pgjobs_include_name(bad, then=include_name)


# --------------------------------------------------------------------------------------
# mypy, shared by the typing tests (one cache, so only the first run is slow)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mypy")
    return tmp_path_factory.mktemp("mypy_cache")


def mypy(cache: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on ``files`` with a config file of its own (nothing inherited)."""
    config = files[0].parent / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(config),
            *(str(file) for file in files),
        ],
        cwd=files[0].parent,
        env={**os.environ, "MYPY_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


TYPED_ENV = """\
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Literal

from alembic import context
from sqlalchemy import MetaData

from sqla_pgjobs.alembic import include_name, pgjobs_include_name


def my_filter(
    name: str | None,
    type_: str,
    parent_names: MutableMapping[
        Literal["schema_name", "table_name", "schema_qualified_table_name"], str | None
    ],
) -> bool:
    return name != "scratch"


def run_migrations_online() -> None:
    context.configure(
        target_metadata=MetaData(), include_schemas=True, include_name=include_name
    )
    context.configure(include_name=pgjobs_include_name("my_jobs", then=my_filter))
"""


def test_include_name_type_checks_as_alembic_include_name_hook(
    tmp_path: Path, mypy_cache: Path
) -> None:
    env_py = tmp_path / "typed_env.py"
    env_py.write_text(TYPED_ENV, encoding="utf-8")
    result = mypy(mypy_cache, env_py)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------
# 2. The typed twins in sqla_pgjobs.alembic.op
# --------------------------------------------------------------------------------------


def registered_ops() -> dict[str, type[MigrateOperation]]:
    """Each op the module registers on Operations: its name and its operation class."""
    found: dict[str, type[MigrateOperation]] = {}
    for value in vars(ops_module).values():
        if (
            isinstance(value, type)
            and issubclass(value, MigrateOperation)
            and value.__module__ == ops_module.__name__
        ):
            for name, attribute in vars(value).items():
                if isinstance(attribute, classmethod) and callable(getattr(Operations, name, None)):
                    found[name] = value
    return found


def described(signature: inspect.Signature) -> list[tuple[str, str, Any, Any]]:
    return [(p.name, p.kind.name, p.default, p.annotation) for p in signature.parameters.values()]


def test_registered_ops_are_the_known_ones() -> None:
    assert set(registered_ops()) == OP_NAMES
    for name in OP_NAMES:
        assert callable(getattr(Operations, name))


@pytest.mark.parametrize("name", sorted(OP_NAMES))
def test_every_registered_op_has_a_typed_twin_with_the_same_signature(name: str) -> None:
    op_class = registered_ops()[name]
    classmethod_signature = inspect.signature(getattr(op_class, name))  # cls is bound
    parameters = list(classmethod_signature.parameters.values())
    assert parameters[0].name == "operations"
    expected = classmethod_signature.replace(parameters=parameters[1:])

    twin = getattr(pgjobs, name, None)
    assert inspect.isfunction(twin), f"sqla_pgjobs.alembic.op has no function {name}"
    actual = inspect.signature(twin)
    assert described(actual) == described(expected)
    # from __future__ import annotations: annotations are the source strings on both sides.
    for parameter in actual.parameters.values():
        assert isinstance(parameter.annotation, str), parameter
    assert actual.return_annotation == expected.return_annotation == "None"
    assert actual == expected


def test_every_typed_twin_is_a_registered_op() -> None:
    public = {
        name
        for name, value in inspect.getmembers(pgjobs, inspect.isfunction)
        if not name.startswith("_") and value.__module__ == pgjobs.__name__
    }
    assert public == set(registered_ops())
    assert set(pgjobs.__all__) == public


def test_typed_twin_installs_the_schema_exactly_as_the_op(
    new_database: Callable[..., URL],
) -> None:
    twin_engine = create_engine(new_database())
    op_engine = create_engine(new_database())
    try:
        with twin_engine.begin() as connection:
            # How Alembic binds alembic.op (and so the twins) while a revision runs.
            with Operations.context(MigrationContext.configure(connection)):
                pgjobs.create_pgjobs_schema()
        run_ops(op_engine, lambda op: op.create_pgjobs_schema())

        twin_catalog = schema_catalog(twin_engine, DEFAULT_SCHEMA)
        assert len(twin_catalog["functions"]) >= 30
        assert_same_catalog(twin_catalog, schema_catalog(op_engine, DEFAULT_SCHEMA))

        with twin_engine.begin() as connection:
            with Operations.context(MigrationContext.configure(connection)):
                pgjobs.drop_pgjobs_schema()
        assert not schema_exists(twin_engine, DEFAULT_SCHEMA)
    finally:
        twin_engine.dispose()
        op_engine.dispose()


TYPED_REVISION = """\
from __future__ import annotations

from sqla_pgjobs.alembic import op as pgjobs

revision = "0001_typed"
down_revision: str | None = None


def upgrade() -> None:
    pgjobs.create_pgjobs_schema()
    pgjobs.grant_pgjobs_access("r", "worker")
    pgjobs.upgrade_pgjobs_schema(1, from_version=1, schema="x")


def downgrade() -> None:
    pgjobs.revoke_pgjobs_access("r", "worker", schema="app_jobs")
    pgjobs.drop_pgjobs_schema(version=1)
"""

MISSPELT_REVISION = """\
from __future__ import annotations

from sqla_pgjobs.alembic import op as pgjobs


def upgrade() -> None:
    pgjobs.create_pgjobs_schema(versoin=1)
"""


def test_typed_twins_pass_mypy_strict_and_catch_a_misspelt_keyword(
    tmp_path: Path, mypy_cache: Path
) -> None:
    good = tmp_path / "typed_revision.py"
    good.write_text(TYPED_REVISION, encoding="utf-8")
    bad = tmp_path / "misspelt_revision.py"
    bad.write_text(MISSPELT_REVISION, encoding="utf-8")

    result = mypy(mypy_cache, good, bad)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, output
    assert errors[0].startswith("misspelt_revision.py:7: error:"), output
    assert 'Unexpected keyword argument "versoin"' in errors[0], output
    assert "typed_revision.py" not in output


# --------------------------------------------------------------------------------------
# 3. Grant and revoke: rendering, reversal, argument checks, offline SQL
# --------------------------------------------------------------------------------------


def autogen_context() -> AutogenContext:
    return AutogenContext(MigrationContext.configure(dialect_name="postgresql"))


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (GrantPgjobsAccessOp("app", "worker"), "op.grant_pgjobs_access('app', 'worker')"),
        (
            GrantPgjobsAccessOp("app", "worker", DEFAULT_SCHEMA),
            "op.grant_pgjobs_access('app', 'worker')",
        ),
        (
            GrantPgjobsAccessOp("app", "operator", "x"),
            "op.grant_pgjobs_access('app', 'operator', schema='x')",
        ),
        (
            GrantPgjobsAccessOp("o'neil", "enqueue"),
            """op.grant_pgjobs_access("o'neil", 'enqueue')""",
        ),
        (RevokePgjobsAccessOp("app", "enqueue"), "op.revoke_pgjobs_access('app', 'enqueue')"),
        (
            RevokePgjobsAccessOp("app", "worker", "x"),
            "op.revoke_pgjobs_access('app', 'worker', schema='x')",
        ),
    ],
    ids=[
        "grant",
        "grant-explicit-default",
        "grant-schema",
        "grant-quote",
        "revoke",
        "revoke-schema",
    ],
)
def test_render_grant_and_revoke_op_text(operation: MigrateOperation, expected: str) -> None:
    context = autogen_context()
    assert render_op_text(context, operation) == expected
    assert context.imports == {IMPORT_LINE}


class Recorder:
    """Stands in for ``op`` when evaluating rendered text: records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


class Invoker:
    """Stands in for ``Operations`` in an op's classmethod: keeps what it would invoke."""

    def __init__(self, into: list[MigrateOperation]) -> None:
        self.into = into

    def invoke(self, operation: MigrateOperation) -> None:
        self.into.append(operation)


@pytest.mark.parametrize("role_name", ["o'neil", 'say "hi"', "back\\slash 'and' \"both\"", "é"])
@pytest.mark.parametrize("op_class", [GrantPgjobsAccessOp, RevokePgjobsAccessOp])
def test_rendered_role_name_with_quotes_evaluates_back_to_the_same_op(
    op_class: type[GrantPgjobsAccessOp | RevokePgjobsAccessOp], role_name: str
) -> None:
    operation = op_class(role_name, "worker", "Tenant's jobs")
    text = render_op_text(autogen_context(), operation)
    ast.parse(text, mode="eval")  # valid Python
    recorder = Recorder()
    eval(compile(text, "<rendered op>", "eval"), {"op": recorder})
    [(name, args, kwargs)] = recorder.calls
    assert args == (role_name, "worker")
    assert kwargs == {"schema": "Tenant's jobs"}
    # The call is the registered op's, so re-running it builds the same operation.
    method = getattr(op_class, name)
    rebuilt: list[MigrateOperation] = []
    method.__func__(op_class, Invoker(rebuilt), *args, **kwargs)
    [again] = rebuilt
    assert again.to_diff_tuple() == operation.to_diff_tuple()


def test_grant_and_revoke_reverse_each_other() -> None:
    grant = GrantPgjobsAccessOp("o'neil", "operator", "Tenant's jobs")
    revoke = grant.reverse()
    assert type(revoke) is RevokePgjobsAccessOp
    assert (revoke.role_name, revoke.access, revoke.schema) == (
        "o'neil",
        "operator",
        "Tenant's jobs",
    )
    regrant = revoke.reverse()
    assert type(regrant) is GrantPgjobsAccessOp
    assert (regrant.role_name, regrant.access, regrant.schema) == (
        grant.role_name,
        grant.access,
        grant.schema,
    )
    assert regrant.to_diff_tuple() == grant.to_diff_tuple()
    assert revoke.to_diff_tuple() == ("revoke_pgjobs_access", "Tenant's jobs", "o'neil", "operator")

    plain = RevokePgjobsAccessOp("app", "enqueue").reverse()
    assert type(plain) is GrantPgjobsAccessOp
    assert (plain.role_name, plain.access, plain.schema) == ("app", "enqueue", DEFAULT_SCHEMA)


def offline_context() -> tuple[MigrationContext, io.StringIO]:
    """An offline (``--sql``) migration context printing into a buffer."""
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    return context, buffer


@pytest.mark.parametrize(
    ("role_name", "access", "argument"),
    [
        ("app", "admin", "access"),
        ("app", "Worker", "access"),
        ("app", "", "access"),
        ("app", None, "access"),
        ("", "worker", "role_name"),
        (None, "worker", "role_name"),
        ("a\x00b", "worker", "role_name"),
    ],
    ids=["admin", "wrong-case", "empty-access", "no-access", "empty-role", "no-role", "nul"],
)
@pytest.mark.parametrize("verb", ["grant", "revoke"])
def test_invalid_access_or_role_is_refused_before_any_sql(
    verb: str, role_name: Any, access: Any, argument: str
) -> None:
    op_class = GrantPgjobsAccessOp if verb == "grant" else RevokePgjobsAccessOp
    name = f"{verb}_pgjobs_access"
    context, buffer = offline_context()

    with pytest.raises(InvalidArgumentError) as raised:
        op_class(role_name, access)
    assert raised.value.argument == argument

    with pytest.raises(InvalidArgumentError) as raised:
        getattr(Operations(context), name)(role_name, access)
    assert raised.value.argument == argument

    with Operations.context(context):
        with pytest.raises(InvalidArgumentError) as raised:
            getattr(pgjobs, name)(role_name, access)
        assert raised.value.argument == argument
        assert buffer.getvalue() == ""
        # The buffer does receive SQL when the arguments are right.
        getattr(pgjobs, name)("app", "worker")
    assert f"SELECT app_jobs.{verb}_access('app', 'worker')" in buffer.getvalue()


GRANT_REVISION = '''\
"""Let the app enqueue and the workers work."""

from alembic import op

from sqla_pgjobs.alembic import op as pgjobs

revision = "0001_grants"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.grant_pgjobs_access("app", "worker")
    op.grant_pgjobs_access("o'neil", "enqueue", schema="Tenant's jobs")


def downgrade() -> None:
    pgjobs.revoke_pgjobs_access("o'neil", "enqueue", schema="Tenant's jobs")
    pgjobs.revoke_pgjobs_access("app", "worker")
'''


def test_offline_sql_grants_and_revokes_with_quoted_names(tmp_path: Path) -> None:
    # Nothing listens on port 1: offline mode must not connect.
    project = user_project(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    project.use_env(models=False, include_name_filter=False)
    (project.versions / "0001_pgjobs.py").unlink()
    (project.versions / "0001_grants.py").write_text(GRANT_REVISION, encoding="utf-8")

    upgrade = ok(project.run("upgrade", "head", "--sql"))
    assert "SELECT app_jobs.grant_access('app', 'worker');" in upgrade
    assert """SELECT "Tenant's jobs".grant_access('o''neil', 'enqueue');""" in upgrade
    assert upgrade.index("grant_access('app'") < upgrade.index("grant_access('o''neil'")
    assert "revoke_access" not in upgrade

    downgrade = ok(project.run("downgrade", "0001_grants:base", "--sql"))
    assert """SELECT "Tenant's jobs".revoke_access('o''neil', 'enqueue');""" in downgrade
    assert "SELECT app_jobs.revoke_access('app', 'worker');" in downgrade
    assert downgrade.index("revoke_access('o''neil'") < downgrade.index("revoke_access('app'")
    assert "grant_access" not in downgrade
