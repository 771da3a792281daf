"""Benchmarks of sqla-pgjobs against the seed's way of using the same SQL, in one run.

    python benchmarks/run.py                         # an embedded PostgreSQL (pgserver)
    python benchmarks/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/run.py --quick                 # a smoke run with tiny counts

Each workload runs in a fresh database with the job schema installed, ``--runs`` times
(3 by default); the medians are reported, and each figure as a ratio to its baseline
measured in the same run: our own SQL driven the way the seed's Node worker drives it (one
``get_job`` and one ``complete_job`` round trip per job; one ``add_job`` per transaction).
Results print as a table and are saved as JSON under ``benchmarks/results/``. See
``benchmarks/README.md`` for the method and the latest results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psycopg
import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import sqla_pgjobs
from sqla_pgjobs import JobSpec, add_job, add_jobs
from sqla_pgjobs.database import libpq_url, sqlalchemy_url
from sqla_pgjobs.functions import set_history_retention
from sqla_pgjobs.history import prune
from sqla_pgjobs.metrics import database_state
from sqla_pgjobs.schema import LATEST_VERSION, install, render
from sqla_pgjobs.testing import (
    create_database,
    drop_database,
    postgres_server,
    unique_database_name,
)
from sqla_pgjobs.worker import Job, TaskRegistry, Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.synchronize import Event

    from sqlalchemy.engine import URL, Engine

# Children are started afresh (not forked from a process holding connections).
SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Counts:
    one_by_one: int = 2_000
    bulk: int = 50_000
    drain: int = 50_000
    latency: int = 1_000
    dead: int = 200_000
    live: int = 20_000
    memory: tuple[int, int] = (10_000, 50_000)
    history: int = 1_000_000
    collector: int = 1_000_000
    long_drain: int = 500_000

    @classmethod
    def quick(cls) -> Counts:
        return cls(100, 1_000, 500, 20, 2_000, 500, (200, 1_000), 2_000, 2_000, 5_000)


@contextlib.contextmanager
def fresh_database(server: URL) -> Iterator[URL]:
    name = unique_database_name("pgjobs_bench")
    url = create_database(server, name)
    engine = create_engine(url)
    with engine.begin() as connection:
        install(connection, version=LATEST_VERSION)
    engine.dispose()
    try:
        yield url
    finally:
        drop_database(server, name)


def fill(url: URL, count: int, *, dead: int = 0, deleted: int = 0) -> None:
    """``count`` runnable no-op jobs; ``dead`` ones whose attempts are used up; and the
    dead tuples of ``deleted`` completed jobs that no vacuum has removed yet."""
    engine = create_engine(url)
    with engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(add_jobs(JobSpec("noop") for _ in range(min(10_000, count - start))))
    engine.dispose()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        if dead:
            connection.execute(
                render(
                    "INSERT INTO app_jobs.jobs (task_identifier, attempts, max_attempts,"
                    " last_error) SELECT 'noop', 1, 1, 'failed for good'"
                    " FROM generate_series(1, %s)"
                ),
                [dead],
            )
        connection.execute("VACUUM ANALYZE")
        if deleted:
            # Completed long ago, so their index entries come first; deleted as workers
            # delete completed jobs, and not vacuumed (autovacuum is given no time).
            connection.execute(
                render(
                    "INSERT INTO app_jobs.jobs (task_identifier, run_at)"
                    " SELECT 'done', now() - interval '1 hour' FROM generate_series(1, %s)"
                ),
                [deleted],
            )
            connection.execute(render("DELETE FROM app_jobs.jobs WHERE task_identifier = 'done'"))


def history_off(url: URL) -> None:
    """Record no history, for any outcome (the rows' cost is what the history costs)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        for outcome in ("completed", "failed", "cancelled", "discarded"):
            connection.execute(set_history_retention(outcome, timedelta(0)))
    engine.dispose()


def fill_history(url: URL, rows: int, *, expired: bool) -> None:
    """``rows`` history rows of completed no-op jobs, expired (prunable) or kept."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(
            render(
                "INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,"
                " attempts, max_attempts, created_at, run_at, first_started_at, started_at,"
                " finished_at, outcome, worker_id, expires_at)"
                " SELECT g, 'noop', '{\"order_id\": 42}', 0, 1, 25, now(), now(), now(), now(),"
                " now(), 'completed', 'bench-worker-1', now() + %s * interval '1 day'"
                " FROM generate_series(1, %s) g"
            ),
            [-1 if expired else 1, rows],
        )
        connection.execute("VACUUM ANALYZE")


def prune_batched(url: URL, rows: int) -> dict[str, float]:
    """Prune ``rows`` expired history rows as workers and ``pgjobs prune`` do."""
    fill_history(url, rows, expired=True)
    engine = create_engine(url)
    started = time.perf_counter()
    result = prune(engine, pause=0)
    elapsed = time.perf_counter() - started
    engine.dispose()
    assert result.deleted == rows, result
    return {"seconds": elapsed, "longest_lock_ms": result.longest_batch * 1000}


def prune_one_delete(url: URL, rows: int) -> dict[str, float]:
    """The naive way: one DELETE of every expired row, its locks held until it ends."""
    fill_history(url, rows, expired=True)
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute(render("DELETE FROM app_jobs.job_history WHERE expires_at <= now()"))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "longest_lock_ms": elapsed * 1000}


def remaining(url: URL) -> int:
    with psycopg.connect(libpq_url(url)) as connection:
        row = connection.execute(
            render("SELECT count(*) FROM app_jobs.jobs WHERE attempts < max_attempts")
        ).fetchone()
        assert row is not None
        return int(row[0])


# --- Enqueueing: each returns jobs per second ------------------------------------------------


def seed_enqueue_one_per_transaction(url: URL, count: int) -> float:
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        started = time.perf_counter()
        for i in range(count):
            connection.execute(
                render("SELECT * FROM app_jobs.add_job(NULL, 'noop', %s::json)"), [f'{{"i": {i}}}']
            )
        return count / (time.perf_counter() - started)


def session_enqueue_one_per_transaction(
    url: URL, count: int, returning: Literal["job", "id"] = "job"
) -> float:
    engine = create_engine(url)
    started = time.perf_counter()
    for i in range(count):
        with Session(engine) as session, session.begin():
            session.execute(add_job("noop", {"i": i}, returning=returning))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


_TYPED = TaskRegistry()


@_TYPED.task(name="noop")
def _typed_noop(i: int) -> None:
    """A typed task, for enqueueing through .job(): its arguments checked by pydantic."""


def session_floor_one_per_transaction(url: URL, count: int) -> float:
    """The least a Session transaction can cost: the same add_job as the simplest
    text() statement, returning nothing that SQLAlchemy has to describe."""
    engine = create_engine(url)
    statement = text(render("SELECT 1 FROM app_jobs.add_job(NULL, 'noop', CAST(:p AS json))"))
    started = time.perf_counter()
    for i in range(count):
        with Session(engine) as session, session.begin():
            session.execute(statement, {"p": f'{{"i": {i}}}'})
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def autocommit_enqueue_one_per_transaction(url: URL, count: int) -> float:
    """A job that is its transaction's only write, on an AUTOCOMMIT connection: one round
    trip, as the baseline (no BEGIN, no COMMIT of SQLAlchemy's)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    started = time.perf_counter()
    with engine.connect() as connection:
        for i in range(count):
            connection.execute(add_job("noop", {"i": i}, returning="id"))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def typed_enqueue_one_per_transaction(url: URL, count: int) -> float:
    """As session_enqueue_one_per_transaction, through a typed task's .job()."""
    engine = create_engine(url)
    started = time.perf_counter()
    for i in range(count):
        with Session(engine) as session, session.begin():
            session.execute(_typed_noop.job(i=i))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def seed_enqueue_bulk(url: URL, count: int) -> float:
    """The seed has no bulk call: add_job for every job in one transaction (pipelined)."""
    with psycopg.connect(libpq_url(url)) as connection:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.executemany(
                render("SELECT * FROM app_jobs.add_job(NULL, 'noop', %s::json)"),
                [[f'{{"i": {i}}}'] for i in range(count)],
            )
        connection.commit()
        return count / (time.perf_counter() - started)


def bulk_enqueue(url: URL, count: int) -> float:
    engine = create_engine(url)
    specs = [JobSpec("noop", {"i": i}) for i in range(count)]
    started = time.perf_counter()
    with engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(add_jobs(specs[start : start + 10_000], returning=False))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


# --- Draining: worker processes ------------------------------------------------------------


def noop(payload: Any) -> None:
    return None


def _seed_process(url: str, connections: int, ready: Event, go: Event, out: Any) -> None:
    """The seed's Node worker: per connection, get_job then complete_job, one job at a time."""
    get = render("SELECT id FROM app_jobs.get_job(%s, %s::text[])")
    complete = render("SELECT id FROM app_jobs.complete_job(%s, %s)")
    done = [0] * connections

    def loop(number: int) -> None:
        worker_id = f"seed-{multiprocessing.current_process().pid}-{number}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SELECT 1")
            connected.wait()
            go.wait()
            while True:
                row = connection.execute(get, [worker_id, ["noop"]]).fetchone()
                if row is None or row[0] is None:
                    return
                connection.execute(complete, [worker_id, row[0]])
                done[number] += 1

    connected = threading.Barrier(connections + 1)
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    connected.wait()
    ready.set()
    go.wait()
    cpu_at_go = _cpu_seconds()
    for thread in threads:
        thread.join()
    out.put(_report(sum(done), cpu_at_go))


def _noop_tasks() -> TaskRegistry:
    tasks = TaskRegistry()
    tasks.add("noop", noop)
    return tasks


def _drain_and_report(
    worker: Worker, ready: Event, go: Event, out: Any, flush: Callable[[], object] | None = None
) -> None:
    """A drain's child: ready, then at go drain the queue with ``worker`` (and ``flush``
    what it leaves to do), then report to ``out`` (see :func:`_report`)."""
    ready.set()
    go.wait()
    cpu_at_go = _cpu_seconds()
    stats = worker.run(drain=True, install_signal_handlers=False)
    if flush is not None:
        flush()
    out.put(_report(stats.processed, cpu_at_go))


def _raw_loop_process(url: str, connections: int, ready: Event, go: Event, out: Any) -> None:
    """The raw limit of a drain: one connection, ``get_jobs`` then ``complete_job_batch``
    100 jobs at a time, nothing else (no handler, no thread, no policy, no history read)."""
    del connections
    get = render("SELECT array_agg(id) FROM app_jobs.get_jobs(%s, %s::text[], NULL, 100)")
    complete = render("SELECT count(*) FROM app_jobs.complete_job_batch(%s, %s)")
    worker_id = f"raw-{multiprocessing.current_process().pid}"
    done = 0
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT 1")
        ready.set()
        go.wait()
        cpu_at_go = _cpu_seconds()
        while True:
            row = connection.execute(get, [worker_id, ["noop"]]).fetchone()
            ids = row[0] if row else None
            if not ids:
                break
            connection.execute(complete, [worker_id, ids])
            done += len(ids)
    out.put(_report(done, cpu_at_go))


def _worker_process(url: str, connections: int, ready: Event, go: Event, out: Any) -> None:
    """A sqla-pgjobs worker with default settings and a plain no-op handler."""
    del connections
    tasks = _noop_tasks()
    worker = Worker(url, tasks)
    _drain_and_report(worker, ready, go, out)


def _async_commit_worker_process(
    url: str, connections: int, ready: Event, go: Event, out: Any
) -> None:
    """As _worker_process, with Worker(synchronous_commit=False) (an opt-in)."""
    del connections
    tasks = _noop_tasks()
    worker = Worker(url, tasks, synchronous_commit=False)
    _drain_and_report(worker, ready, go, out)


def _effects_table(url: URL) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute("CREATE TABLE public.bench_effects (job_id bigint NOT NULL)")


def _insert_in_its_transaction(job: Job, session: Session) -> None:
    """A transactional task: its row and its job's completion commit together."""
    session.execute(text("INSERT INTO public.bench_effects VALUES (:j)"), {"j": job.id})


_OWN_ENGINE: list[Engine] = []


def _insert_in_its_own(job: Job) -> None:
    """The same write in a transaction of the handler's own (a pooled engine of its own);
    the job is completed afterwards, in the worker's batched cycle."""
    with Session(_OWN_ENGINE[0]) as session, session.begin():
        session.execute(text("INSERT INTO public.bench_effects VALUES (:j)"), {"j": job.id})


def _inserting_process(url: str, connections: int, ready: Event, go: Event, out: Any) -> None:
    """A worker whose handler inserts one row: ``connections`` 1 in the transaction that
    completes the job, 0 in one of its own."""
    tasks = TaskRegistry()
    if connections:
        tasks.task(name="noop")(_insert_in_its_transaction)
    else:
        _OWN_ENGINE.append(create_engine(sqlalchemy_url(url)))
        tasks.task(name="noop")(_insert_in_its_own)
    worker = Worker(url, tasks)
    _drain_and_report(worker, ready, go, out)


def _metrics_worker_process(url: str, connections: int, ready: Event, go: Event, out: Any) -> None:
    """As _worker_process, with Prometheus metrics on: the worker's observer, served."""
    from sqla_pgjobs.metrics.prometheus import WorkerMetrics, serve

    del connections
    tasks = _noop_tasks()
    metrics = WorkerMetrics(worker_id="bench-metrics")
    server = serve(metrics.registry, port=0)
    worker = Worker(url, tasks, observer=metrics)
    _drain_and_report(worker, ready, go, out)
    server.close()  # after the report: it waits up to 0.5 s


def _traced_worker_process(url: str, connections: int, ready: Event, go: Event, out: Any) -> None:
    """As _metrics_worker_process, with tracing on too: OpenTelemetry's SDK, every span
    sampled, batched to an exporter that drops them (what is measured is the spans' cost
    in the worker, not an exporter's)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from sqla_pgjobs import tracing
    from sqla_pgjobs.metrics.prometheus import WorkerMetrics, serve

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    del connections
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    tracing.instrument(provider)
    tasks = _noop_tasks()
    metrics = WorkerMetrics(worker_id="bench-traced")
    server = serve(metrics.registry, port=0)
    worker = Worker(url, tasks, observer=metrics)
    # The spans' export is part of the cost; closing the server is not.
    _drain_and_report(worker, ready, go, out, flush=provider.force_flush)
    server.close()
    provider.shutdown()


def store_trace_contexts(url: URL, *, sampled_every: int = 1) -> None:
    """A trace context stored with every job, as if each was enqueued in a span of its own
    trace; one trace in ``sampled_every`` is sampled (the traceparent's flags), as a head
    sampler of the enqueuing application would leave them."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(
            render(
                "INSERT INTO app_jobs.job_trace_contexts (job_id, context)"
                " SELECT id, jsonb_build_object('traceparent', '00-' || md5(id::text) || '-'"
                " || left(md5(id::text || 's'), 16)"
                " || CASE WHEN id %% %s = 0 THEN '-01' ELSE '-00' END) FROM app_jobs.jobs"
            ),
            [sampled_every],
        )
        connection.execute("VACUUM ANALYZE")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _report(processed: int, cpu_at_go: float) -> tuple[int, int, float]:
    """What a drain's child sends back: jobs done, peak RSS (KiB), CPU seconds since go."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return processed, maxrss, _cpu_seconds() - cpu_at_go


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def postmaster_pid(url: URL) -> int | None:
    """The server's postmaster, when it runs on this machine (its CPU is then readable)."""
    with psycopg.connect(libpq_url(url)) as connection:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()
        try:  # while the backend is there
            status = Path(f"/proc/{backend[0] if backend else 0}/status").read_text()
        except OSError:
            return None
    parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
    return int(parent.split()[1])


def server_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU the whole server has used: the postmaster's own and its reaped children's
    (``cutime``/``cstime``: every backend that has exited), plus its live children's."""
    if postmaster is None:
        return None
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a process that has just exited: counted in its parent's cutime
        pid, parent = int(entry.name), int(fields[1])
        if pid == postmaster:
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        elif parent == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


# Set once the server is known: where drain() reads the server's CPU.
POSTMASTER: int | None = None


@dataclass
class DrainResult:
    jobs_per_second: float
    peak_rss_mib: list[float] = field(default_factory=list)
    # CPU per job, in microseconds: the worker (or baseline) processes', and the server's
    # (the whole server's, so a quiet machine is assumed; None when it is not local).
    worker_cpu_us: float = 0.0
    server_cpu_us: float | None = None


def drain(
    url: URL,
    target: Callable[[str, int, Event, Event, Any], None],
    *,
    processes: int,
    connections: int = 1,
) -> DrainResult:
    """Start ``processes`` children running ``target``, let them go at once, and time
    them until every one has found nothing left to do."""
    out = SPAWN.Queue()
    readies = [SPAWN.Event() for _ in range(processes)]
    go = SPAWN.Event()
    children = [
        SPAWN.Process(target=target, args=(libpq_url(url), connections, ready, go, out))
        for ready in readies
    ]
    for child in children:
        child.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("a benchmark process did not start within 60 s")
    server_cpu_at_go = server_cpu_seconds(POSTMASTER)
    started = time.perf_counter()
    go.set()
    reports = [out.get(timeout=600) for _ in children]
    elapsed = time.perf_counter() - started
    for child in children:
        child.join()
    time.sleep(0.2)  # the children's backends exit and are reaped into the postmaster's CPU
    server_cpu_at_end = server_cpu_seconds(POSTMASTER)
    if left := remaining(url):
        raise RuntimeError(f"{left} job(s) left after the drain")
    processed = sum(count for count, _, _ in reports)
    per_job = 1e6 / max(processed, 1)
    return DrainResult(
        processed / elapsed,
        [round(rss / 1024, 1) for _, rss, _ in reports],
        worker_cpu_us=sum(cpu for _, _, cpu in reports) * per_job,
        server_cpu_us=(
            None
            if server_cpu_at_go is None or server_cpu_at_end is None
            else (server_cpu_at_end - server_cpu_at_go) * per_job
        ),
    )


# --- The database-state collector ----------------------------------------------------------


def fill_pending(url: URL, count: int) -> None:
    """``count`` due jobs of 7 tasks, a tenth of them delayed, inserted in one statement
    (add_jobs would take a minute for a million), then vacuumed and analyzed as autovacuum
    would."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(
            render(
                "INSERT INTO app_jobs.jobs (task_identifier, run_at)"
                " SELECT 'task_' || (i %% 7), now() + CASE WHEN i %% 10 = 0"
                " THEN interval '1 hour' ELSE interval '0' END"
                " FROM generate_series(1, %s) i"
            ),
            [count],
        )
        connection.execute("VACUUM ANALYZE")


def collector_ms(url: URL, *, exact: bool, scrapes: int = 15) -> float:
    """The median milliseconds of a scrape's queries (after 3 for warm-up); ``exact``: the
    jobs counted exactly by task, queue and state, as ``pgjobs status`` counts them."""
    engine = create_engine(url)
    timings = []
    with engine.connect() as connection:
        for number in range(scrapes + 3):
            started = time.perf_counter()
            if exact:
                database_state.job_counts(connection, exact_pages=2**62)
            else:
                database_state.collect(connection)
            if number >= 3:
                timings.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    return statistics.median(timings)


# --- Latency -------------------------------------------------------------------------------


def _samples(url: URL, samples: int, started: threading.Event) -> list[float]:
    """Sequential enqueue -> handler start, in milliseconds, after 20 for warm-up."""
    timings = []
    statement = render("SELECT * FROM app_jobs.add_job(NULL, 'ping')")
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for i in range(samples + 20):
            started.clear()
            begin = time.perf_counter()
            connection.execute(statement)
            if not started.wait(10):
                raise RuntimeError("a job did not start within 10 s")
            if i >= 20:
                timings.append((time.perf_counter() - begin) * 1000)
            time.sleep(0.002)
    return timings


def worker_latency(url: URL, samples: int, *, synchronous_commit: bool = True) -> list[float]:
    """An idle sqla-pgjobs worker (LISTEN; default settings)."""
    tasks = TaskRegistry()
    started = threading.Event()
    tasks.add("ping", lambda payload: started.set())
    worker = Worker(url, tasks, synchronous_commit=synchronous_commit)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    time.sleep(0.5)
    try:
        return _samples(url, samples, started)
    finally:
        worker.stop()
        thread.join()


def worker_latency_without_synchronous_commit(url: URL, samples: int) -> list[float]:
    """As worker_latency, with Worker(synchronous_commit=False) (an opt-in)."""
    return worker_latency(url, samples, synchronous_commit=False)


def seed_latency(url: URL, samples: int) -> list[float]:
    """The seed's Node worker: LISTEN on jobs:insert; on a notification, get_job until none."""
    started = threading.Event()
    stop = threading.Event()
    get = render("SELECT id FROM app_jobs.get_job('seed-latency', NULL)")
    complete = render("SELECT app_jobs.complete_job('seed-latency', %s)")

    def loop() -> None:
        with (
            psycopg.connect(libpq_url(url), autocommit=True) as listener,
            psycopg.connect(libpq_url(url), autocommit=True) as connection,
        ):
            listener.execute('LISTEN "jobs:insert"')
            while not stop.is_set():
                for _ in listener.notifies(timeout=0.2, stop_after=1):
                    while (row := connection.execute(get).fetchone()) and row[0] is not None:
                        started.set()
                        connection.execute(complete, [row[0]])

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.5)
    try:
        return _samples(url, samples, started)
    finally:
        stop.set()
        thread.join()


def percentiles(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings)
    return {
        "p50_ms": round(statistics.median(timings), 3),
        "p95_ms": round(timings[max(0, int(len(timings) * 0.95) - 1)], 3),
        "p99_ms": round(timings[max(0, int(len(timings) * 0.99) - 1)], 3),
    }


# --- The run ---------------------------------------------------------------------------------


def compare(
    server: URL,
    runs: int,
    baseline: Callable[[URL], float | DrainResult],
    ours: Callable[[URL], float | DrainResult],
) -> dict[str, Any]:
    """Alternate baseline and ours run by run, so that a slow spell hits both. For
    drains, the CPU per job (worker and server, µs) is reported next to the rate."""
    measured: dict[str, list[float | DrainResult]] = {"baseline": [], "ours": []}
    for _ in range(runs):
        for side, workload in (("baseline", baseline), ("ours", ours)):
            with fresh_database(server) as url:
                measured[side].append(workload(url))
    figures = {
        side: [v.jobs_per_second if isinstance(v, DrainResult) else v for v in values]
        for side, values in measured.items()
    }
    base, mine = statistics.median(figures["baseline"]), statistics.median(figures["ours"])
    result: dict[str, Any] = {
        "baseline": _figure(base),
        "ours": _figure(mine),
        "ratio": round(mine / base, 2),
        "baseline_runs": [_figure(v) for v in figures["baseline"]],
        "ours_runs": [_figure(v) for v in figures["ours"]],
    }
    for side, values in measured.items():
        drains = [v for v in values if isinstance(v, DrainResult)]
        if drains:
            result[f"{side}_cpu_us_per_job"] = _cpu_per_job(drains)
    return result


def _cpu_per_job(drains: list[DrainResult]) -> dict[str, float | None]:
    """Median CPU per job of some drains, in µs: worker, server and both."""
    worker = statistics.median(d.worker_cpu_us for d in drains)
    servers = [d.server_cpu_us for d in drains if d.server_cpu_us is not None]
    server = statistics.median(servers) if servers else None
    return {
        "worker": round(worker, 1),
        "server": None if server is None else round(server, 1),
        "total": None if server is None else round(worker + server, 1),
    }


def _figure(value: float) -> float:
    return round(value) if value >= 100 else round(value, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each workload")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument(
        "--only",
        help="run only the workloads whose name contains this (several: 'a|b')",
    )
    arguments = parser.parse_args()
    counts = Counts.quick() if arguments.quick else Counts()
    runs = 1 if arguments.quick else arguments.runs

    server_context = (
        contextlib.nullcontext(sqlalchemy.make_url(arguments.database_url))
        if arguments.database_url
        else postgres_server()
    )
    results: dict[str, Any] = {}
    with server_context as server:
        global POSTMASTER
        POSTMASTER = postmaster_pid(server)
        with create_engine(server).connect() as connection:
            settings = {
                name: connection.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("server_version", "fsync", "synchronous_commit")
            }

        def drain_rate(
            target: Any, processes: int, connections: int = 1, jobs: int = counts.drain
        ) -> Callable[[URL], DrainResult]:
            def workload(url: URL) -> DrainResult:
                fill(url, jobs)
                return drain(url, target, processes=processes, connections=connections)

            return workload

        def traced_drain(sampled_every: int) -> Callable[[URL], DrainResult]:
            def workload(url: URL) -> DrainResult:
                fill(url, counts.drain)
                store_trace_contexts(url, sampled_every=sampled_every)
                return drain(url, _traced_worker_process, processes=1)

            return workload

        def dead_drain(dead: int = 0, deleted: int = 0) -> Callable[[URL], DrainResult]:
            def workload(url: URL) -> DrainResult:
                fill(url, counts.live, dead=dead, deleted=deleted)
                return drain(url, _worker_process, processes=1)

            return workload

        def history_drain(*, recorded: bool = True, kept: int = 0) -> Callable[[URL], DrainResult]:
            def workload(url: URL) -> DrainResult:
                if not recorded:
                    history_off(url)
                if kept:
                    fill_history(url, kept, expired=False)
                fill(url, counts.live)
                return drain(url, _worker_process, processes=1)

            return workload

        def pruning() -> dict[str, Any]:
            one: list[dict[str, float]] = []
            batched: list[dict[str, float]] = []
            for _ in range(runs):
                with fresh_database(server) as url:
                    one.append(prune_one_delete(url, counts.history))
                with fresh_database(server) as url:
                    batched.append(prune_batched(url, counts.history))
            median = {
                name: {key: statistics.median(run[key] for run in runs_of) for key in runs_of[0]}
                for name, runs_of in (("one DELETE", one), ("batched prune", batched))
            }
            return {
                "baseline": _figure(median["one DELETE"]["longest_lock_ms"]),
                "ours": _figure(median["batched prune"]["longest_lock_ms"]),
                "ratio": round(
                    median["batched prune"]["longest_lock_ms"]
                    / median["one DELETE"]["longest_lock_ms"],
                    3,
                ),
                "seconds": {k: _figure(v["seconds"]) for k, v in median.items()},
                "baseline_runs": [_figure(r["longest_lock_ms"]) for r in one],
                "ours_runs": [_figure(r["longest_lock_ms"]) for r in batched],
            }

        def effects_drain(*, transactional: bool) -> Callable[[URL], DrainResult]:
            def workload(url: URL) -> DrainResult:
                _effects_table(url)
                fill(url, counts.live // 4)
                return drain(url, _inserting_process, processes=1, connections=int(transactional))

            return workload

        def latency(measure: Callable[[URL, int], list[float]]) -> Callable[[URL], float]:
            def workload(url: URL) -> float:
                timings = measure(url, counts.latency)
                all_timings.setdefault(measure.__name__, []).extend(timings)
                return statistics.median(timings)

            return workload

        def collector(exact: bool) -> Callable[[URL], float]:
            def workload(url: URL) -> float:
                fill_pending(url, counts.collector)
                return collector_ms(url, exact=exact)

            return workload

        all_timings: dict[str, list[float]] = {}
        workloads: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (
                "enqueue, 1 per transaction (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    lambda u: seed_enqueue_one_per_transaction(u, counts.one_by_one),
                    lambda u: session_enqueue_one_per_transaction(u, counts.one_by_one),
                ),
            ),
            (
                "enqueue, 1 per transaction, add_job(returning='id') (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    lambda u: seed_enqueue_one_per_transaction(u, counts.one_by_one),
                    lambda u: session_enqueue_one_per_transaction(u, counts.one_by_one, "id"),
                ),
            ),
            (
                "enqueue, 1 per transaction, a Session's floor: text() (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    lambda u: seed_enqueue_one_per_transaction(u, counts.one_by_one),
                    lambda u: session_floor_one_per_transaction(u, counts.one_by_one),
                ),
            ),
            (
                "enqueue, 1 per transaction, alone: AUTOCOMMIT and returning='id' (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    lambda u: seed_enqueue_one_per_transaction(u, counts.one_by_one),
                    lambda u: autocommit_enqueue_one_per_transaction(u, counts.one_by_one),
                ),
            ),
            (
                "enqueue through a typed task's .job() vs add_job(), 1 per transaction (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    lambda u: session_enqueue_one_per_transaction(u, counts.one_by_one),
                    lambda u: typed_enqueue_one_per_transaction(u, counts.one_by_one),
                ),
            ),
            (
                "a handler inserting a row: completed in its transaction vs its own (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    effects_drain(transactional=False),
                    effects_drain(transactional=True),
                ),
            ),
            (
                "enqueue, bulk (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    lambda u: seed_enqueue_bulk(u, counts.bulk),
                    lambda u: bulk_enqueue(u, counts.bulk),
                ),
            ),
            (
                "drain, 1 process (jobs/s)",
                lambda: compare(
                    server, runs, drain_rate(_seed_process, 1), drain_rate(_worker_process, 1)
                ),
            ),
            (
                "drain, 2 processes (jobs/s)",
                lambda: compare(
                    server, runs, drain_rate(_seed_process, 2, 4), drain_rate(_worker_process, 2)
                ),
            ),
            (
                "drain, 1 process: the raw limit (get_jobs + complete by 100) vs the worker "
                "(jobs/s)",
                lambda: compare(
                    server, runs, drain_rate(_raw_loop_process, 1), drain_rate(_worker_process, 1)
                ),
            ),
            (
                "latency p50, idle worker (ms)",
                lambda: compare(server, runs, latency(seed_latency), latency(worker_latency)),
            ),
            (
                f"drain, 1 process: {counts.long_drain:,} jobs vs {counts.live:,} (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    drain_rate(_worker_process, 1, jobs=counts.live),
                    drain_rate(_worker_process, 1, jobs=counts.long_drain),
                ),
            ),
            (
                "latency p50, idle worker: synchronous_commit off vs on (ms)",
                lambda: compare(
                    server,
                    runs,
                    latency(worker_latency),
                    latency(worker_latency_without_synchronous_commit),
                ),
            ),
            (
                "drain, 1 process: synchronous_commit off vs on (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    drain_rate(_worker_process, 1),
                    drain_rate(_async_commit_worker_process, 1),
                ),
            ),
            (
                f"drain with {counts.dead:,} failed jobs kept, vs a clean table (jobs/s)",
                lambda: compare(server, runs, dead_drain(), dead_drain(dead=counts.dead)),
            ),
            (
                f"drain with {counts.dead:,} unvacuumed deleted jobs, vs clean (jobs/s)",
                lambda: compare(server, runs, dead_drain(), dead_drain(deleted=counts.dead)),
            ),
            (
                "drain with the job history recorded, vs not (jobs/s)",
                lambda: compare(
                    server, runs, history_drain(recorded=False), history_drain(recorded=True)
                ),
            ),
            (
                f"drain with {counts.history:,} history rows kept, vs none (jobs/s)",
                lambda: compare(server, runs, history_drain(), history_drain(kept=counts.history)),
            ),
            (f"prune {counts.history:,} history rows: longest lock (ms), vs one DELETE", pruning),
            (
                "drain with worker metrics on, vs off (jobs/s)",
                lambda: compare(
                    server,
                    runs,
                    drain_rate(_worker_process, 1),
                    drain_rate(_metrics_worker_process, 1),
                ),
            ),
            (
                "drain with tracing (SDK, dropping exporter) and worker metrics on, vs off "
                "(jobs/s)",
                lambda: compare(server, runs, drain_rate(_worker_process, 1), traced_drain(1)),
            ),
            (
                "drain with tracing and worker metrics on, 1 trace in 10 sampled, vs off (jobs/s)",
                lambda: compare(server, runs, drain_rate(_worker_process, 1), traced_drain(10)),
            ),
            (
                f"collector on {counts.collector:,} pending jobs (ms), vs an exact count",
                lambda: compare(server, runs, collector(exact=True), collector(exact=False)),
            ),
        ]
        for label, workload in workloads:
            if arguments.only and not any(part in label for part in arguments.only.split("|")):
                continue
            print(f"... {label}", file=sys.stderr, flush=True)
            results[label] = workload()
        for name, timings in all_timings.items():
            results[f"latency distribution, {name} (ms)"] = percentiles(timings)
        if not arguments.only or "memory" in arguments.only:
            print("... memory", file=sys.stderr, flush=True)
            results["worker peak memory (MiB)"] = {}
            for count in counts.memory:
                with fresh_database(server) as url:
                    fill(url, count)
                    peak = drain(url, _worker_process, processes=1).peak_rss_mib[0]
                results["worker peak memory (MiB)"][f"{count} jobs"] = peak

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        **settings,
        "python": platform.python_version(),
        "sqla_pgjobs": sqla_pgjobs.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "runs": runs,
        "counts": counts.__dict__,
        "results": results,
    }
    print(
        f"PostgreSQL {settings['server_version']}, fsync {settings['fsync']}, "
        f"synchronous_commit {settings['synchronous_commit']}, {runs} run(s), medians"
    )
    print(
        f"{'workload':<58}{'seed-style':>12}{'sqla-pgjobs':>13}{'ratio':>8}"
        f"  CPU per job, worker + server (µs): baseline, ours"
    )
    for label, value in results.items():
        if "ratio" in value:
            cpu = "  ".join(
                f"{cpu['worker']} + {cpu['server']}"
                for side in ("baseline", "ours")
                if (cpu := value.get(f"{side}_cpu_us_per_job"))
            )
            print(
                f"{label:<58}{value['baseline']:>12}{value['ours']:>13}{value['ratio']:>8}  {cpu}"
            )
        else:
            print(f"{label:<58}" + "  ".join(f"{k} {v}" for k, v in value.items()))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
