"""Typed twins of the job schema's Alembic operations.

``op.create_pgjobs_schema()`` is added to Alembic's ``op`` at run time, so a type checker
reading a revision cannot see it. Revisions that are type-checked can call these instead;
each does exactly what the ``op`` method of the same name does::

    from sqla_pgjobs.alembic import op as pgjobs

    def upgrade() -> None:
        pgjobs.create_pgjobs_schema()

Their signatures are checked against the registered operations by the test suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import op

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
    from sqla_pgjobs.triggers import JobTrigger

__all__ = [
    "create_job_trigger",
    "create_pgjobs_indexes",
    "create_pgjobs_schema",
    "downgrade_pgjobs_schema",
    "drop_job_trigger",
    "drop_pgjobs_indexes",
    "drop_pgjobs_schema",
    "grant_pgjobs_access",
    "revoke_pgjobs_access",
    "upgrade_pgjobs_schema",
]


def create_pgjobs_schema(schema: str = DEFAULT_SCHEMA, version: int = 1) -> None:
    """``op.create_pgjobs_schema``: create the job schema (default: version 1 in app_jobs)."""
    op.invoke(CreatePgjobsSchemaOp(schema, version))


def drop_pgjobs_schema(schema: str = DEFAULT_SCHEMA, version: int = 1) -> None:
    """``op.drop_pgjobs_schema``: drop the job schema and all its jobs."""
    op.invoke(DropPgjobsSchemaOp(schema, version))


def upgrade_pgjobs_schema(
    to_version: int, *, from_version: int, schema: str = DEFAULT_SCHEMA
) -> None:
    """``op.upgrade_pgjobs_schema``: move the job schema up to ``to_version``."""
    op.invoke(UpgradePgjobsSchemaOp(to_version, from_version, schema))


def downgrade_pgjobs_schema(
    to_version: int, *, from_version: int, schema: str = DEFAULT_SCHEMA
) -> None:
    """``op.downgrade_pgjobs_schema``: move the job schema down to ``to_version``."""
    op.invoke(DowngradePgjobsSchemaOp(to_version, from_version, schema))


def grant_pgjobs_access(role_name: str, access: str, *, schema: str = DEFAULT_SCHEMA) -> None:
    """``op.grant_pgjobs_access``: give an existing role an access level."""
    op.invoke(GrantPgjobsAccessOp(role_name, access, schema))


def revoke_pgjobs_access(role_name: str, access: str, *, schema: str = DEFAULT_SCHEMA) -> None:
    """``op.revoke_pgjobs_access``: take back what granting the level gave."""
    op.invoke(RevokePgjobsAccessOp(role_name, access, schema))


def create_pgjobs_indexes(*names: str, schema: str = DEFAULT_SCHEMA) -> None:
    """``op.create_pgjobs_indexes``: build optional indexes concurrently (autocommit)."""
    op.invoke(CreatePgjobsIndexesOp(names, schema))


def drop_pgjobs_indexes(*names: str, schema: str = DEFAULT_SCHEMA) -> None:
    """``op.drop_pgjobs_indexes``: drop optional indexes concurrently (autocommit)."""
    op.invoke(DropPgjobsIndexesOp(names, schema))


def create_job_trigger(table_name: str, trigger: JobTrigger, *, schema: str | None = None) -> None:
    """``op.create_job_trigger``: create an enqueue trigger on a table."""
    op.invoke(CreateJobTriggerOp(table_name, trigger, schema))


def drop_job_trigger(
    table_name: str, trigger: JobTrigger | str, *, schema: str | None = None
) -> None:
    """``op.drop_job_trigger``: drop an enqueue trigger (a JobTrigger, or its name)."""
    op.invoke(DropJobTriggerOp(table_name, trigger, schema))
