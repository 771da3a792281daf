"""How autogenerate writes the job schema's operations into a revision file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic.autogenerate import renderers

from sqla_pgjobs.alembic.ops import (
    CreatePgjobsSchemaOp,
    DowngradePgjobsSchemaOp,
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
