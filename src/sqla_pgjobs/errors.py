"""The package's exceptions: one base, :class:`PgJobsError`, with subclasses that carry data.

Errors the database raises from the job functions are translated into these at the
boundary (:func:`translate`), by SQLSTATE and by the constraint or column the error
names, never by message text. The original driver error stays available as
``__cause__``.
"""

from __future__ import annotations

import reprlib
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "AlreadyScheduledError",
    "FailForGood",
    "InvalidArgumentError",
    "InvalidPayloadError",
    "InvalidWorkerIdError",
    "JobCancelledError",
    "JobNotHeldError",
    "MissingExtraError",
    "PgJobsError",
    "RetryAt",
    "SchemaNameError",
    "SchemaVersionError",
    "Snooze",
    "TaskArgumentError",
    "translate",
]


class PgJobsError(Exception):
    """Base of every exception raised by sqla_pgjobs."""


class SchemaNameError(PgJobsError, ValueError):
    """A schema name the job schema cannot live in."""

    def __init__(self, schema: object, allowed: str) -> None:
        self.schema = schema
        self.allowed = allowed
        super().__init__(f"schema name {schema!r} is not allowed: it must be {allowed}")


class SchemaVersionError(PgJobsError, ValueError):
    """A schema version (or pair of versions) this library cannot install or reach."""


class InvalidArgumentError(PgJobsError, ValueError):
    """An argument the job functions refuse; nothing was written.

    ``argument`` names the parameter, ``value`` is what was passed (when known: errors
    found by the database only name the rule) and ``allowed`` says what is accepted.
    """

    def __init__(self, argument: str, value: object, allowed: str, *, known: bool = True) -> None:
        self.argument = argument
        self.value = value if known else None
        self.allowed = allowed
        shown = f" {_show(value)}" if known else ""
        super().__init__(f"{argument}{shown} is not allowed: {allowed}")


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 200


def _show(value: object) -> str:
    """``repr(value)``, shortened for a huge or deeply nested value (whose repr could take
    megabytes, or fail: an int of 5000 digits, a list nested 5000 deep)."""
    try:
        shown = repr(value)
    except (ValueError, RecursionError):
        shown = ""
    if shown and len(shown) <= 1000:
        return shown
    try:
        return _SHORT.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__} too large to show>"


class TaskArgumentError(InvalidArgumentError):
    """Arguments a typed task refuses at enqueue (missing, unknown, of the wrong type, or
    not JSON-serialisable); nothing was enqueued."""

    def __init__(
        self, task: str, argument: str, value: object, problem: str, *, known: bool = True
    ) -> None:
        super().__init__(argument, value, problem, known=known)
        self.task = task
        shown = f" = {_show(value)}" if known else ""
        self.args = (f"task {task!r}, argument {argument}{shown}: {problem}",)


class JobNotHeldError(PgJobsError):
    """A transactional task's job was taken over while its handler ran (its worker had
    been silent beyond its heartbeat timeout): the handler's writes are rolled back."""


class InvalidPayloadError(PgJobsError):
    """A payload that cannot be the arguments of its typed task (written by raw SQL, a
    trigger or another service): the worker fails the job for good with this message,
    since every retry would fail the same way."""

    def __init__(self, task: str, payload: object, problem: str) -> None:
        self.task = task
        self.payload = payload
        self.problem = problem
        super().__init__(
            f"the payload {_show(payload)} cannot be the arguments of task {task!r}: {problem}"
        )


class FailForGood(PgJobsError):
    """Raised by a handler: fail the job now, with this message, and never retry it (its
    attempts are used up; it stays visibly failed, and is recorded as failed)."""


class RetryAt(PgJobsError):
    """Raised by a handler: this run failed (the attempt counts); run the job again at
    ``when`` (an aware datetime), or after ``delay``, instead of after the backoff."""

    def __init__(
        self,
        when: datetime | None = None,
        *,
        delay: float | timedelta | None = None,
        message: str | None = None,
    ) -> None:
        self.when = _when(when, delay)
        super().__init__(message or f"retry at {self.when.isoformat()}")


class Snooze(PgJobsError):
    """Raised by a handler: not now. The job runs again after ``delay`` (seconds or a
    timedelta), or at ``when``, and this run does not count as an attempt (a rate limit
    hit, a resource not ready yet)."""

    def __init__(
        self,
        delay: float | timedelta | None = None,
        *,
        when: datetime | None = None,
        message: str | None = None,
    ) -> None:
        self.when = _when(when, delay)
        super().__init__(message or f"snoozed until {self.when.isoformat()}")


def _when(when: datetime | None, delay: float | timedelta | None) -> datetime:
    """The time of a RetryAt or Snooze: ``when`` (aware), or ``delay`` from now."""
    if (when is None) == (delay is None):
        raise InvalidArgumentError("when", when, "give a time (when) or a delay, one of them")
    if when is not None:
        if not isinstance(when, datetime) or when.utcoffset() is None:
            raise InvalidArgumentError("when", when, "it must be an aware datetime")
        return when
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= 10**9
    ):
        raise InvalidArgumentError("delay", delay, "it must be from 0 to 1e9 seconds")
    return datetime.now(UTC) + timedelta(seconds=seconds)


class InvalidWorkerIdError(InvalidArgumentError):
    """A worker id that is missing or shorter than 4 characters."""


class AlreadyScheduledError(PgJobsError):
    """run_scheduled_job: this fire already made its job, or the previous job is unfinished."""

    def __init__(self, detail: str | None) -> None:
        self.detail = detail
        super().__init__(f"ALREADY_SCHEDULED: {detail}" if detail else "ALREADY_SCHEDULED")


class JobCancelledError(PgJobsError):
    """A run stopped because an operator cancelled its job (``pgjobs jobs cancel``,
    :func:`~sqla_pgjobs.functions.cancel_jobs`): what the worker records for an ``async``
    handler whose task it cancelled, and what a plain handler may raise once
    :attr:`Job.cancel_requested <sqla_pgjobs.tasks.Job.cancel_requested>` is true. The job
    ends as cancelled, never retried. (Raised for a job nobody cancelled, it is an error
    like any other: the job is retried.)"""

    def __init__(self, message: str = "cancelled at an operator's request") -> None:
        super().__init__(message)


class MissingExtraError(PgJobsError, ImportError):
    """A feature needs an optional dependency that is not installed: ``extra`` names the
    ``pip install 'sqla-pgjobs[extra]'`` that brings it."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs {package}, which is not installed: pip install 'sqla-pgjobs[{extra}]'"
        )


# What each CHECK constraint of the job tables allows, by constraint name.
_CHECKS = {
    "key_check": ("job_key", "a text of at most 512 characters"),
    "task_identifier_check": ("identifier", "a text of at most 126 characters"),
    "max_attempts_check": ("max_attempts", "an integer of at least 1"),
    "queue_name_check": ("queue_name", "a text of at most 126 characters"),
    "locked_by_check": ("worker_id", "a text of at least 4 characters"),
}


def translate(error: BaseException) -> PgJobsError | None:
    """The package's exception for a driver error raised by a job function, or ``None``.

    ``error`` is a :class:`sqlalchemy.exc.DBAPIError` (or the psycopg error inside it).
    """
    original: Any = getattr(error, "orig", None) or error
    sqlstate = getattr(original, "sqlstate", None)
    diag = getattr(original, "diag", None)
    if sqlstate is None or diag is None:
        return None
    constraint = diag.constraint_name or ""
    column = diag.column_name or ""
    detail = diag.message_detail

    if sqlstate == "P0001" and constraint == "scheduled_jobs_already_scheduled":
        return AlreadyScheduledError(detail)
    if constraint.endswith("locked_by_check") and sqlstate in ("P0001", "23514"):
        return InvalidWorkerIdError(
            "worker_id",
            None,
            detail or "a worker id is a text of at least 4 characters",
            known=False,
        )
    if sqlstate == "23514":
        for suffix, (argument, allowed) in _CHECKS.items():
            if constraint.endswith(suffix):
                return InvalidArgumentError(argument, None, f"it must be {allowed}", known=False)
    if sqlstate == "23502" and column == "task_identifier":
        # add_jobs(select(...)) whose identifier column holds a NULL.
        return InvalidArgumentError(
            "identifier", None, "it must not be NULL (every job needs a task)", known=False
        )
    if sqlstate in ("22023", "42704") and column:
        return InvalidArgumentError(column, None, diag.message_primary or "", known=False)
    if sqlstate == "42883" and "set_trace_contexts" in (diag.message_primary or ""):
        return SchemaVersionError(
            "tracing stores the trace context of enqueued jobs with set_trace_contexts, "
            "which the job schema has from version 2 on: upgrade it "
            "(op.upgrade_pgjobs_schema(2, from_version=1), or pgjobs migrate), or call "
            "sqla_pgjobs.tracing.uninstrument() in the processes that enqueue"
        )
    return None
