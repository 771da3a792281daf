"""OpenTelemetry tracing of jobs, from the span that enqueued them to each of their runs
(the ``tracing`` extra: ``pip install 'sqla-pgjobs[tracing]'``, which is
``opentelemetry-api``; an SDK and exporter are the application's choice).

Off until :func:`instrument` is called, as OpenTelemetry instrumentations are. Then:

- enqueueing (:func:`~sqla_pgjobs.functions.add_job`, :func:`~sqla_pgjobs.functions.add_jobs`
  and the typed tasks' ``.job()`` / ``.jobs()``, which use them) while a span is current
  starts a ``create <task>`` span (kind PRODUCER) and stores its trace context with the
  jobs, in the enqueuing statement itself (SQL ``app_jobs.set_trace_contexts``: schema
  version 2). The span covers building the statement: the insert is part of your
  transaction's own span;
- a worker (:class:`~sqla_pgjobs.worker.Worker` in this process, or ``pgjobs worker
  --tracing``) runs each job inside a ``process <task>`` span (kind CONSUMER), a child of
  the job's ``create`` span, or the root of a trace of its own for a job enqueued with
  no span current, by a trigger or by raw SQL. Spans the handler starts are its children.

Attributes follow OpenTelemetry's messaging conventions: ``messaging.system`` is
``pgjobs``, ``messaging.operation.type`` ``create`` or ``process``,
``messaging.destination.name`` the task (what routes a job to its handler; its queue, a
serialising group, is ``pgjobs.job.queue``), ``messaging.message.id`` the job id; and
``pgjobs.job.attempt``, ``pgjobs.job.queue`` and ``pgjobs.job.tenant`` (when the job has
one), ``pgjobs.worker.id``, ``pgjobs.job.outcome``. A run that fails records its exception
and sets the span's status to ERROR.

Not instrumented, tracing costs one ``is None`` test per enqueue and per job, and
``opentelemetry`` is never imported.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqla_pgjobs.errors import MissingExtraError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = [
    "MESSAGING_SYSTEM",
    "enqueue_context",
    "instrument",
    "is_instrumented",
    "tracer",
    "uninstrument",
]

#: The value of ``messaging.system`` on every span.
MESSAGING_SYSTEM = "pgjobs"
#: The largest trace context stored (SQL ``job_trace_contexts_context_check``): a larger
#: one (a lot of baggage) is not stored, and the job's runs start a trace of their own.
MAX_CONTEXT_BYTES = 4096

_tracer: Tracer | None = None


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """Trace enqueues and runs in this process, with spans from ``tracer_provider`` (None:
    OpenTelemetry's global provider, which an SDK or ``opentelemetry-instrument``
    configures). Needs the job schema at version 2 to store trace contexts; calling it again
    replaces the provider."""
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise MissingExtraError("Tracing", "tracing", "opentelemetry-api") from exc
    from sqla_pgjobs._version import __version__

    _tracer = trace.get_tracer("sqla_pgjobs", __version__, tracer_provider=tracer_provider)


def uninstrument() -> None:
    """Stop tracing (workers already running keep their tracer until they stop)."""
    global _tracer
    _tracer = None


def is_instrumented() -> bool:
    return _tracer is not None


def tracer() -> Tracer | None:
    """The tracer of :func:`instrument`, None when tracing is off."""
    return _tracer


def enqueue_context(task_identifier: str | None, count: int | None = 1) -> str | None:
    """When tracing is on and a span is current: start and end the ``create`` span of
    ``count`` jobs (None: not known yet) of ``task_identifier`` (None: of several tasks,
    or not known) and return its trace context as JSON text, to store with them.
    Otherwise None (nothing to store)."""
    if _tracer is None:
        return None
    return _create_span(_tracer, task_identifier, count)


def _create_span(tracer: Tracer, task_identifier: str | None, count: int | None) -> str | None:
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "create",
        "messaging.operation.name": "create",
    }
    if task_identifier is not None:
        attributes["messaging.destination.name"] = task_identifier
    if count is not None and count != 1:
        attributes["messaging.batch.message_count"] = count
    name = "create" if task_identifier is None else f"create {task_identifier}"
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER, attributes=attributes):
        propagate.inject(carrier)
    if not carrier:
        return None  # no propagator configured: nothing that a worker could continue
    text = json.dumps(carrier, separators=(",", ":"))
    return text if len(text.encode("utf-8")) <= MAX_CONTEXT_BYTES else None
