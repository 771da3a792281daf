"""What the job schema's Alembic operations execute.

Every statement goes through :func:`sqla_pgjobs.schema.as_text` and
``operations.execute``: online it runs on the migration's connection, offline (``--sql``)
Alembic prints it. Offline output is only correct when the environment configures
``dialect_opts={"paramstyle": "named"}`` (Alembic's stock ``env.py`` does), otherwise
every ``%`` in the function bodies is printed doubled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic.operations import Operations

from sqla_pgjobs import schema as sql
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
from sqla_pgjobs.triggers import create_trigger_sql, drop_trigger_sql

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__: list[str] = []


def _execute(operations: Operations, statements: Iterable[str]) -> None:
    for statement in statements:
        operations.execute(sql.as_text(statement))


@Operations.implementation_for(CreatePgjobsSchemaOp)
def create_pgjobs_schema(operations: Operations, operation: CreatePgjobsSchemaOp) -> None:
    _execute(operations, sql.install_statements(operation.schema, operation.version))


@Operations.implementation_for(DropPgjobsSchemaOp)
def drop_pgjobs_schema(operations: Operations, operation: DropPgjobsSchemaOp) -> None:
    _execute(operations, sql.drop_statements(operation.schema))


@Operations.implementation_for(UpgradePgjobsSchemaOp)
def upgrade_pgjobs_schema(operations: Operations, operation: UpgradePgjobsSchemaOp) -> None:
    _execute(
        operations,
        sql.upgrade_statements(operation.schema, operation.from_version, operation.to_version),
    )


@Operations.implementation_for(DowngradePgjobsSchemaOp)
def downgrade_pgjobs_schema(operations: Operations, operation: DowngradePgjobsSchemaOp) -> None:
    _execute(
        operations,
        sql.downgrade_statements(operation.schema, operation.from_version, operation.to_version),
    )


@Operations.implementation_for(GrantPgjobsAccessOp)
@Operations.implementation_for(RevokePgjobsAccessOp)
def change_pgjobs_access(
    operations: Operations, operation: GrantPgjobsAccessOp | RevokePgjobsAccessOp
) -> None:
    statement = sql.access_statement(
        operation.verb, operation.schema, operation.role_name, operation.access
    )
    _execute(operations, [statement])


@Operations.implementation_for(CreatePgjobsIndexesOp)
def create_pgjobs_indexes(operations: Operations, operation: CreatePgjobsIndexesOp) -> None:
    context = operations.get_context()
    with context.autocommit_block():
        # Offline there is no database to ask which indexes a failed build left invalid.
        invalid = (
            [] if context.as_sql else sql.invalid_indexes(operations.get_bind(), operation.schema)
        )
        _execute(
            operations,
            sql.create_index_statements(operation.names, operation.schema, invalid=invalid),
        )


@Operations.implementation_for(DropPgjobsIndexesOp)
def drop_pgjobs_indexes(operations: Operations, operation: DropPgjobsIndexesOp) -> None:
    with operations.get_context().autocommit_block():
        _execute(operations, sql.drop_index_statements(operation.names, operation.schema))


@Operations.implementation_for(CreateJobTriggerOp)
def create_job_trigger(operations: Operations, operation: CreateJobTriggerOp) -> None:
    _execute(
        operations,
        [create_trigger_sql(operation.trigger, operation.table_name, operation.schema)],
    )


@Operations.implementation_for(DropJobTriggerOp)
def drop_job_trigger(operations: Operations, operation: DropJobTriggerOp) -> None:
    _execute(operations, [drop_trigger_sql(operation.name, operation.table_name, operation.schema)])
