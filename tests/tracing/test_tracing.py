"""OpenTelemetry tracing from enqueue to each run (sqla_pgjobs.tracing), recorded with the
SDK's in-memory span exporter: the trace context stored with the job, the worker's
``process`` span as the child of the enqueue's ``create`` span, attributes, errors, root
spans for jobs enqueued without a span, the handler's own spans, trace ids in the log
lines, pruning of the stored contexts, version 1 schemas, and the cost of tracing off."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id
from sqlalchemy import func, literal, select

from sqla_pgjobs import JobSpec, add_job, add_jobs, tracing
from sqla_pgjobs.errors import InvalidArgumentError, SchemaVersionError
from sqla_pgjobs.history import prune
from sqla_pgjobs.tables import job_trace_contexts
from sqla_pgjobs.worker import TaskRegistry, Worker
from tests.helpers import REPO, SCHEMA, libpq_url, run_ops, sql, translated

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL, Engine

tasks = TaskRegistry()
# The SDK's provider, spans kept in memory; not the global provider (nothing global is set).
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
inner = PROVIDER.get_tracer("tests.tracing")
PGJOBS = str(Path(sys.executable).with_name("pgjobs"))


@tasks.task("ok")
def ok(payload: Any) -> None:
    with inner.start_as_current_span("inside a plain handler"):
        pass


@tasks.task("boom")
def boom(payload: Any) -> None:
    raise RuntimeError("boom: the handler failed")


@tasks.task("async_ok")
async def async_ok(payload: Any) -> None:
    await asyncio.sleep(0)
    with inner.start_as_current_span("inside an async handler"):
        pass


@tasks.task
def send_receipt(order_id: int) -> None:
    return None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, with the in-memory provider; the spans this test finished."""
    EXPORTER.clear()
    tracing.instrument(PROVIDER)
    yield EXPORTER
    tracing.uninstrument()
    EXPORTER.clear()


def drain(url: URL, **options: Any) -> None:
    Worker(url, tasks, schema=SCHEMA, prune_interval=None, **options).run(
        drain=True, install_signal_handlers=False
    )


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


def stored_contexts(engine: Engine) -> dict[int, dict[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(select(job_trace_contexts)).all()
    return {row.job_id: row.context for row in rows}


def test_a_job_enqueued_in_a_span_is_run_in_a_child_of_its_create_span(
    database_url: URL, jobs_engine: Engine, spans: InMemorySpanExporter
) -> None:
    with inner.start_as_current_span("request") as request, jobs_engine.begin() as connection:
        [job] = connection.execute(add_job("ok", {"n": 1}, queue_name="q1", priority=3)).all()
    contexts = stored_contexts(jobs_engine)
    assert list(contexts) == [job.id]
    assert contexts[job.id]["traceparent"].split("-")[1] == format_trace_id(
        request.get_span_context().trace_id
    )

    drain(database_url)

    [create] = named(spans, "create ok")
    [process] = named(spans, "process ok")
    [inside] = named(spans, "inside a plain handler")
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is not None and create.parent.span_id == request.get_span_context().span_id
    assert create.attributes is not None
    assert create.attributes["messaging.system"] == "pgjobs"
    assert create.attributes["messaging.operation.type"] == "create"
    assert create.attributes["messaging.destination.name"] == "ok"

    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    assert process.context.trace_id == request.get_span_context().trace_id
    assert dict(process.attributes or {}) == {
        "messaging.system": "pgjobs",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "ok",
        "messaging.message.id": str(job.id),
        "pgjobs.job.attempt": 1,
        "pgjobs.job.queue": "q1",
        "pgjobs.worker.id": process.attributes["pgjobs.worker.id"],  # type: ignore[index]
        "pgjobs.job.outcome": "completed",
    }
    assert process.status.status_code is StatusCode.UNSET
    # The handler's own span is a child of the run's.
    assert inside.parent is not None and inside.parent.span_id == process.context.span_id


def test_a_failed_run_records_its_exception_and_an_error_status(
    database_url: URL, jobs_engine: Engine, spans: InMemorySpanExporter
) -> None:
    with inner.start_as_current_span("request"), jobs_engine.begin() as connection:
        connection.execute(add_job("boom", max_attempts=1))
    drain(database_url)
    [process] = named(spans, "process boom")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "RuntimeError: boom: the handler failed"
    [event] = process.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "boom: the handler failed"
    assert process.attributes is not None
    assert process.attributes["pgjobs.job.outcome"] == "failed_for_good"


def test_jobs_enqueued_without_a_span_by_sql_or_a_trigger_get_root_spans(
    database_url: URL, jobs_engine: Engine, spans: InMemorySpanExporter
) -> None:
    with jobs_engine.begin() as connection:
        connection.execute(add_job("ok"))  # tracing on, but no span is current
        connection.execute(sql("SELECT app_jobs.add_job(NULL, 'ok')"))
        connection.execute(sql("CREATE TABLE orders (id serial PRIMARY KEY)"))
        connection.execute(
            sql(
                "CREATE TRIGGER enqueue AFTER INSERT ON orders FOR EACH ROW "
                "EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('ok')"
            )
        )
        connection.execute(sql("INSERT INTO orders DEFAULT VALUES"))
    assert stored_contexts(jobs_engine) == {}
    drain(database_url)
    processes = named(spans, "process ok")
    assert len(processes) == 3
    assert all(span.parent is None for span in processes)
    assert len({span.context.trace_id for span in processes}) == 3
    assert named(spans, "create") == []


def test_a_batch_has_one_create_span_and_a_later_enqueue_of_a_key_wins(
    database_url: URL, jobs_engine: Engine, spans: InMemorySpanExporter
) -> None:
    with inner.start_as_current_span("batch"), jobs_engine.begin() as connection:
        rows = connection.execute(
            add_jobs([JobSpec("ok", {"i": i}) for i in range(3)] + [JobSpec("async_ok")])
        ).all()
        # A select() of jobs, and a typed task's .jobs(): one create span each.
        connection.execute(
            add_jobs(
                select(literal("ok").label("identifier"), func.json_build_object().label("payload"))
            )
        )
        connection.execute(send_receipt.jobs([{"order_id": 1}, {"order_id": 2}], returning=False))
    with inner.start_as_current_span("first"), jobs_engine.begin() as connection:
        [first] = connection.execute(add_job("ok", job_key="k")).all()
    with inner.start_as_current_span("second") as second, jobs_engine.begin() as connection:
        [again] = connection.execute(add_job("ok", job_key="k", payload={"v": 2})).all()
    assert again.id == first.id
    contexts = stored_contexts(jobs_engine)
    assert len(contexts) == 4 + 1 + 2 + 1
    assert contexts[first.id]["traceparent"].split("-")[1] == format_trace_id(
        second.get_span_context().trace_id
    )

    drain(database_url)
    assert sorted(span.name for span in named(spans, "create")) == [
        "create",  # the batch of two tasks
        "create",  # the select(): its tasks are not known before it runs
        "create ok",
        "create ok",
        "create send_receipt",
    ]
    [mixed] = [
        span
        for span in named(spans, "create")
        if span.name == "create" and (span.attributes or {}).get("messaging.batch.message_count")
    ]
    assert mixed.attributes is not None
    assert mixed.attributes["messaging.batch.message_count"] == 4
    by_id = {
        int((span.attributes or {})["messaging.message.id"]): span
        for span in named(spans, "process")
    }
    for row in rows:
        parent = by_id[row.id].parent
        assert parent is not None and parent.span_id == mixed.context.span_id
    [inside] = named(spans, "inside an async handler")
    [async_run] = named(spans, "process async_ok")
    assert inside.parent is not None and inside.parent.span_id == async_run.context.span_id
    keyed = by_id[first.id]
    assert keyed.context.trace_id == second.get_span_context().trace_id


def test_log_lines_of_a_traced_run_carry_its_trace_id(
    database_url: URL,
    jobs_engine: Engine,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with inner.start_as_current_span("request"), jobs_engine.begin() as connection:
        [job] = connection.execute(add_job("ok")).all()
    with caplog.at_level(logging.INFO, logger="sqla_pgjobs.worker"):
        drain(database_url)
    [process] = named(spans, "process ok")
    lines = [r for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert [getattr(r, "outcome", "started") for r in lines] == ["started", "completed"]
    assert {getattr(r, "trace_id", None) for r in lines} == {
        format_trace_id(process.context.trace_id)
    }


def test_pruning_keeps_a_context_while_its_job_or_history_row_lasts(
    jobs_engine: Engine, spans: InMemorySpanExporter
) -> None:
    with inner.start_as_current_span("request"), jobs_engine.begin() as connection:
        pending, finished, forgotten = (
            connection.execute(add_job(task)).one().id for task in ("ok", "done", "gone")
        )
        connection.execute(
            sql(
                "SELECT app_jobs.set_history_retention('completed', '1 day', 'done', NULL);"
                "SELECT app_jobs.set_history_retention('completed', '0', 'gone', NULL)"
            )
        )
        connection.execute(sql("SELECT app_jobs.complete_jobs(ARRAY[:a, :b]::bigint[])"),
                           {"a": finished, "b": forgotten})  # fmt: skip
    prune(jobs_engine)
    assert set(stored_contexts(jobs_engine)) == {pending, finished}


STORE = sql("SELECT app_jobs.set_trace_contexts(ARRAY[:id]::bigint[], CAST(:c AS jsonb))")


def test_set_trace_contexts_refuses_what_is_not_a_small_json_object(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        job_id = connection.execute(add_job("ok")).one().id
    for bad in ("[1, 2]", json.dumps({"traceparent": "x" * 5000})):
        with pytest.raises(Exception, match="context must be a JSON object of at most 4096"):
            with jobs_engine.begin() as connection:
                connection.execute(STORE, {"id": job_id, "c": bad})
    assert stored_contexts(jobs_engine) == {}


def test_on_a_version_1_schema_enqueue_says_to_upgrade_and_the_worker_traces_roots(
    empty_engine: Engine, empty_database_url: URL, spans: InMemorySpanExporter
) -> None:
    run_ops(empty_engine, lambda op: op.create_pgjobs_schema(schema=SCHEMA, version=1))
    engine = translated(empty_engine)
    with inner.start_as_current_span("request"):
        with pytest.raises(SchemaVersionError, match=r"from version 2 on: upgrade it"):
            with engine.begin() as connection:
                connection.execute(add_job("ok"))
    with engine.begin() as connection:
        connection.execute(add_job("ok"))  # no span current: nothing to store
    drain(empty_database_url)
    [process] = named(spans, "process ok")
    assert process.parent is None


def test_enqueue_refuses_bad_input_before_starting_a_span(
    jobs_engine: Engine, spans: InMemorySpanExporter
) -> None:
    with inner.start_as_current_span("request"):
        with pytest.raises(InvalidArgumentError, match="identifier"):
            add_job("")
    assert named(spans, "create") == []


def test_not_instrumented_nothing_is_stored_and_opentelemetry_is_not_imported(
    jobs_engine: Engine,
) -> None:
    assert not tracing.is_instrumented()
    with inner.start_as_current_span("request"), jobs_engine.begin() as connection:
        connection.execute(add_job("ok"))
    assert stored_contexts(jobs_engine) == {}
    script = (
        "import sys\n"
        "from sqla_pgjobs import add_job, add_jobs, JobSpec\n"
        "from sqla_pgjobs.worker import Worker\n"
        "from sqla_pgjobs.worker import runtime, handlers\n"
        "add_job('ok'); add_jobs([JobSpec('ok')])\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"


def test_pgjobs_worker_tracing_without_an_sdk_says_the_spans_go_nowhere(
    database_url: URL,
) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PGJOBS_", "OTEL_"))}
    done = subprocess.run(
        [PGJOBS, "worker", "tests.metrics.tasks:tasks", "--database-url",
         libpq_url(database_url), "--schema", SCHEMA, "--drain", "--tracing"],
        capture_output=True, text=True, env=environment, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--tracing: no OpenTelemetry SDK is configured" in done.stderr
