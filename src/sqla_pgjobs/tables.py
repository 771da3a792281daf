"""SQLAlchemy Core tables mirroring the job schema, for queries of your own.

They live in schema ``app_jobs``. If you installed the job schema under another name, map
it on your engine or connection, and these tables (and the function wrappers) follow::

    engine = engine.execution_options(schema_translate_map={"app_jobs": "my_jobs"})

The schema itself is created by the SQL files (``op.create_pgjobs_schema()``), never by
``metadata.create_all()``: these tables carry columns and keys only.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    Interval,
    MetaData,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

from sqla_pgjobs.schema import DEFAULT_SCHEMA

__all__ = [
    "cancel_requests",
    "history_retention",
    "job_history",
    "job_queues",
    "job_trace_contexts",
    "jobs",
    "metadata",
    "migrations",
    "pauses",
    "scheduled_jobs",
    "workers",
]

#: The job schema's tables; keep it out of your own ``target_metadata``.
metadata = MetaData(schema=DEFAULT_SCHEMA)


def _timestamp(name: str, *, nullable: bool = True) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("database_id", Uuid),
    Column("queue_name", Text),
    Column("task_identifier", Text, nullable=False),
    Column("payload", JSON(none_as_null=True), nullable=False),
    Column("priority", Integer, nullable=False),
    _timestamp("run_at", nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("key", Text),
    Column("last_error", Text),
    _timestamp("locked_at"),
    Column("locked_by", Text),
    _timestamp("created_at", nullable=False),
    _timestamp("updated_at", nullable=False),
)

scheduled_jobs = Table(
    "scheduled_jobs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("database_id", Uuid),
    Column("queue_name", Text),
    Column("task_identifier", Text, nullable=False),
    Column("payload", JSON(none_as_null=True), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("key", Text),
    _timestamp("locked_at"),
    Column("locked_by", Text),
    Column("schedule_info", JSON(none_as_null=True), nullable=False),
    _timestamp("last_scheduled"),
    Column("last_scheduled_id", BigInteger),
    _timestamp("lease_expires_at"),
)

job_queues = Table(
    "job_queues",
    metadata,
    Column("queue_name", Text, primary_key=True),
    Column("job_count", Integer, nullable=False),
    _timestamp("locked_at"),
    Column("locked_by", Text),
)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", Text, primary_key=True),
    Column("heartbeat_timeout", Interval, nullable=False),
    _timestamp("last_heartbeat", nullable=False),
    _timestamp("started_at", nullable=False),
    Column("info", JSON(none_as_null=True), nullable=False),
)

#: Finished jobs (schema version 2): one row per run to a finish, kept for as long as
#: :data:`history_retention` says.
job_history = Table(
    "job_history",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("job_id", BigInteger, nullable=False),
    Column("database_id", Uuid),
    Column("task_identifier", Text, nullable=False),
    Column("queue_name", Text),
    Column("payload", JSON(none_as_null=True), nullable=False),
    Column("key", Text),
    Column("priority", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    _timestamp("created_at", nullable=False),
    _timestamp("run_at", nullable=False),
    _timestamp("first_started_at"),
    _timestamp("started_at"),
    _timestamp("finished_at", nullable=False),
    Column("outcome", Text, nullable=False),
    Column("last_error", Text),
    Column("worker_id", Text),
    _timestamp("expires_at"),
)

#: How long history rows are kept, by outcome, task and queue (schema version 2).
history_retention = Table(
    "history_retention",
    metadata,
    Column("task_identifier", Text),
    Column("queue_name", Text),
    Column("outcome", Text, nullable=False),
    Column("keep", Interval),
)

#: Paused queues and tasks (schema version 2): kind is ``queue`` or ``task``.
pauses = Table(
    "pauses",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    _timestamp("paused_at", nullable=False),
    Column("paused_by", Text, nullable=False),
)

#: Running jobs an operator asked to stop (schema version 2), with the worker that held
#: each when asked; a row goes when its job ends.
cancel_requests = Table(
    "cancel_requests",
    metadata,
    Column("job_id", BigInteger, primary_key=True),
    Column("worker_id", Text, nullable=False),
    _timestamp("requested_at", nullable=False),
    Column("requested_by", Text, nullable=False),
)

#: The trace context of the span that enqueued a job (schema version 2), while the job or
#: its history row lasts: :mod:`sqla_pgjobs.tracing`.
job_trace_contexts = Table(
    "job_trace_contexts",
    metadata,
    Column("job_id", BigInteger, primary_key=True),
    Column("context", JSONB, nullable=False),
)

migrations = Table(
    "migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    _timestamp("installed_at", nullable=False),
)
