"""sqla-pgjobs: PostgreSQL-native background jobs for SQLAlchemy 2 and Alembic.

    from sqla_pgjobs import add_job

    with Session(engine) as session, session.begin():
        session.add(order)
        session.execute(add_job("send_receipt", {"order_id": order.id}))

``__all__`` is what an application uses: enqueueing (:func:`add_job`, :func:`add_jobs`,
schedules), tasks, triggers on models, the errors, and :class:`Worker`. Importing the
package stays light for an application that only enqueues: the worker (asyncio, psycopg's
async connections, threads) is imported the first time ``sqla_pgjobs.Worker`` is used.
The wrappers of every other SQL function (``get_job``, ``complete_job``, ...) are in
:mod:`sqla_pgjobs.functions`, and importable from here too.

Importing this package changes nothing global: no event listeners, no Alembic ops. Import
:mod:`sqla_pgjobs.alembic` in an Alembic ``env.py`` to register the ops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqla_pgjobs._version import __version__
from sqla_pgjobs.errors import (
    AlreadyScheduledError,
    InvalidArgumentError,
    InvalidWorkerIdError,
    JobCancelledError,
    PgJobsError,
    SchemaNameError,
    SchemaVersionError,
)

# Imported ``as`` themselves: the low-level wrappers and constants, importable from here as
# they always were (SPEC section 3), not in ``__all__`` (their home is sqla_pgjobs.functions).
from sqla_pgjobs.functions import CANCEL_RESULTS as CANCEL_RESULTS
from sqla_pgjobs.functions import (
    JobSpec,
    add_job,
    add_jobs,
    add_scheduled_job,
    cancel_jobs,
    run_scheduled_job,
)
from sqla_pgjobs.functions import JobStatement as JobStatement
from sqla_pgjobs.functions import alive_until as alive_until
from sqla_pgjobs.functions import complete_job as complete_job
from sqla_pgjobs.functions import complete_job_batch as complete_job_batch
from sqla_pgjobs.functions import complete_jobs as complete_jobs
from sqla_pgjobs.functions import discard_jobs as discard_jobs
from sqla_pgjobs.functions import fail_job as fail_job
from sqla_pgjobs.functions import fail_job_batch as fail_job_batch
from sqla_pgjobs.functions import get_job as get_job
from sqla_pgjobs.functions import get_jobs as get_jobs
from sqla_pgjobs.functions import get_scheduled_job as get_scheduled_job
from sqla_pgjobs.functions import get_scheduled_jobs as get_scheduled_jobs
from sqla_pgjobs.functions import grant_access as grant_access
from sqla_pgjobs.functions import heartbeat as heartbeat
from sqla_pgjobs.functions import next_run_at as next_run_at
from sqla_pgjobs.functions import pause_queue as pause_queue
from sqla_pgjobs.functions import pause_task as pause_task
from sqla_pgjobs.functions import permanently_fail_jobs as permanently_fail_jobs
from sqla_pgjobs.functions import prune_job_history as prune_job_history
from sqla_pgjobs.functions import recover_jobs as recover_jobs
from sqla_pgjobs.functions import release_jobs as release_jobs
from sqla_pgjobs.functions import release_scheduled_jobs as release_scheduled_jobs
from sqla_pgjobs.functions import renew_scheduled_jobs as renew_scheduled_jobs
from sqla_pgjobs.functions import reschedule_jobs as reschedule_jobs
from sqla_pgjobs.functions import resume_queue as resume_queue
from sqla_pgjobs.functions import resume_task as resume_task
from sqla_pgjobs.functions import revoke_access as revoke_access
from sqla_pgjobs.functions import set_history_retention as set_history_retention
from sqla_pgjobs.schema import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from sqla_pgjobs.schema import LATEST_VERSION as LATEST_VERSION
from sqla_pgjobs.tasks import Job, TaskRegistry
from sqla_pgjobs.triggers import Fields, JobTrigger, Row, RowId
from sqla_pgjobs.validation import ACCESS_LEVELS as ACCESS_LEVELS

if TYPE_CHECKING:
    from sqla_pgjobs.worker import Worker

__all__ = [
    "AlreadyScheduledError",
    "Fields",
    "InvalidArgumentError",
    "InvalidWorkerIdError",
    "Job",
    "JobCancelledError",
    "JobSpec",
    "JobTrigger",
    "PgJobsError",
    "Row",
    "RowId",
    "SchemaNameError",
    "SchemaVersionError",
    "TaskRegistry",
    "Worker",
    "__version__",
    "add_job",
    "add_jobs",
    "add_scheduled_job",
    "cancel_jobs",
    "run_scheduled_job",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the worker is imported on first use of ``sqla_pgjobs.Worker``.
    if name == "Worker":
        from sqla_pgjobs.worker import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
