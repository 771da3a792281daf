"""Tasks: the Python handlers that run jobs, registered by task name.

    tasks = TaskRegistry()

    @tasks.task("send_email", max_attempts=5, timeout=30)
    def send_email(payload: dict) -> None: ...

    @tasks.task("resize")
    async def resize(payload: dict, job: Job) -> None: ...

A handler takes the job's payload, and the :class:`Job` too if it accepts a second
argument. Returning completes the job; raising fails it (it is retried with exponential
backoff while attempts remain). ``send_email.job({...})`` is an ``add_job`` statement with
the task's defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
import traceback
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from sqla_pgjobs import validation as check
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.functions import JobStatement, add_job

if TYPE_CHECKING:
    import uuid
    from datetime import datetime, timedelta

__all__ = ["MAX_ERROR", "Handler", "Job", "Task", "TaskRegistry", "error_text"]

Handler = Callable[..., Any]

#: Longest error text stored in last_error (tracebacks can be huge).
MAX_ERROR = 8000


def error_text(exc: BaseException) -> str:
    """What ``last_error`` records when a handler raises ``exc`` (the worker and
    :func:`sqla_pgjobs.testing.run_jobs` alike): its summary line, then the traceback, the
    middle cut out beyond MAX_ERROR characters."""
    text = "".join(traceback.format_exception(exc))
    summary = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR:
        text = text[: MAX_ERROR // 2] + "\n...\n" + text[-MAX_ERROR // 2 :]
    return summary + "\n\n" + text


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as a handler sees it: the row of ``app_jobs.jobs`` when it was taken."""

    id: int
    task_identifier: str
    payload: Any
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime
    queue_name: str | None = None
    key: str | None = None
    database_id: uuid.UUID | None = None
    last_error: str | None = None
    locked_at: datetime | None = None
    locked_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The jobs whose cancellation the worker running this one has been asked for (its
    #: own set, shared by its jobs; empty outside a worker): see :attr:`cancel_requested`.
    _cancel_requests: AbstractSet[int] = dataclasses.field(
        default=frozenset(), repr=False, compare=False
    )

    @property
    def is_last_attempt(self) -> bool:
        """True when failing now fails the job for good."""
        return self.attempts >= self.max_attempts

    @property
    def cancel_requested(self) -> bool:
        """True once an operator has asked to cancel this job while it runs (``pgjobs jobs
        cancel``, :func:`~sqla_pgjobs.functions.cancel_jobs`); the worker learns of it
        within a second. An ``async`` handler does not need to look: its task is cancelled
        (:class:`asyncio.CancelledError` is raised at its current ``await``). A plain
        function cannot be interrupted (Python cannot stop a thread): one that may run for
        long should check this between steps and stop by raising (:class:`~sqla_pgjobs.
        errors.JobCancelledError`, or any exception), and the job ends as cancelled. A
        handler that returns normally all the same completes its job."""
        return self.id in self._cancel_requests

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], cancel_requests: AbstractSet[int] = frozenset()
    ) -> Job:
        """The job from a row of ``app_jobs.jobs`` (extra columns are ignored), seeing the
        ids in ``cancel_requests`` as cancelled (the worker's set, which it keeps up)."""
        fields = {field: row[field] for field in _ROW_FIELDS}
        return cls(**fields, _cancel_requests=cancel_requests)


#: The fields that are columns of app_jobs.jobs.
_ROW_FIELDS = tuple(
    field.name for field in dataclasses.fields(Job) if not field.name.startswith("_")
)


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered handler and its options.

    ``max_attempts``, ``queue_name`` and ``priority`` are the defaults of :meth:`job`;
    ``timeout`` bounds one run (an ``async`` handler is cancelled; a plain one cannot be
    stopped, so its job is failed when it returns late, and keeps its worker slot until
    then, so that it never runs twice at once).
    """

    name: str
    handler: Handler
    max_attempts: int | None = None
    queue_name: str | None = None
    priority: int | None = None
    timeout: timedelta | None = None
    is_async: bool = False
    takes_job: bool = False

    def job(
        self,
        payload: Any = None,
        *,
        db_id: uuid.UUID | str | None = None,
        job_key: str | None = None,
        queue_name: str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
    ) -> JobStatement:
        """An ``add_job`` statement for this task, with its defaults."""
        return add_job(
            self.name,
            payload,
            db_id=db_id,
            job_key=job_key,
            queue_name=queue_name if queue_name is not None else self.queue_name,
            run_at=run_at,
            max_attempts=max_attempts if max_attempts is not None else self.max_attempts,
            priority=priority if priority is not None else self.priority,
        )

    def __call__(self, payload: Any, job: Job) -> Any:
        """Call the handler as the worker does (for tests of your own)."""
        return self.handler(payload, job) if self.takes_job else self.handler(payload)


def _takes_job(handler: Handler) -> bool:
    """Whether the handler accepts a second positional argument (the job)."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    if not positional and not varargs:
        raise InvalidArgumentError(
            "handler", handler, "it must accept the payload as its first argument"
        )
    return varargs or len(positional) >= 2


def _timeout(value: float | timedelta | None) -> timedelta | None:
    return check.check_seconds("timeout", value)


class TaskRegistry:
    """The tasks a worker can run, by name."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def task(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        timeout: float | timedelta | None = None,
    ) -> Callable[[Handler], Task]:
        """Register the decorated function as the handler of task ``name``."""
        checked_name = str(check.check_name("name", name))
        options = {
            "max_attempts": check.check_positive("max_attempts", max_attempts),
            "queue_name": check.check_name("queue_name", queue_name, optional=True),
            "priority": check.check_priority("priority", priority),
            "timeout": _timeout(timeout),
        }

        def register(handler: Handler) -> Task:
            if checked_name in self._tasks:
                raise InvalidArgumentError(
                    "name", checked_name, "it must be unique: a handler is already registered"
                )
            task = Task(
                checked_name,
                handler,
                is_async=inspect.iscoroutinefunction(handler),
                takes_job=_takes_job(handler),
                **options,  # type: ignore[arg-type]
            )
            self._tasks[checked_name] = task
            return task

        return register

    def add(self, name: str, handler: Handler, **options: Any) -> Task:
        """Register ``handler`` for task ``name`` without a decorator."""
        return self.task(name, **options)(handler)

    def get(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def __getitem__(self, name: str) -> Task:
        return self._tasks[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def names(self) -> list[str]:
        return sorted(self._tasks)
