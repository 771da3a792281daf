"""sqla-pgjobs: PostgreSQL-native background jobs for SQLAlchemy 2 and Alembic.

    from sqla_pgjobs import add_job

    with Session(engine) as session, session.begin():
        session.add(order)
        session.execute(add_job("send_receipt", {"order_id": order.id}))

Importing this package changes nothing global: no event listeners, no Alembic ops. Import
:mod:`sqla_pgjobs.alembic` in an Alembic ``env.py`` to register the ops.
"""

from __future__ import annotations

from sqla_pgjobs._version import __version__
from sqla_pgjobs.errors import (
    AlreadyScheduledError,
    InvalidArgumentError,
    InvalidWorkerIdError,
    PgJobsError,
    SchemaNameError,
    SchemaVersionError,
)
from sqla_pgjobs.functions import (
    ACCESS_LEVELS,
    JobSpec,
    JobStatement,
    add_job,
    add_jobs,
    add_scheduled_job,
    complete_job,
    complete_job_batch,
    complete_jobs,
    fail_job,
    fail_job_batch,
    get_job,
    get_jobs,
    get_scheduled_job,
    get_scheduled_jobs,
    grant_access,
    heartbeat,
    next_run_at,
    permanently_fail_jobs,
    recover_jobs,
    release_jobs,
    release_scheduled_jobs,
    renew_scheduled_jobs,
    reschedule_jobs,
    revoke_access,
    run_scheduled_job,
)
from sqla_pgjobs.schema import DEFAULT_SCHEMA, LATEST_VERSION
from sqla_pgjobs.worker.tasks import Job, TaskRegistry

__all__ = [
    "ACCESS_LEVELS",
    "DEFAULT_SCHEMA",
    "LATEST_VERSION",
    "AlreadyScheduledError",
    "InvalidArgumentError",
    "InvalidWorkerIdError",
    "Job",
    "JobSpec",
    "JobStatement",
    "PgJobsError",
    "SchemaNameError",
    "SchemaVersionError",
    "TaskRegistry",
    "__version__",
    "add_job",
    "add_jobs",
    "add_scheduled_job",
    "complete_job",
    "complete_job_batch",
    "complete_jobs",
    "fail_job",
    "fail_job_batch",
    "get_job",
    "get_jobs",
    "get_scheduled_job",
    "get_scheduled_jobs",
    "grant_access",
    "heartbeat",
    "next_run_at",
    "permanently_fail_jobs",
    "recover_jobs",
    "release_jobs",
    "release_scheduled_jobs",
    "renew_scheduled_jobs",
    "reschedule_jobs",
    "revoke_access",
    "run_scheduled_job",
]
