"""How autogenerate writes the job schema's operations into a revision file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic.autogenerate import renderers

from sqla_pgjobs.alembic.ops import (
    CreateJobTriggerOp,
    CreatePgjobsIndexesOp,
    CreatePgjobsSchemaOp,
    DowngradePgjobsSchemaOp,
    DropJobTriggerOp,
    DropPgjobsIndexesOp,
    DropPgjobsSchemaOp,
    GrantPgjobsAccessOp,
    RevokePgjobsAccessOp,
    UpgradePgjobsSchemaOp,
)
from sqla_pgjobs.schema import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext

__all__: list[str] = []

_IMPORT = "import sqla_pgjobs.alembic  # noqa: F401"


def _prefix(autogen_context: AutogenContext) -> str:
    """``op.``, or whatever prefix the project configured, as Alembic's own renderers do."""
    prefix = autogen_context.opts.get("alembic_module_prefix") or "op."
    return str(prefix)


def _schema_arg(schema: str) -> str:
    return "" if schema == DEFAULT_SCHEMA else f", schema={schema!r}"


@renderers.dispatch_for(CreatePgjobsSchemaOp)
def _create(autogen_context: AutogenContext, op: CreatePgjobsSchemaOp) -> str:
    autogen_context.imports.add(_IMPORT)
    prefix = _prefix(autogen_context)
    return f"{prefix}create_pgjobs_schema(version={op.version}{_schema_arg(op.schema)})"


@renderers.dispatch_for(DropPgjobsSchemaOp)
def _drop(autogen_context: AutogenContext, op: DropPgjobsSchemaOp) -> str:
    autogen_context.imports.add(_IMPORT)
    prefix = _prefix(autogen_context)
    return f"{prefix}drop_pgjobs_schema(version={op.version}{_schema_arg(op.schema)})"


@renderers.dispatch_for(UpgradePgjobsSchemaOp)
def _upgrade(autogen_context: AutogenContext, op: UpgradePgjobsSchemaOp) -> str:
    autogen_context.imports.add(_IMPORT)
    prefix = _prefix(autogen_context)
    return (
        f"{prefix}upgrade_pgjobs_schema({op.to_version}, from_version={op.from_version}"
        f"{_schema_arg(op.schema)})"
    )


@renderers.dispatch_for(DowngradePgjobsSchemaOp)
def _downgrade(autogen_context: AutogenContext, op: DowngradePgjobsSchemaOp) -> str:
    autogen_context.imports.add(_IMPORT)
    prefix = _prefix(autogen_context)
    return (
        f"{prefix}downgrade_pgjobs_schema({op.to_version}, from_version={op.from_version}"
        f"{_schema_arg(op.schema)})"
    )


@renderers.dispatch_for(GrantPgjobsAccessOp)
@renderers.dispatch_for(RevokePgjobsAccessOp)
def _access(autogen_context: AutogenContext, op: GrantPgjobsAccessOp | RevokePgjobsAccessOp) -> str:
    autogen_context.imports.add(_IMPORT)
    return (
        f"{_prefix(autogen_context)}{op.verb}_pgjobs_access({op.role_name!r}, {op.access!r}"
        f"{_schema_arg(op.schema)})"
    )


@renderers.dispatch_for(CreatePgjobsIndexesOp)
@renderers.dispatch_for(DropPgjobsIndexesOp)
def _indexes(
    autogen_context: AutogenContext, op: CreatePgjobsIndexesOp | DropPgjobsIndexesOp
) -> str:
    autogen_context.imports.add(_IMPORT)
    names = ", ".join(repr(name) for name in op.names)
    return f"{_prefix(autogen_context)}{op.verb}_pgjobs_indexes({names}{_schema_arg(op.schema)})"


_TRIGGER_NAMES = ("JobTrigger", "RowId", "Row", "Fields")
_TRIGGER_IMPORT = "from sqla_pgjobs.triggers import "


def _trigger_imports(autogen_context: AutogenContext, trigger: object) -> str:
    """The trigger's constructor call, with the imports it needs added to the revision.

    Alembic writes each distinct import line once, so the names every trigger of the
    revision needs go in one merged ``from sqla_pgjobs.triggers import`` line (two lines
    importing JobTrigger would be ruff's F811 in the user's migration)."""
    text = repr(trigger)
    imports = autogen_context.imports
    names = {n for n in _TRIGGER_NAMES if f"{n}(" in text}
    for line in [line for line in imports if line.startswith(_TRIGGER_IMPORT)]:
        imports.discard(line)
        names.update(line[len(_TRIGGER_IMPORT) :].split(", "))
    imports.add(_TRIGGER_IMPORT + ", ".join(sorted(names)))
    if "timedelta(" in text:
        imports.add("from datetime import timedelta")
    return text


@renderers.dispatch_for(CreateJobTriggerOp)
def _create_trigger(autogen_context: AutogenContext, op: CreateJobTriggerOp) -> str:
    schema = "" if op.schema is None else f", schema={op.schema!r}"
    trigger = _trigger_imports(autogen_context, op.trigger)
    return f"{_prefix(autogen_context)}create_job_trigger({op.table_name!r}, {trigger}{schema})"


@renderers.dispatch_for(DropJobTriggerOp)
def _drop_trigger(autogen_context: AutogenContext, op: DropJobTriggerOp) -> str:
    schema = "" if op.schema is None else f", schema={op.schema!r}"
    trigger = (
        repr(op.trigger)
        if isinstance(op.trigger, str)
        else _trigger_imports(autogen_context, op.trigger)
    )
    return f"{_prefix(autogen_context)}drop_job_trigger({op.table_name!r}, {trigger}{schema})"
