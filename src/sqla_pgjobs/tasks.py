"""Tasks: the Python handlers that run jobs, registered by task name.

Typed tasks (the usual way): the function's annotated parameters are the job's arguments,
checked when the job is enqueued and again when a worker decodes its payload
(:mod:`sqla_pgjobs.arguments`)::

    tasks = TaskRegistry()

    @tasks.task
    def send_receipt(order_id: int, note: str = "") -> None: ...

    @tasks.task(queue_name="mail", max_attempts=5, timeout=30)
    async def resize(image_id: UUID, width: int, job: Job) -> None: ...

    session.execute(send_receipt.job(order_id=42))   # send_receipt.job(order_id="x"): mypy error

A parameter annotated :class:`Job` receives the job. Payload handlers (the low-level
layer, for jobs enqueued by raw SQL or other services with payloads of their own) are
registered under a name and take the payload, and the :class:`Job` if they accept a second
argument::

    @tasks.task("send_email", max_attempts=5)
    def send_email(payload: dict) -> None: ...

Returning completes the job; raising fails it (it is retried with exponential backoff
while attempts remain).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
import traceback
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from sqla_pgjobs import validation as check
from sqla_pgjobs.arguments import Arguments
from sqla_pgjobs.errors import InvalidArgumentError, JobNotHeldError
from sqla_pgjobs.functions import JobSpec, JobStatement, add_job, add_jobs, complete_job

if TYPE_CHECKING:
    import contextlib
    import uuid
    from datetime import datetime

__all__ = [
    "MAX_ERROR",
    "Backoff",
    "Handler",
    "Job",
    "Task",
    "TaskRegistry",
    "TypedTask",
    "error_text",
    "exponential_backoff",
]

#: A task's backoff: the delay before the next attempt, from the number of the attempt
#: that failed (1 for the first).
Backoff = Callable[[int], "timedelta"]

P = ParamSpec("P")
R = TypeVar("R")

Handler = Callable[..., Any]

#: Longest error text stored in last_error (tracebacks can be huge).
MAX_ERROR = 8000


def exponential_backoff(attempt: int) -> timedelta:
    """The delay before retrying after failed attempt number ``attempt``: e^min(attempt,
    10) seconds, as the SQL functions' own backoff (2.7 s, 7.4 s, 20 s, ... 6 h), times a
    random factor from 0.5 to 1, so that jobs that failed together (an outage) do not all
    come back at the same moment. The default of typed tasks."""
    return timedelta(seconds=math.exp(min(attempt, 10)) * random.uniform(0.5, 1.0))


def error_text(exc: BaseException) -> str:
    """What ``last_error`` records when a handler raises ``exc`` (the worker and
    :func:`sqla_pgjobs.testing.run_jobs` alike): its summary line, then the traceback, the
    middle cut out beyond MAX_ERROR characters."""
    text = "".join(traceback.format_exception(exc))
    summary = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR:
        text = text[: MAX_ERROR // 2] + "\n...\n" + text[-MAX_ERROR // 2 :]
    return summary + "\n\n" + text


class Transactions(Protocol):
    """What runs a transactional task (the worker, or :func:`sqla_pgjobs.testing.run_jobs`):
    a transaction of the kind its function takes (``Session``, ``AsyncSession``,
    ``Connection``, ``AsyncConnection``), and the news that a job was completed in it."""

    def begin(self, kind: str) -> contextlib.AbstractContextManager[Any]: ...

    def begin_async(self, kind: str) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def completed(self, job: Job) -> None: ...


#: The annotations that make a typed task transactional, by the kind of bind they are.
TRANSACTION_KINDS = {
    "sqlalchemy.orm.session.Session": "session",
    "sqlalchemy.engine.base.Connection": "connection",
    "sqlalchemy.ext.asyncio.session.AsyncSession": "async_session",
    "sqlalchemy.ext.asyncio.engine.AsyncConnection": "async_connection",
}


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
    #: Where a transactional task's transaction comes from (the worker running the job).
    _transactions: Transactions | None = dataclasses.field(default=None, repr=False, compare=False)
    #: The trace context stored when the job was enqueued (:mod:`sqla_pgjobs.tracing`),
    #: read by a worker that traces its runs; None otherwise.
    _trace_context: Mapping[str, str] | None = dataclasses.field(
        default=None, repr=False, compare=False
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
        cls,
        row: Mapping[str, Any],
        cancel_requests: AbstractSet[int] = frozenset(),
        transactions: Transactions | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> Job:
        """The job from a row of ``app_jobs.jobs`` (extra columns are ignored), seeing the
        ids in ``cancel_requests`` as cancelled (the worker's set, which it keeps up), run
        by a worker that opens transactions with ``transactions``, enqueued in the trace
        of ``trace_context``."""
        fields = {field: row[field] for field in _ROW_FIELDS}
        return cls(
            **fields,
            _cancel_requests=cancel_requests,
            _transactions=transactions,
            _trace_context=trace_context,
        )


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
    #: The delay before retrying a failed run (None: the SQL functions' own backoff).
    backoff: Backoff | None = None

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


@dataclasses.dataclass(frozen=True)
class _EnqueueOptions:
    """How a typed task's jobs are enqueued: the task's defaults, or those of ``using``.
    ``job_key`` and ``queue_name`` may be templates filled with the job's arguments
    (``receipt:{order_id}``)."""

    db_id: uuid.UUID | str | None = None
    job_key: str | None = None
    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    priority: int | None = None

    @property
    def has_templates(self) -> bool:
        return "{" in (self.job_key or "") or "{" in (self.queue_name or "")


class TypedTask(Generic[P, R]):
    """A task declared with ``@tasks.task`` on a function with annotated parameters.

    ``.job(...)`` takes the function's own arguments (checked statically through its
    ParamSpec, and at run time against its annotations) and returns the ``add_job``
    statement; ``.using(run_at=..., job_key=...)`` sets how the next jobs are enqueued;
    calling the task calls the function (in your tests)."""

    def __init__(
        self,
        task: Task,
        function: Callable[P, R],
        arguments: Arguments,
        enqueue: _EnqueueOptions,
    ) -> None:
        self.task = task
        self.function = function
        self.arguments = arguments
        self._enqueue = enqueue

    @property
    def name(self) -> str:
        return self.task.name

    def __repr__(self) -> str:
        return f"<TypedTask {self.arguments.describe()}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function itself, as a plain call (the job is not involved)."""
        return self.function(*args, **kwargs)

    def payload(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        """The JSON payload of a job with these arguments (checked)."""
        return self.arguments.encode(args, kwargs)

    def job(self, *args: P.args, **kwargs: P.kwargs) -> JobStatement:
        """The ``add_job`` statement of a job with these arguments, for
        ``session.execute(...)`` (sync or async sessions and connections)."""
        spec = self._spec(args, kwargs)
        return add_job(
            spec.identifier,
            spec.payload,
            db_id=spec.db_id,
            job_key=spec.job_key,
            queue_name=spec.queue_name,
            run_at=spec.run_at,
            max_attempts=spec.max_attempts,
            priority=spec.priority,
        )

    def spec(self, *args: P.args, **kwargs: P.kwargs) -> JobSpec:
        """A :class:`~sqla_pgjobs.functions.JobSpec` of a job with these arguments, for
        ``add_jobs`` together with jobs of other tasks."""
        return self._spec(args, kwargs)

    def _spec(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> JobSpec:
        payload = self.arguments.encode(args, kwargs)
        options = self._enqueue
        key, queue = options.job_key, options.queue_name
        if options.has_templates:
            values = self.arguments.values(args, kwargs)
            key = None if key is None else key.format(**values)
            queue = None if queue is None else queue.format(**values)
        return JobSpec(
            self.name,
            payload,
            db_id=options.db_id,
            job_key=key,
            queue_name=queue,
            run_at=options.run_at,
            max_attempts=options.max_attempts,
            priority=options.priority,
        )

    def jobs(self, calls: Iterable[Mapping[str, Any]], *, returning: bool = True) -> JobStatement:
        """One ``add_jobs`` statement of a job per mapping of keyword arguments in
        ``calls`` (each checked, as :meth:`job` does)."""
        specs = []
        for i, call in enumerate(
            check.check_list("calls", calls, "it must be an iterable of mappings")
        ):
            if not isinstance(call, Mapping):
                raise InvalidArgumentError(
                    f"calls[{i}]", call, "it must be a mapping of keyword arguments"
                )
            specs.append(self._spec((), call))
        return add_jobs(specs, returning=returning)

    def using(
        self,
        *,
        db_id: uuid.UUID | str | None = None,
        job_key: str | None = None,
        queue_name: str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
    ) -> TypedTask[P, R]:
        """The same task, enqueueing with these options (None keeps the task's)."""
        current = self._enqueue
        tenant = check.check_tenant("db_id", db_id)
        key = check.check_key("job_key", job_key)
        queue = check.check_name("queue_name", queue_name, optional=True)
        if key is not None:
            key = self.arguments.template("job_key", key)
        if queue is not None:
            queue = self.arguments.template("queue_name", queue)
        when = check.check_aware("run_at", run_at)
        attempts = check.check_positive("max_attempts", max_attempts)
        rank = check.check_priority("priority", priority)
        changed = _EnqueueOptions(
            db_id=tenant if tenant is not None else current.db_id,
            job_key=key if key is not None else current.job_key,
            queue_name=queue if queue is not None else current.queue_name,
            run_at=when if when is not None else current.run_at,
            max_attempts=attempts if attempts is not None else current.max_attempts,
            priority=rank if rank is not None else current.priority,
        )
        return TypedTask(self.task, self.function, self.arguments, changed)


def _job_parameters(function: Callable[..., Any]) -> list[str]:
    """The parameters of a typed task's function annotated :class:`Job` (given the job)."""
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        return []
    return [
        name
        for name, hint in hints.items()
        if name != "return" and (hint is Job or Job in typing.get_args(hint))
    ]


class _Options(typing.TypedDict):
    """A task's options, checked."""

    max_attempts: int | None
    queue_name: str | None
    priority: int | None
    timeout: timedelta | None
    backoff: Backoff | None


def _transaction_parameter(function: Callable[..., Any]) -> tuple[str, str] | None:
    """The parameter of a typed task's function that takes its transaction, and its kind
    (see TRANSACTION_KINDS), if it has one."""
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        return None
    found = [
        (name, TRANSACTION_KINDS[f"{hint.__module__}.{hint.__qualname__}"])
        for name, hint in hints.items()
        if name != "return"
        and isinstance(hint, type)
        and f"{hint.__module__}.{hint.__qualname__}" in TRANSACTION_KINDS
    ]
    if len(found) > 1:
        raise InvalidArgumentError(
            "handler", function, "a task takes at most one transaction (Session or Connection)"
        )
    return found[0] if found else None


def _typed_task(
    name: str | None, function: Callable[P, R], options: _Options, key: str | None
) -> tuple[Task, TypedTask[P, R]]:
    """The Task the worker runs for ``function`` (decoding the payload into its arguments)
    and the TypedTask that enqueues its jobs."""
    if not callable(function):
        raise InvalidArgumentError("handler", function, "it must be a function")
    task_name = str(check.check_name("name", name if name is not None else function.__name__))
    job_parameters = _job_parameters(function)
    transaction = _transaction_parameter(function)
    supplied = [*job_parameters, *([transaction[0]] if transaction else [])]
    arguments = Arguments(task_name, function, supplied=supplied)
    is_async = inspect.iscoroutinefunction(function)
    run: Callable[..., Any] = function
    if transaction is not None and transaction[1].startswith("async") != is_async:
        raise InvalidArgumentError(
            "handler",
            function,
            "an async function takes an AsyncSession or AsyncConnection, a plain one a "
            "Session or Connection",
        )

    def prepared(payload: Any, job: Job) -> dict[str, Any]:
        kwargs = arguments.decode(payload)
        for parameter in job_parameters:
            kwargs[parameter] = job
        return kwargs

    def call(payload: Any, job: Job) -> Any:
        kwargs = prepared(payload, job)
        if transaction is None:
            return run(**kwargs)
        parameter, kind = transaction
        transactions = _transactions_of(job)
        # The handler's writes and the job's completion commit together, or not at all.
        with transactions.begin(kind) as bind:
            result = run(**kwargs, **{parameter: bind})
            if bind.execute(complete_job(str(job.locked_by), job.id)).first() is None:
                raise JobNotHeldError(f"job {job.id} was taken over while it ran")
        transactions.completed(job)
        return result

    async def call_async(payload: Any, job: Job) -> Any:
        if transaction is None:
            return await typing.cast("Awaitable[Any]", call(payload, job))
        kwargs = prepared(payload, job)
        parameter, kind = transaction
        transactions = _transactions_of(job)
        async with transactions.begin_async(kind) as bind:
            result = await run(**kwargs, **{parameter: bind})
            done = await bind.execute(complete_job(str(job.locked_by), job.id))
            if done.first() is None:
                raise JobNotHeldError(f"job {job.id} was taken over while it ran")
        transactions.completed(job)
        return result

    queue = options["queue_name"]
    if queue is not None:
        queue = arguments.template("queue_name", queue)
    enqueue = _EnqueueOptions(
        job_key=None if key is None else arguments.template("key", key),
        queue_name=queue,
        max_attempts=options["max_attempts"],
        priority=options["priority"],
    )
    task = Task(
        task_name,
        call_async if is_async else call,
        max_attempts=options["max_attempts"],
        # A queue template is filled per job, which Task.job (payloads) cannot do.
        queue_name=None if "{" in (queue or "") else queue,
        priority=options["priority"],
        timeout=options["timeout"],
        is_async=is_async,
        takes_job=True,
        backoff=options["backoff"] or exponential_backoff,
    )
    return task, TypedTask(task, function, arguments, enqueue)


def _transactions_of(job: Job) -> Transactions:
    if job._transactions is None:
        raise InvalidArgumentError(
            "job",
            job,
            "a transactional task runs in a worker or run_jobs, which give it its transaction",
        )
    return job._transactions


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

    @overload
    def task(self, function: Callable[P, R], /) -> TypedTask[P, R]: ...

    @overload
    def task(
        self,
        name: str,
        /,
        *,
        max_attempts: int | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        timeout: float | timedelta | None = None,
        backoff: Backoff | None = None,
    ) -> Callable[[Handler], Task]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        timeout: float | timedelta | None = None,
        backoff: Backoff | None = None,
        key: str | None = None,
    ) -> Callable[[Callable[P, R]], TypedTask[P, R]]: ...

    def task(
        self,
        name_or_function: str | Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        timeout: float | timedelta | None = None,
        backoff: Backoff | None = None,
        key: str | None = None,
    ) -> Any:
        """Register a task. ``@tasks.task`` (bare, or with keyword options) declares a
        typed task from the function's annotated parameters (its name: ``name``, or the
        function's); ``@tasks.task("name", ...)`` registers a payload handler.

        ``max_attempts``, ``priority`` and ``queue_name`` are defaults for enqueueing;
        ``timeout`` bounds a run; ``backoff(attempt) -> timedelta`` is the delay before a
        retry (typed tasks: :func:`exponential_backoff`; payload handlers: the SQL
        functions' own). A typed task's ``key`` and ``queue_name`` may be templates of
        its arguments (``key="receipt:{order_id}"``): a job enqueued with the key of a
        waiting job replaces that job (see job keys in the docs)."""
        if backoff is not None and not callable(backoff):
            raise InvalidArgumentError("backoff", backoff, "it must be a function of the attempt")
        options = _Options(
            max_attempts=check.check_positive("max_attempts", max_attempts),
            queue_name=check.check_name("queue_name", queue_name, optional=True),
            priority=check.check_priority("priority", priority),
            timeout=_timeout(timeout),
            backoff=backoff,
        )
        checked_key = check.check_key("key", key)
        if callable(name_or_function):
            return self._register_typed(name, name_or_function, options, checked_key)
        if name_or_function is None:
            return lambda function: self._register_typed(name, function, options, checked_key)
        if key is not None:
            raise InvalidArgumentError(
                "key", key, "a payload handler has no arguments to fill a key with"
            )
        checked_name = str(check.check_name("name", name_or_function))

        def register(handler: Handler) -> Task:
            task = Task(
                checked_name,
                handler,
                is_async=inspect.iscoroutinefunction(handler),
                takes_job=_takes_job(handler),
                **options,
            )
            self._register(task)
            return task

        return register

    def _register_typed(
        self, name: str | None, function: Callable[P, R], options: _Options, key: str | None
    ) -> TypedTask[P, R]:
        task, typed = _typed_task(name, function, options, key)
        self._register(task)
        return typed

    def _register(self, task: Task) -> None:
        if task.name in self._tasks:
            raise InvalidArgumentError(
                "name", task.name, "it must be unique: a handler is already registered"
            )
        self._tasks[task.name] = task

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
