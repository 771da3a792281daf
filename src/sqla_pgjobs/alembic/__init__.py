"""Alembic operations for the job schema.

Import this module in an Alembic ``env.py``::

    import sqla_pgjobs.alembic  # noqa: F401  (registers op.create_pgjobs_schema and friends)

and a revision can then say::

    def upgrade() -> None:
        op.create_pgjobs_schema()

    def downgrade() -> None:
        op.drop_pgjobs_schema()

``op.create_pgjobs_schema()`` with no arguments always installs schema **version 1** in
schema ``app_jobs``, so a revision written today replays identically after any library
upgrade. Newer versions arrive through ``op.upgrade_pgjobs_schema(from_version=1,
to_version=2)`` in a later revision (or ``op.create_pgjobs_schema(version=2)`` in a new
project). Both work online and in offline ``--sql`` mode.

Enqueue triggers declared on models (:class:`sqla_pgjobs.triggers.JobTrigger`) have their
own operations, ``op.create_job_trigger`` and ``op.drop_job_trigger``, which autogenerate
writes when models and database differ (:mod:`sqla_pgjobs.alembic.compare`).
"""

from __future__ import annotations

from sqla_pgjobs.alembic import compare, render, toimpl
from sqla_pgjobs.alembic.autogenerate import include_name, pgjobs_include_name
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

__all__ = [
    "CreateJobTriggerOp",
    "CreatePgjobsIndexesOp",
    "CreatePgjobsSchemaOp",
    "DowngradePgjobsSchemaOp",
    "DropJobTriggerOp",
    "DropPgjobsIndexesOp",
    "DropPgjobsSchemaOp",
    "GrantPgjobsAccessOp",
    "RevokePgjobsAccessOp",
    "UpgradePgjobsSchemaOp",
    "compare",
    "include_name",
    "pgjobs_include_name",
    "render",
    "toimpl",
]
