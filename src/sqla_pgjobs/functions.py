"""Statements for the job schema's SQL functions, one wrapper per function.

Each wrapper checks its arguments (raising :class:`~sqla_pgjobs.errors.InvalidArgumentError`
before anything reaches the database) and returns a ready statement for
``Session.execute``, ``Connection.execute`` or their async twins::

    job = session.execute(add_job("send_email", {"to": "a@b.c"})).one()
    job.id, job.payload, job.run_at          # int, dict, aware datetime

Functions that return one row give no row at all when the SQL function returns its NULL
row ("nothing to take"): use ``.one_or_none()``. Functions that return sets give one row
per job. Errors the database raises for these statements arrive as the package's own
exceptions (:mod:`sqla_pgjobs.errors`), with the driver's error as ``__cause__``.

Each statement is built once with bind parameters, and a call only supplies the values:
building the table-valued construct per call cost 160 us, 2.6 times the execution.
The job schema is ``app_jobs``; another name follows ``schema_translate_map``, as the
tables in :mod:`sqla_pgjobs.tables` do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    Interval,
    Select,
    Text,
    Uuid,
    bindparam,
    cast,
    column,
    func,
    select,
    table,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import Function

from sqla_pgjobs import tracing
from sqla_pgjobs import validation as check
from sqla_pgjobs.errors import InvalidArgumentError, translate
from sqla_pgjobs.schedules import parse_schedule
from sqla_pgjobs.schema import DEFAULT_SCHEMA
from sqla_pgjobs.tables import history_retention, jobs, scheduled_jobs
from sqla_pgjobs.validation import ACCESS_LEVELS

if TYPE_CHECKING:
    import uuid
    from datetime import datetime, timedelta

    from sqlalchemy import TableClause
    from sqlalchemy.engine import Connection, CursorResult
    from sqlalchemy.engine.interfaces import (
        CoreExecuteOptionsParameter,
        _CoreMultiExecuteParams,
    )
    from sqlalchemy.sql.compiler import SQLCompiler
    from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "ACCESS_LEVELS",
    "CANCEL_RESULTS",
    "JobSpec",
    "JobStatement",
    "add_job",
    "add_jobs",
    "add_scheduled_job",
    "alive_until",
    "cancel_jobs",
    "complete_job",
    "complete_job_batch",
    "complete_jobs",
    "discard_jobs",
    "fail_job",
    "fail_job_batch",
    "fail_jobs_for_good",
    "get_job",
    "get_jobs",
    "get_scheduled_job",
    "get_scheduled_jobs",
    "grant_access",
    "heartbeat",
    "next_run_at",
    "pause_queue",
    "pause_task",
    "permanently_fail_jobs",
    "prune_job_history",
    "recover_jobs",
    "release_jobs",
    "release_scheduled_jobs",
    "renew_scheduled_jobs",
    "reschedule_jobs",
    "resume_queue",
    "resume_task",
    "retry_jobs_at",
    "revoke_access",
    "run_scheduled_job",
    "set_history_retention",
]


class _JobFunction(Function[Any]):
    """``app_jobs.<name>(...)``, with the schema subject to ``schema_translate_map``."""

    inherit_cache = True
    schema = DEFAULT_SCHEMA
    _use_schema_map = True


@compiles(_JobFunction)
def _compile_job_function(element: _JobFunction, compiler: SQLCompiler, **kw: Any) -> str:
    preparer = compiler.preparer
    schema = preparer.quote_schema(preparer.schema_for_object(element))
    return f"{schema}.{preparer.quote(element.name)}{compiler.function_argspec(element, **kw)}"


class JobStatement(Select[Any]):
    """A ``SELECT`` from a job function that raises the package's exceptions.

    The database's errors for these statements (a too-short worker id, a schedule that
    already fired, a broken CHECK limit) become :mod:`sqla_pgjobs.errors` exceptions here,
    at the boundary, whichever of Session, Connection or their async twins executes it.
    """

    inherit_cache = True

    def _execute_on_connection(
        self,
        connection: Connection,
        distilled_params: _CoreMultiExecuteParams,
        execution_options: CoreExecuteOptionsParameter,
    ) -> CursorResult[Any]:
        try:
            return super()._execute_on_connection(connection, distilled_params, execution_options)
        except DBAPIError as exc:
            translated = translate(exc)
            if translated is None:
                raise
            raise translated from exc


# --- Statement templates ------------------------------------------------------------------

_TEXT_ARRAY = ARRAY(Text)
_ID_ARRAY = ARRAY(BigInteger)
_TIMESTAMP = DateTime(timezone=True)


def _json(name: str) -> ColumnElement[Any]:
    # Bound as the text that validation already produced, so it is encoded only once.
    return cast(bindparam(name, type_=Text), JSON)


def _rows(
    name: str, returns: TableClause, *arguments: ColumnElement[Any], nullable: bool
) -> JobStatement:
    """``SELECT <columns> FROM app_jobs.<name>(<arguments>)``, typed by ``returns``.

    ``nullable``: the function returns a composite that is all NULL for "nothing"; filter
    that row out so that nothing means no row.
    """
    rows = _JobFunction(name, *arguments).table_valued(*returns.c).alias(name)
    statement = JobStatement(*rows.c)
    return statement.where(rows.c.id.is_not(None)) if nullable else statement


def _call(name: str, *arguments: ColumnElement[Any]) -> JobStatement:
    """``SELECT app_jobs.<name>(<arguments>)`` for a function returning void."""
    return JobStatement(_JobFunction(name, *arguments))


_ADD_JOB_ARGUMENTS = (
    bindparam("db_id", type_=Uuid),
    bindparam("identifier", type_=Text),
    _json("payload"),
    bindparam("job_key", type_=Text),
    bindparam("queue_name", type_=Text),
    bindparam("run_at", type_=_TIMESTAMP),
    bindparam("max_attempts", type_=Integer),
    bindparam("priority", type_=Integer),
)
_ADD_JOB = _rows("add_job", jobs, *_ADD_JOB_ARGUMENTS, nullable=True)
# The job's id only (add_job(returning="id")): a smaller result and a smaller statement.
_ADD_JOB_ID = _rows(
    "add_job", table("add_job", column("id", BigInteger)), *_ADD_JOB_ARGUMENTS, nullable=True
)
_ADD_JOBS = _rows(
    "add_jobs",
    jobs,
    bindparam("identifiers", type_=_TEXT_ARRAY),
    cast(bindparam("payloads", type_=_TEXT_ARRAY), ARRAY(JSON)),
    bindparam("db_ids", type_=ARRAY(Uuid)),
    bindparam("job_keys", type_=_TEXT_ARRAY),
    bindparam("queue_names", type_=_TEXT_ARRAY),
    bindparam("run_ats", type_=ARRAY(_TIMESTAMP)),
    bindparam("max_attempts", type_=ARRAY(Integer)),
    bindparam("priorities", type_=ARRAY(Integer)),
    nullable=False,
)


def _traced(statement: JobStatement) -> JobStatement:
    """``statement`` (an enqueue, returning jobs) that also stores the trace context bound
    as ``trace_context`` with the jobs it returns (:mod:`sqla_pgjobs.tracing`), in the
    same statement and transaction. Same columns as ``statement``. Renders::

        WITH job AS (<statement>),
             traced AS (SELECT app_jobs.set_trace_contexts(
                          (SELECT array_agg(job.id) FROM job),
                          CAST(:trace_context AS JSONB)) AS stored)
        SELECT job.* FROM job JOIN traced ON true
    """
    job = statement.cte("job")
    stored = select(
        _JobFunction(
            "set_trace_contexts",
            select(func.array_agg(job.c.id)).scalar_subquery(),
            cast(bindparam("trace_context", type_=Text), JSONB),
        ).label("stored")
    ).cte("traced")
    return JobStatement(*job.c).select_from(job.join(stored, true()))


# add_job's statements by what it returns: (untraced, traced).
_ADD_JOB_BY_RETURNING = {
    "job": (_ADD_JOB, _traced(_ADD_JOB)),
    "id": (_ADD_JOB_ID, _traced(_ADD_JOB_ID)),
}
_ADD_JOBS_TRACED = _traced(_ADD_JOBS)
_ADD_SCHEDULED_JOB = _rows(
    "add_scheduled_job",
    scheduled_jobs,
    bindparam("db_id", type_=Uuid),
    bindparam("identifier", type_=Text),
    _json("payload"),
    _json("schedule_info"),
    bindparam("job_key", type_=Text),
    bindparam("queue_name", type_=Text),
    bindparam("max_attempts", type_=Integer),
    bindparam("priority", type_=Integer),
    nullable=True,
)
_GET_JOBS = _rows(
    "get_jobs",
    jobs,
    bindparam("worker_id", type_=Text),
    bindparam("task_identifiers", type_=_TEXT_ARRAY),
    bindparam("job_expiry", type_=Interval),
    bindparam("max_jobs", type_=Integer),
    nullable=False,
)
_GET_JOB = _rows(
    "get_job",
    jobs,
    bindparam("worker_id", type_=Text),
    bindparam("task_identifiers", type_=_TEXT_ARRAY),
    bindparam("job_expiry", type_=Interval),
    nullable=True,
)
_COMPLETE_JOB = _rows(
    "complete_job",
    jobs,
    bindparam("worker_id", type_=Text),
    bindparam("job_id", type_=BigInteger),
    nullable=True,
)
_COMPLETE_JOB_BATCH = _rows(
    "complete_job_batch",
    jobs,
    bindparam("worker_id", type_=Text),
    bindparam("job_ids", type_=_ID_ARRAY),
    nullable=False,
)
_FAIL_JOB = _rows(
    "fail_job",
    jobs,
    bindparam("worker_id", type_=Text),
    bindparam("job_id", type_=BigInteger),
    bindparam("error_message", type_=Text),
    nullable=True,
)
# The batch-failing functions' parameters (see _failures).
_FAILURES = (
    bindparam("worker_id", type_=Text),
    bindparam("job_ids", type_=_ID_ARRAY),
    bindparam("error_messages", type_=_TEXT_ARRAY),
)
_FAIL_JOB_BATCH = _rows("fail_job_batch", jobs, *_FAILURES, nullable=False)
_FAIL_JOBS_FOR_GOOD = _rows("fail_jobs_for_good", jobs, *_FAILURES, nullable=False)
_RETRY_JOBS_AT = _rows(
    "retry_jobs_at",
    jobs,
    bindparam("worker_id", type_=Text),
    bindparam("job_ids", type_=_ID_ARRAY),
    bindparam("run_ats", type_=ARRAY(_TIMESTAMP)),
    bindparam("error_messages", type_=_TEXT_ARRAY),
    bindparam("refunds", type_=ARRAY(Boolean)),
    nullable=False,
)
_RELEASE_JOBS = _call(
    "release_jobs", bindparam("worker_id", type_=Text), bindparam("keep_job_ids", type_=_ID_ARRAY)
)
_HEARTBEAT = _call(
    "heartbeat",
    bindparam("worker_id", type_=Text),
    bindparam("heartbeat_timeout", type_=Interval),
    _json("info"),
)
_RECOVER_JOBS = _call("recover_jobs", bindparam("job_expiry", type_=Interval))
_NEXT_RUN_AT = _call("next_run_at", bindparam("task_identifiers", type_=_TEXT_ARRAY))
_COMPLETE_JOBS = _rows(
    "complete_jobs",
    jobs,
    bindparam("job_ids", type_=_ID_ARRAY),
    bindparam("job_expiry", type_=Interval),
    bindparam("force", type_=Boolean),
    nullable=False,
)
_PERMANENTLY_FAIL_JOBS = _rows(
    "permanently_fail_jobs",
    jobs,
    bindparam("job_ids", type_=_ID_ARRAY),
    bindparam("error_message", type_=Text),
    bindparam("job_expiry", type_=Interval),
    bindparam("force", type_=Boolean),
    nullable=False,
)
_DISCARD_JOBS = _rows(
    "discard_jobs",
    jobs,
    bindparam("job_ids", type_=_ID_ARRAY),
    bindparam("job_expiry", type_=Interval),
    bindparam("force", type_=Boolean),
    nullable=False,
)
_CANCELLED = table("cancel_jobs", column("job_id", BigInteger), column("result", Text))
_RESCHEDULE_JOBS = _rows(
    "reschedule_jobs",
    jobs,
    bindparam("job_ids", type_=_ID_ARRAY),
    bindparam("run_at", type_=_TIMESTAMP),
    bindparam("priority", type_=Integer),
    bindparam("attempts", type_=Integer),
    bindparam("max_attempts", type_=Integer),
    bindparam("job_expiry", type_=Interval),
    bindparam("force", type_=Boolean),
    nullable=False,
)
_GET_SCHEDULED_JOBS = _rows(
    "get_scheduled_jobs",
    scheduled_jobs,
    bindparam("worker_id", type_=Text),
    bindparam("task_identifiers", type_=_TEXT_ARRAY),
    bindparam("lease", type_=Interval),
    bindparam("max_jobs", type_=Integer),
    nullable=False,
)
_GET_SCHEDULED_JOB = _rows(
    "get_scheduled_job",
    scheduled_jobs,
    bindparam("worker_id", type_=Text),
    bindparam("task_identifiers", type_=_TEXT_ARRAY),
    bindparam("lease", type_=Interval),
    nullable=True,
)
_RENEW_SCHEDULED_JOBS = _rows(
    "renew_scheduled_jobs",
    scheduled_jobs,
    bindparam("worker_id", type_=Text),
    bindparam("ids", type_=_ID_ARRAY),
    bindparam("lease", type_=Interval),
    nullable=False,
)
_RELEASE_SCHEDULED_JOBS = _call(
    "release_scheduled_jobs",
    bindparam("worker_id", type_=Text),
    bindparam("ids", type_=_ID_ARRAY),
)
_RUN_SCHEDULED_JOB = _rows(
    "run_scheduled_job",
    jobs,
    bindparam("scheduled_job_id", type_=BigInteger),
    bindparam("job_expiry", type_=Interval),
    bindparam("fire_time", type_=_TIMESTAMP),
    nullable=True,
)
_SET_HISTORY_RETENTION = _rows(
    "set_history_retention",
    history_retention,
    bindparam("outcome", type_=Text),
    bindparam("keep", type_=Interval),
    bindparam("task_identifier", type_=Text),
    bindparam("queue_name", type_=Text),
    nullable=False,
)
_PRUNE_JOB_HISTORY = _call(
    "prune_job_history",
    bindparam("max_rows", type_=Integer),
    bindparam("older_than", type_=Interval),
)
_PAUSE_QUEUE = _call("pause_queue", bindparam("queue_name", type_=Text))
_RESUME_QUEUE = _call("resume_queue", bindparam("queue_name", type_=Text))
_PAUSE_TASK = _call("pause_task", bindparam("task_identifier", type_=Text))
_RESUME_TASK = _call("resume_task", bindparam("task_identifier", type_=Text))
_GRANT_ACCESS = _call(
    "grant_access", bindparam("role_name", type_=Text), bindparam("access", type_=Text)
)
_REVOKE_ACCESS = _call(
    "revoke_access", bindparam("role_name", type_=Text), bindparam("access", type_=Text)
)


# --- Argument checks shared by several wrappers -------------------------------------------


def _task_filter(task_identifiers: Iterable[str] | None) -> list[str] | None:
    if task_identifiers is None:
        return None
    names = check.check_list(
        "task_identifiers", task_identifiers, "it must be a list of task names (or None for any)"
    )
    return [str(check.check_name(f"task_identifiers[{i}]", name)) for i, name in enumerate(names)]


def _max_jobs(value: object) -> int:
    count = check.check_positive("max_jobs", value, optional=False)
    assert count is not None
    return count


# --- Enqueueing ---------------------------------------------------------------------------


def add_job(
    identifier: str,
    payload: Any = None,
    *,
    db_id: uuid.UUID | str | None = None,
    job_key: str | None = None,
    queue_name: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    priority: int | None = None,
    returning: Literal["job", "id"] = "job",
) -> JobStatement:
    """Enqueue a job for task ``identifier`` with a JSON ``payload``.

    ``job_key`` makes the call idempotent: a pending job of the same tenant with that key
    is updated instead of a new one added. ``queue_name`` runs jobs of one queue one at a
    time; ``run_at`` delays the job (an aware datetime); lower ``priority`` runs first;
    ``db_id`` is the tenant (None: none). None means the default everywhere. Renders::

        SELECT add_job.id, add_job.database_id, ... FROM app_jobs.add_job(
            :db_id, :identifier, CAST(:payload AS JSON), :job_key, :queue_name,
            :run_at, :max_attempts, :priority) AS add_job WHERE add_job.id IS NOT NULL

    ``returning="id"`` returns the job's ``id`` only (``.scalar_one()``): the fastest
    way to enqueue one job per transaction, with a smaller result to read and a smaller
    statement to look up in SQLAlchemy's cache (see the benchmarks).

    With tracing on (:func:`sqla_pgjobs.tracing.instrument`) and a span current, the
    statement also stores the trace context with the job (schema version 2).
    """
    if not isinstance(returning, str) or returning not in _ADD_JOB_BY_RETURNING:
        raise InvalidArgumentError("returning", returning, "it must be 'job' or 'id'")
    plain, traced = _ADD_JOB_BY_RETURNING[returning]
    values = {
        "db_id": check.check_tenant("db_id", db_id),
        "identifier": check.check_name("identifier", identifier),
        "payload": check.check_payload("payload", payload),
        "job_key": check.check_key("job_key", job_key),
        "queue_name": check.check_name("queue_name", queue_name, optional=True),
        "run_at": check.check_aware("run_at", run_at),
        "max_attempts": check.check_positive("max_attempts", max_attempts),
        "priority": check.check_priority("priority", priority),
    }
    context = tracing.enqueue_context(identifier)
    if context is None:
        return plain.params(values)
    return traced.params(values, trace_context=context)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One job for :func:`add_jobs`; the fields mean what :func:`add_job`'s arguments mean."""

    identifier: str
    payload: Any = None
    db_id: uuid.UUID | str | None = None
    job_key: str | None = None
    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    priority: int | None = None


_JOB_FIELDS = tuple(field.name for field in dataclasses.fields(JobSpec))


def add_jobs(
    jobs: Iterable[JobSpec | Mapping[str, Any]] | Select[Any], *, returning: bool = True
) -> JobStatement:
    """Enqueue many jobs in one statement, with one NOTIFY per transaction.

    ``jobs`` is an iterable of :class:`JobSpec` (or mappings with the same keys), or a
    ``select()`` whose columns are labelled like those fields (``identifier`` required,
    ``payload`` of type ``json``): its rows become jobs inside the database, without a
    round trip through Python::

        add_jobs(select(literal("ship").label("identifier"),
                        func.json_build_object("id", orders.c.id).label("payload")))

    Returns one row per job, unkeyed ones first; with ``returning=False``, one row whose
    ``added`` column counts them (the rows are not sent: for big batches, nearly twice as
    fast). Renders::

        SELECT ... FROM app_jobs.add_jobs(:identifiers, CAST(:payloads AS JSON[]), :db_ids,
            :job_keys, :queue_names, :run_ats, :max_attempts, :priorities) AS add_jobs
    """
    statement = _add_jobs_from_select(jobs) if isinstance(jobs, Select) else _add_jobs_from(jobs)
    if returning:
        return statement
    return JobStatement(func.count().label("added")).select_from(statement.subquery("added"))


def _add_jobs_from(jobs: Iterable[JobSpec | Mapping[str, Any]]) -> JobStatement:
    specs = check.check_list(
        "jobs", jobs, "it must be an iterable of JobSpec (or mappings), or a select()"
    )
    columns: dict[str, list[Any]] = {name: [] for name in _JOB_FIELDS}
    for i, spec in enumerate(specs):
        fields = _spec_fields(i, spec)
        where = f"jobs[{i}]."
        columns["identifier"].append(check.check_name(where + "identifier", fields["identifier"]))
        columns["payload"].append(check.check_payload(where + "payload", fields["payload"]))
        columns["db_id"].append(check.check_tenant(where + "db_id", fields["db_id"]))
        columns["job_key"].append(check.check_key(where + "job_key", fields["job_key"]))
        columns["queue_name"].append(
            check.check_name(where + "queue_name", fields["queue_name"], optional=True)
        )
        columns["run_at"].append(check.check_aware(where + "run_at", fields["run_at"]))
        columns["max_attempts"].append(
            check.check_positive(where + "max_attempts", fields["max_attempts"])
        )
        columns["priority"].append(check.check_priority(where + "priority", fields["priority"]))

    def optional(name: str) -> list[Any] | None:
        # An all-None column goes as NULL: less to send, and the defaults apply.
        values = columns[name]
        return values if any(value is not None for value in values) else None

    identifiers = columns["identifier"]
    context = tracing.enqueue_context(
        identifiers[0] if identifiers and len(set(identifiers)) == 1 else None, len(identifiers)
    )
    template = _ADD_JOBS if context is None else _ADD_JOBS_TRACED.params(trace_context=context)
    return template.params(
        identifiers=identifiers,
        payloads=optional("payload"),
        db_ids=optional("db_id"),
        job_keys=optional("job_key"),
        queue_names=optional("queue_name"),
        run_ats=optional("run_at"),
        max_attempts=optional("max_attempts"),
        priorities=optional("priority"),
    )


def _spec_fields(index: int, spec: JobSpec | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, JobSpec):
        # Not dataclasses.asdict: it deep-copies every payload (65% of add_jobs' time), and
        # overflows the stack on a deeply nested one before the payload check could refuse it.
        return {name: getattr(spec, name) for name in _JOB_FIELDS}
    if not isinstance(spec, Mapping):
        raise InvalidArgumentError(f"jobs[{index}]", spec, "it must be a JobSpec or a mapping")
    unknown = set(spec) - set(_JOB_FIELDS)
    if unknown:
        raise InvalidArgumentError(
            f"jobs[{index}]", spec, f"its keys must be among {', '.join(_JOB_FIELDS)}"
        )
    if "identifier" not in spec:
        raise InvalidArgumentError(f"jobs[{index}]", spec, "it must have an identifier")
    return {name: spec.get(name) for name in _JOB_FIELDS}


_SELECT_COLUMN_TYPES: dict[str, Any] = {
    "identifier": ARRAY(Text),
    "payload": ARRAY(JSON),
    "db_id": ARRAY(Uuid),
    "job_key": ARRAY(Text),
    "queue_name": ARRAY(Text),
    "run_at": ARRAY(_TIMESTAMP),
    "max_attempts": ARRAY(Integer),
    "priority": ARRAY(Integer),
}


def _add_jobs_from_select(source: Select[Any]) -> JobStatement:
    rows = source.subquery("job_source")
    names = set(rows.c.keys())
    unknown = names - set(_JOB_FIELDS)
    if "identifier" not in names or unknown:
        raise InvalidArgumentError(
            "jobs",
            source,
            f"a select() for add_jobs must have a column labelled identifier, and its other "
            f"columns must be among {', '.join(_JOB_FIELDS[1:])}"
            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""),
        )
    # One aggregate query: every array_agg sees the rows in the same order.
    arrays = select(
        *(
            cast(func.array_agg(rows.c[name]), array_type).label(name)
            for name, array_type in _SELECT_COLUMN_TYPES.items()
            if name in names
        )
    ).subquery("job_arrays")
    arguments = [
        arrays.c[name] if name in names else cast(None, array_type)
        for name, array_type in _SELECT_COLUMN_TYPES.items()
    ]
    created = _JobFunction("add_jobs", *arguments).table_valued(*jobs.c).lateral("add_jobs")
    statement = JobStatement(*created.c).select_from(arrays).join(created, true())
    context = tracing.enqueue_context(None, None)
    return statement if context is None else _traced(statement).params(trace_context=context)


def add_scheduled_job(
    identifier: str,
    payload: Any = None,
    schedule_info: Any = None,
    *,
    db_id: uuid.UUID | str | None = None,
    job_key: str | None = None,
    queue_name: str | None = None,
    max_attempts: int | None = None,
    priority: int | None = None,
) -> JobStatement:
    """Register a schedule: jobs for task ``identifier`` at the times ``schedule_info``
    names (see :mod:`sqla_pgjobs.schedules`: a cron string, a recurrence-rule object, a
    window or a date, in UTC unless it names a "tz"; the default ``{}`` is every minute).
    A ``schedule_info`` that cannot be understood or can never fire is refused here.

    With ``job_key``, registering again replaces the schedule of the same tenant and key
    instead of adding one. Renders ``SELECT ... FROM app_jobs.add_scheduled_job(...)``.
    """
    schedule_text = check.json_text("schedule_info", schedule_info)
    if schedule_info is not None:
        parse_schedule(schedule_info)  # refuses what no scheduler could fire, naming why
    return _ADD_SCHEDULED_JOB.params(
        db_id=check.check_tenant("db_id", db_id),
        identifier=check.check_name("identifier", identifier),
        payload=check.check_payload("payload", payload),
        schedule_info=schedule_text,
        job_key=check.check_key("job_key", job_key),
        queue_name=check.check_name("queue_name", queue_name, optional=True),
        max_attempts=check.check_positive("max_attempts", max_attempts),
        priority=check.check_priority("priority", priority),
    )


# --- Working ------------------------------------------------------------------------------


def get_jobs(
    worker_id: str,
    task_identifiers: Iterable[str] | None = None,
    *,
    job_expiry: timedelta | None = None,
    max_jobs: int = 1,
) -> JobStatement:
    """Take up to ``max_jobs`` due jobs for ``worker_id``, in (priority, run_at, id) order.

    ``task_identifiers``: None takes any task, an empty list none. A job locked longer
    than ``job_expiry`` (default 4 hours) is taken over. Renders
    ``SELECT ... FROM app_jobs.get_jobs(:worker_id, :task_identifiers, :job_expiry, :max_jobs)``.
    """
    return _GET_JOBS.params(
        worker_id=check.check_worker_id(worker_id),
        task_identifiers=_task_filter(task_identifiers),
        job_expiry=check.check_interval("job_expiry", job_expiry),
        max_jobs=_max_jobs(max_jobs),
    )


def get_job(
    worker_id: str,
    task_identifiers: Iterable[str] | None = None,
    *,
    job_expiry: timedelta | None = None,
) -> JobStatement:
    """Take the next due job for ``worker_id``: one row, or none when nothing is due.

    Renders ``SELECT ... FROM app_jobs.get_job(:worker_id, :task_identifiers, :job_expiry)
    AS get_job WHERE get_job.id IS NOT NULL``.
    """
    return _GET_JOB.params(
        worker_id=check.check_worker_id(worker_id),
        task_identifiers=_task_filter(task_identifiers),
        job_expiry=check.check_interval("job_expiry", job_expiry),
    )


def complete_job(worker_id: str, job_id: int) -> JobStatement:
    """Complete (delete) a job that ``worker_id`` holds: its row, or none if not held.

    Renders ``SELECT ... FROM app_jobs.complete_job(:worker_id, :job_id)``.
    """
    return _COMPLETE_JOB.params(
        worker_id=check.check_worker_id(worker_id), job_id=check.check_id("job_id", job_id)
    )


def complete_job_batch(worker_id: str, job_ids: Iterable[int]) -> JobStatement:
    """Complete the listed jobs that ``worker_id`` holds; one row per completed job.

    Renders ``SELECT ... FROM app_jobs.complete_job_batch(:worker_id, :job_ids)``.
    """
    return _COMPLETE_JOB_BATCH.params(
        worker_id=check.check_worker_id(worker_id), job_ids=check.check_ids("job_ids", job_ids)
    )


def fail_job(worker_id: str, job_id: int, error_message: str | None = None) -> JobStatement:
    """Fail a job that ``worker_id`` holds: it is retried after exp(attempts) seconds while
    attempts remain. Its row, or none if not held.

    Renders ``SELECT ... FROM app_jobs.fail_job(:worker_id, :job_id, :error_message)``.
    """
    return _FAIL_JOB.params(
        worker_id=check.check_worker_id(worker_id),
        job_id=check.check_id("job_id", job_id),
        error_message=check.check_text("error_message", error_message),
    )


def fail_job_batch(
    worker_id: str, job_ids: Iterable[int], error_messages: Iterable[str | None] | None = None
) -> JobStatement:
    """Fail the listed jobs that ``worker_id`` holds, with one message per job (or none).

    Renders ``SELECT ... FROM app_jobs.fail_job_batch(:worker_id, :job_ids, :error_messages)``.
    """
    return _FAIL_JOB_BATCH.params(**_failures(worker_id, job_ids, error_messages))


def fail_jobs_for_good(
    worker_id: str, job_ids: Iterable[int], error_messages: Iterable[str | None] | None = None
) -> JobStatement:
    """Fail the listed jobs that ``worker_id`` holds for good, whatever attempts they have
    left (schema version 2): the worker's answer to a payload that cannot be its typed
    task's arguments. Otherwise as :func:`fail_job_batch`.

    Renders ``SELECT ... FROM app_jobs.fail_jobs_for_good(:worker_id, :job_ids,
    :error_messages)``.
    """
    return _FAIL_JOBS_FOR_GOOD.params(**_failures(worker_id, job_ids, error_messages))


def retry_jobs_at(
    worker_id: str,
    job_ids: Iterable[int],
    run_ats: Iterable[datetime],
    error_messages: Iterable[str | None] | None = None,
    refunds: Iterable[bool] | None = None,
) -> JobStatement:
    """Retry the listed jobs that ``worker_id`` holds at the paired times (schema version
    2): a failed run retried at a time of the task's choosing (refund False: the attempt
    counts), or a snoozed one (refund True: it does not). Otherwise as
    :func:`fail_job_batch`.

    Renders ``SELECT ... FROM app_jobs.retry_jobs_at(:worker_id, :job_ids, :run_ats,
    :error_messages, :refunds)``.
    """
    parameters = _failures(worker_id, job_ids, error_messages)
    count = len(parameters["job_ids"])
    times = [
        check.check_aware(f"run_ats[{i}]", when)
        for i, when in enumerate(check.check_list("run_ats", run_ats, "it must be a list of times"))
    ]
    flags = None
    if refunds is not None:
        flags = list(check.check_list("refunds", refunds, "it must be a list of booleans"))
        if not all(isinstance(flag, bool) for flag in flags):
            raise InvalidArgumentError("refunds", refunds, "it must be a list of booleans")
    for name, values in (("run_ats", times), ("refunds", flags)):
        if values is not None and len(values) != count:
            raise InvalidArgumentError(
                name, values, f"it must have one element per job id ({count}), not {len(values)}"
            )
    if any(when is None for when in times):
        raise InvalidArgumentError("run_ats", times, "every element must be a time")
    return _RETRY_JOBS_AT.params(**parameters, run_ats=times, refunds=flags)


def _failures(
    worker_id: str, job_ids: Iterable[int], error_messages: Iterable[str | None] | None
) -> dict[str, Any]:
    """The checked parameters of the batch-failing functions."""
    ids = check.check_ids("job_ids", job_ids)
    messages = None
    if error_messages is not None:
        given = check.check_list(
            "error_messages", error_messages, "it must be a list of messages (or None)"
        )
        messages = [
            check.check_text(f"error_messages[{i}]", message) for i, message in enumerate(given)
        ]
        if len(messages) != len(ids):
            raise InvalidArgumentError(
                "error_messages",
                error_messages,
                f"it must have one message per job id ({len(ids)}), not {len(messages)}",
            )
    return {
        "worker_id": check.check_worker_id(worker_id),
        "job_ids": ids,
        "error_messages": messages,
    }


def release_jobs(worker_id: str, keep_job_ids: Iterable[int] | None = None) -> JobStatement:
    """Give back the jobs and queues ``worker_id`` holds (all, or all but ``keep_job_ids``),
    refunding the attempt; giving back all of them also unregisters the worker.

    Renders ``SELECT app_jobs.release_jobs(:worker_id, :keep_job_ids)``.
    """
    return _RELEASE_JOBS.params(
        worker_id=check.check_worker_id(worker_id),
        keep_job_ids=None
        if keep_job_ids is None
        else check.check_ids("keep_job_ids", keep_job_ids),
    )


def heartbeat(
    worker_id: str, heartbeat_timeout: timedelta | None = None, info: Any = None
) -> JobStatement:
    """Record that ``worker_id`` is alive; others take its jobs only after it has been silent
    for ``heartbeat_timeout`` (default 30 seconds). One value: false when the worker was not
    registered (its first heartbeat, or it had been given up for dead).

    Renders ``SELECT app_jobs.heartbeat(:worker_id, :heartbeat_timeout, CAST(:info AS JSON))``.
    """
    return _HEARTBEAT.params(
        worker_id=check.check_worker_id(worker_id),
        heartbeat_timeout=check.check_interval("heartbeat_timeout", heartbeat_timeout),
        info=check.json_text("info", info),
    )


def recover_jobs(*, job_expiry: timedelta | None = None) -> JobStatement:
    """Free the jobs of workers given up for dead, and of non-heartbeating holders whose lock
    is older than ``job_expiry``. (:func:`get_jobs` does this on every call.)

    Renders ``SELECT app_jobs.recover_jobs(:job_expiry)``.
    """
    return _RECOVER_JOBS.params(job_expiry=check.check_interval("job_expiry", job_expiry))


def next_run_at(task_identifiers: Iterable[str] | None = None) -> JobStatement:
    """One value: the earliest time a job (of these tasks) could be taken, or None.

    Renders ``SELECT app_jobs.next_run_at(:task_identifiers)``.
    """
    return _NEXT_RUN_AT.params(task_identifiers=_task_filter(task_identifiers))


# --- Administration -----------------------------------------------------------------------


def complete_jobs(
    job_ids: Iterable[int], *, job_expiry: timedelta | None = None, force: bool = False
) -> JobStatement:
    """Complete (delete) the listed jobs unless a worker holds them (a live worker holds its
    jobs; a worker that never heartbeats, until its lock is older than ``job_expiry``,
    default 4 hours). ``force`` deletes held jobs too. One row per deleted job.

    Renders ``SELECT ... FROM app_jobs.complete_jobs(:job_ids, :job_expiry, :force)``.
    """
    return _COMPLETE_JOBS.params(
        job_ids=check.check_ids("job_ids", job_ids),
        job_expiry=check.check_interval("job_expiry", job_expiry),
        force=_force(force),
    )


def discard_jobs(
    job_ids: Iterable[int], *, job_expiry: timedelta | None = None, force: bool = False
) -> JobStatement:
    """Delete the listed jobs without running them, as :func:`complete_jobs` does, and
    record them in the job history as discarded (schema version 2). One row per deleted
    job.

    Renders ``SELECT ... FROM app_jobs.discard_jobs(:job_ids, :job_expiry, :force)``.
    """
    return _DISCARD_JOBS.params(
        job_ids=check.check_ids("job_ids", job_ids),
        job_expiry=check.check_interval("job_expiry", job_expiry),
        force=_force(force),
    )


def permanently_fail_jobs(
    job_ids: Iterable[int],
    error_message: str | None = None,
    *,
    job_expiry: timedelta | None = None,
    force: bool = False,
) -> JobStatement:
    """Mark the listed jobs failed for good unless a worker holds them (see
    :func:`complete_jobs`; ``force`` fails held jobs too).

    Renders ``SELECT ... FROM app_jobs.permanently_fail_jobs(:job_ids, :error_message,
    :job_expiry, :force)``.
    """
    return _PERMANENTLY_FAIL_JOBS.params(
        job_ids=check.check_ids("job_ids", job_ids),
        error_message=check.check_text("error_message", error_message),
        job_expiry=check.check_interval("job_expiry", job_expiry),
        force=_force(force),
    )


def reschedule_jobs(
    job_ids: Iterable[int],
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    attempts: int | None = None,
    max_attempts: int | None = None,
    job_expiry: timedelta | None = None,
    force: bool = False,
) -> JobStatement:
    """Change when and how the listed jobs run (None keeps a value), unless a worker holds
    them (see :func:`complete_jobs`; ``force`` changes held jobs too, taking them back).
    Setting ``attempts`` below ``max_attempts`` revives a failed job.

    Renders ``SELECT ... FROM app_jobs.reschedule_jobs(:job_ids, :run_at, :priority,
    :attempts, :max_attempts, :job_expiry, :force)``.
    """
    return _RESCHEDULE_JOBS.params(
        job_ids=check.check_ids("job_ids", job_ids),
        run_at=check.check_aware("run_at", run_at),
        priority=check.check_priority("priority", priority),
        attempts=check.check_count("attempts", attempts),
        max_attempts=check.check_positive("max_attempts", max_attempts),
        job_expiry=check.check_interval("job_expiry", job_expiry),
        force=_force(force),
    )


#: What :func:`cancel_jobs` reports for each id.
CANCEL_RESULTS = (
    "cancelled",  # it was waiting (or its holder is gone): in the history as cancelled now
    "cancel_requested",  # a live worker holds it: that worker is asked to stop it
    "already_failed",  # it failed for good: left as it is
    "already_finished",  # in the history, no longer in the queue
    "not_found",  # no such job
)


def cancel_jobs(
    job_ids: Iterable[int] | Select[Any], *, job_expiry: timedelta | None = None
) -> JobStatement:
    """Cancel the listed jobs (schema version 2): ``job_ids`` is an iterable of ids, or a
    ``select()`` of one column of job ids, which runs inside the same statement::

        cancel_jobs(select(jobs.c.id).where(jobs.c.key == "receipt:42"))

    A waiting job goes to the history as cancelled at once. A job a live worker holds gets
    a cancel request, which reaches that worker within a second (a NOTIFY; its next cycle
    and heartbeat read it too): an ``async`` handler's task is cancelled, a plain handler
    sees :attr:`Job.cancel_requested <sqla_pgjobs.tasks.Job.cancel_requested>`; the job
    ends as cancelled when its run ends other than by completing, and is never retried.
    One row per distinct id: ``job_id`` and ``result``, one of :data:`CANCEL_RESULTS`; an
    id that is unknown or finished is reported, not an error.

    Renders ``SELECT job_id, result FROM app_jobs.cancel_jobs(:job_ids, :job_expiry)``.
    """
    ids: ColumnElement[Any]
    if isinstance(job_ids, Select):
        selected = job_ids.subquery("selected_jobs")
        if len(selected.c) != 1:
            raise InvalidArgumentError(
                "job_ids",
                job_ids,
                f"a select() of job ids must have one column, not {len(selected.c)}",
            )
        [job_id] = selected.c
        ids = select(cast(func.array_agg(job_id), _ID_ARRAY)).scalar_subquery()
    else:
        ids = bindparam("job_ids", check.check_ids("job_ids", job_ids), type_=_ID_ARRAY)
    expiry = bindparam("job_expiry", check.check_interval("job_expiry", job_expiry), type_=Interval)
    rows = _JobFunction("cancel_jobs", ids, expiry).table_valued(*_CANCELLED.c)
    return JobStatement(*rows.alias("cancel_jobs").c)


def _force(force: object) -> bool:
    if not isinstance(force, bool):
        raise InvalidArgumentError("force", force, "it must be True or False")
    return force


# --- Scheduled jobs -----------------------------------------------------------------------


def get_scheduled_jobs(
    worker_id: str,
    task_identifiers: Iterable[str] | None = None,
    *,
    lease: timedelta | None = None,
    max_jobs: int = 1,
) -> JobStatement:
    """Claim up to ``max_jobs`` schedules for ``worker_id`` as leases of ``lease``
    (default 5 minutes), to be renewed with :func:`renew_scheduled_jobs`.

    Renders ``SELECT ... FROM app_jobs.get_scheduled_jobs(:worker_id, :task_identifiers,
    :lease, :max_jobs)``.
    """
    return _GET_SCHEDULED_JOBS.params(
        worker_id=check.check_worker_id(worker_id),
        task_identifiers=_task_filter(task_identifiers),
        lease=check.check_interval("lease", lease),
        max_jobs=_max_jobs(max_jobs),
    )


def get_scheduled_job(
    worker_id: str, task_identifiers: Iterable[str] | None = None, *, lease: timedelta | None = None
) -> JobStatement:
    """Claim one schedule for ``worker_id``: one row, or none when none is free.

    Renders ``SELECT ... FROM app_jobs.get_scheduled_job(:worker_id, :task_identifiers,
    :lease)``.
    """
    return _GET_SCHEDULED_JOB.params(
        worker_id=check.check_worker_id(worker_id),
        task_identifiers=_task_filter(task_identifiers),
        lease=check.check_interval("lease", lease),
    )


def renew_scheduled_jobs(
    worker_id: str, ids: Iterable[int] | None = None, *, lease: timedelta | None = None
) -> JobStatement:
    """Extend ``worker_id``'s leases (all, or those in ``ids``); one row per schedule still
    held, with its current definition.

    Renders ``SELECT ... FROM app_jobs.renew_scheduled_jobs(:worker_id, :ids, :lease)``.
    """
    return _RENEW_SCHEDULED_JOBS.params(
        worker_id=check.check_worker_id(worker_id),
        ids=None if ids is None else check.check_ids("ids", ids),
        lease=check.check_interval("lease", lease),
    )


def release_scheduled_jobs(worker_id: str, ids: Iterable[int] | None = None) -> JobStatement:
    """Give back ``worker_id``'s claims (all, or those in ``ids``).

    Renders ``SELECT app_jobs.release_scheduled_jobs(:worker_id, :ids)``.
    """
    return _RELEASE_SCHEDULED_JOBS.params(
        worker_id=check.check_worker_id(worker_id),
        ids=None if ids is None else check.check_ids("ids", ids),
    )


def run_scheduled_job(
    scheduled_job_id: int,
    *,
    job_expiry: timedelta | None = None,
    fire_time: datetime | None = None,
) -> JobStatement:
    """Create the job for one fire of a schedule: one row, or none if the schedule is gone.

    Raises :class:`~sqla_pgjobs.errors.AlreadyScheduledError` when this ``fire_time``
    already made its job or the previous job has not finished (running jobs count for
    ``job_expiry``, default 1 hour). Renders ``SELECT ... FROM
    app_jobs.run_scheduled_job(:scheduled_job_id, :job_expiry, :fire_time)``.
    """
    return _RUN_SCHEDULED_JOB.params(
        scheduled_job_id=check.check_id("scheduled_job_id", scheduled_job_id),
        job_expiry=check.check_interval("job_expiry", job_expiry),
        fire_time=check.check_aware("fire_time", fire_time),
    )


# --- History (schema version 2) -------------------------------------------------------------


def set_history_retention(
    outcome: str,
    keep: timedelta | None,
    *,
    task_identifier: str | None = None,
    queue_name: str | None = None,
) -> JobStatement:
    """Keep history rows of ``outcome`` (completed, failed, cancelled, discarded) for
    ``keep``: for every task and queue, or only ``task_identifier``, ``queue_name`` or both
    (the most specific rule wins). ``keep`` zero records nothing; None keeps rows forever.
    Applies to jobs that finish from now on. One row: the rule as stored.

    Renders ``SELECT ... FROM app_jobs.set_history_retention(:outcome, :keep,
    :task_identifier, :queue_name)``.
    """
    return _SET_HISTORY_RETENTION.params(
        outcome=check.check_outcome("outcome", outcome),
        keep=check.check_retention("keep", keep),
        task_identifier=check.check_name("task_identifier", task_identifier, optional=True),
        queue_name=check.check_name("queue_name", queue_name, optional=True),
    )


def prune_job_history(
    *, max_rows: int | None = None, older_than: timedelta | None = None
) -> JobStatement:
    """One batch of pruning: delete up to ``max_rows`` (default 10,000) history rows past
    their expiry, or with ``older_than``, rows that finished longer ago than that. One
    value: how many were deleted; call again (in a new transaction) while it equals
    ``max_rows``. :func:`sqla_pgjobs.history.prune` does that for you.

    Renders ``SELECT app_jobs.prune_job_history(:max_rows, :older_than)``.
    """
    return _PRUNE_JOB_HISTORY.params(
        max_rows=check.check_positive("max_rows", max_rows),
        older_than=check.check_interval("older_than", older_than),
    )


# --- Pausing (schema version 2) ----------------------------------------------------------------


def pause_queue(queue_name: str) -> JobStatement:
    """Stop workers from taking jobs of queue ``queue_name`` (running ones finish; new
    ones are still enqueued). One value: True if it was not paused yet. Renders
    ``SELECT app_jobs.pause_queue(:queue_name)``."""
    return _PAUSE_QUEUE.params(queue_name=check.check_name("queue_name", queue_name))


def resume_queue(queue_name: str) -> JobStatement:
    """Let workers take jobs of queue ``queue_name`` again (they are woken). One value:
    True if it was paused. Renders ``SELECT app_jobs.resume_queue(:queue_name)``."""
    return _RESUME_QUEUE.params(queue_name=check.check_name("queue_name", queue_name))


def pause_task(task_identifier: str) -> JobStatement:
    """Stop workers from taking jobs of task ``task_identifier``, as :func:`pause_queue`
    does for a queue. Renders ``SELECT app_jobs.pause_task(:task_identifier)``."""
    return _PAUSE_TASK.params(task_identifier=check.check_name("task_identifier", task_identifier))


def resume_task(task_identifier: str) -> JobStatement:
    """Let workers take jobs of task ``task_identifier`` again. Renders
    ``SELECT app_jobs.resume_task(:task_identifier)``."""
    return _RESUME_TASK.params(task_identifier=check.check_name("task_identifier", task_identifier))


# --- Expressions ----------------------------------------------------------------------------


def alive_until(
    last_heartbeat: ColumnElement[Any], heartbeat_timeout: ColumnElement[Any]
) -> ColumnElement[datetime]:
    """``app_jobs.alive_until(last_heartbeat, heartbeat_timeout)``, for queries of your own
    over :data:`sqla_pgjobs.tables.workers`: until when a registered worker counts as alive
    (the schema's one rule: heartbeat_timeout after its last heartbeat, and a restart of
    PostgreSQL counts as every worker's heartbeat)."""
    return _JobFunction("alive_until", last_heartbeat, heartbeat_timeout, type_=_TIMESTAMP)


# --- Access -------------------------------------------------------------------------------


def grant_access(role_name: str, access: str) -> JobStatement:
    """Give an existing role an access level: ``enqueue``, ``worker`` or ``operator``,
    or ``read`` (schema version 2: read the tables and tell live workers, nothing else).

    Run it as the job schema's owner. Renders ``SELECT app_jobs.grant_access(:role_name,
    :access)``.
    """
    return _GRANT_ACCESS.params(
        role_name=check.check_identifier("role_name", role_name),
        access=check.check_access("access", access),
    )


def revoke_access(role_name: str, access: str) -> JobStatement:
    """Take back what :func:`grant_access` gave for the level.

    Renders ``SELECT app_jobs.revoke_access(:role_name, :access)``.
    """
    return _REVOKE_ACCESS.params(
        role_name=check.check_identifier("role_name", role_name),
        access=check.check_access("access", access),
    )
