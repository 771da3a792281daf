"""Prometheus metrics (the ``metrics`` extra: ``pip install 'sqla-pgjobs[metrics]'``).

- :class:`DatabaseCollector`: the state of a job database
  (:mod:`~sqla_pgjobs.metrics.database_state`), read on every scrape: what ``pgjobs
  metrics`` serves, for one process per database.
- :class:`WorkerMetrics`: a worker's own counters and histograms, as the worker's
  :class:`~sqla_pgjobs.worker.observer.WorkerObserver`: what ``pgjobs worker
  --metrics-port`` serves, one endpoint per worker process.
- :func:`serve`: an HTTP server for a registry's ``/metrics``, on a thread.

The names follow Prometheus' conventions (a ``pgjobs_`` prefix, base units in the name,
``_total`` for counters); ``docs/monitoring.md`` lists them. A job's queue is the label
``queue``, empty for jobs without one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqla_pgjobs import validation as check
from sqla_pgjobs.errors import MissingExtraError

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingExtraError("Prometheus metrics", "metrics", "prometheus-client") from exc

from sqla_pgjobs.admin import STATES
from sqla_pgjobs.metrics.database_state import collect

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric
    from sqlalchemy.engine import Engine

    from sqla_pgjobs.tasks import Job
    from sqla_pgjobs.worker.observer import Outcome

__all__ = ["DURATION_BUCKETS", "DatabaseCollector", "MetricsServer", "WorkerMetrics", "serve"]

log = logging.getLogger("sqla_pgjobs.metrics")

#: Seconds, for run durations, queue waits and cycles: from a no-op job (a millisecond)
#: to a long report (5 minutes).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    float("inf"),
)


# --- The database's state -------------------------------------------------------------------


class DatabaseCollector(Collector):
    """The state of the job database behind ``engine`` (mapped to the job schema's name:
    :func:`sqla_pgjobs.database.create_job_engine`), read on each scrape in one short
    transaction. When the database cannot be read, ``pgjobs_database_up`` is 0 and the
    error is logged; the other metrics are left out of that scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def registry(self) -> CollectorRegistry:
        """A new registry holding only this collector (what ``pgjobs metrics`` serves)."""
        registry = CollectorRegistry()
        registry.register(self)
        return registry

    def describe(self) -> list[Metric]:
        # Nothing to describe ahead: registering the collector must not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                state = collect(connection)
        except Exception as exc:
            log.warning("cannot read the job database: %s", exc, extra={"error": str(exc)})
            yield _gauge("pgjobs_database_up", "1 when the last scrape read the database.", 0)
            return
        elapsed = time.perf_counter() - started
        yield _gauge("pgjobs_database_up", "1 when the last scrape read the database.", 1)
        yield _gauge(
            "pgjobs_collector_duration_seconds",
            "Seconds the queries of this scrape took.",
            elapsed,
        )
        jobs = GaugeMetricFamily(
            "pgjobs_jobs",
            "Jobs in app_jobs.jobs by task, queue and state (due: may run now; delayed: "
            "run_at or a retry ahead; running: held by a worker; failed: attempts used up). "
            "Estimated from a sample on a large table: see pgjobs_jobs_estimated.",
            labels=["task", "queue", "state"],
        )
        for count in state.jobs.counts:
            jobs.add_metric(
                [count.task_identifier, count.queue_name or "", count.state], count.jobs
            )
        yield jobs
        totals = GaugeMetricFamily(
            "pgjobs_jobs_by_state",
            "Jobs in app_jobs.jobs by state, all tasks and queues (every state, 0 included).",
            labels=["state"],
        )
        for name in STATES:
            totals.add_metric([name], state.jobs.total(name))
        yield totals
        yield _gauge(
            "pgjobs_jobs_estimated",
            "1 when the due, delayed and failed counts of this scrape are estimated from a "
            "sample of the table's pages (the table is over 500 pages), 0 when exact.",
            int(state.jobs.estimated),
        )
        yield _gauge(
            "pgjobs_oldest_due_job_age_seconds",
            "Seconds the oldest due job (not running, attempts left) has waited since its "
            "run_at; 0 when no job is due.",
            state.oldest_due_seconds,
        )
        yield _gauge(
            "pgjobs_workers_alive",
            "Registered workers whose heartbeat is recent (app_jobs.alive_until).",
            state.workers.alive,
        )
        yield _gauge(
            "pgjobs_workers_registered",
            "Workers in app_jobs.workers, alive or not.",
            state.workers.registered,
        )
        yield _gauge("pgjobs_schedules", "Scheduled jobs.", state.schedules.schedules)
        yield _gauge(
            "pgjobs_schedules_overdue",
            "Scheduled jobs whose next fire time after their last fire has passed.",
            state.schedules.overdue,
        )
        yield _gauge(
            "pgjobs_schedule_lag_seconds",
            "Seconds the latest of the overdue schedules is late; 0 when none is.",
            state.schedules.max_lag_seconds,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# --- A worker's own metrics -----------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """The children of one task and queue, looked up once (a labels() call per job would
    cost more than the counting)."""

    started: Counter
    completed: Counter
    failed: Counter
    retried: Counter
    cancelled: Counter
    duration: Histogram
    wait: Histogram


class WorkerMetrics:
    """A worker's metrics in ``registry`` (a new one by default, with the process' CPU and
    memory), as its observer: ``Worker(..., observer=WorkerMetrics())``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, worker_id: str | None = None
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        labels = ["task", "queue"]

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        def histogram(name: str, documentation: str, names: list[str]) -> Histogram:
            return Histogram(
                name, documentation, names, registry=registry, buckets=DURATION_BUCKETS
            )

        self._started = counter("pgjobs_jobs_started", "Runs started (handlers called).")
        self._completed = counter("pgjobs_jobs_completed", "Runs that completed their job.")
        self._failed = counter(
            "pgjobs_jobs_failed",
            "Runs that failed (raised, timed out, no handler), retried or not; cancelled "
            "runs are not counted here.",
        )
        self._retried = counter(
            "pgjobs_jobs_retried",
            "Failed runs whose job will run again (attempts left): a part of failed.",
        )
        self._cancelled = counter(
            "pgjobs_jobs_cancelled",
            "Jobs this worker stopped, or never started, at an operator's request.",
        )
        self._duration = histogram(
            "pgjobs_job_duration_seconds", "Seconds a handler ran, by task and queue.", labels
        )
        self._wait = histogram(
            "pgjobs_job_queue_wait_seconds",
            "Seconds from a job's run_at to the start of its run (retries count from the "
            "retry's run_at).",
            labels,
        )
        self._cycle = histogram(
            "pgjobs_worker_cycle_duration_seconds",
            "Seconds one worker cycle (report results, take jobs: one statement) took.",
            [],
        )
        self._taken = Counter(
            "pgjobs_worker_jobs_taken", "Jobs taken by cycles.", registry=registry
        )
        self._prefetched = Gauge(
            "pgjobs_worker_prefetched_jobs",
            "Jobs held ready to start, waiting for a slot (after the last cycle).",
            registry=registry,
        )
        self._running = Gauge(
            "pgjobs_worker_running_jobs",
            "Jobs running (after the last cycle).",
            registry=registry,
        )
        if worker_id is not None:
            Gauge(
                "pgjobs_worker_info", "This worker (always 1).", ["worker_id"], registry=registry
            ).labels(worker_id).set(1)
        self._series: dict[tuple[str, str | None], _Series] = {}

    def _of(self, job: Job) -> _Series:
        key = (job.task_identifier, job.queue_name)
        series = self._series.get(key)
        if series is None:
            values = (job.task_identifier, job.queue_name or "")
            series = self._series[key] = _Series(
                started=self._started.labels(*values),
                completed=self._completed.labels(*values),
                failed=self._failed.labels(*values),
                retried=self._retried.labels(*values),
                cancelled=self._cancelled.labels(*values),
                duration=self._duration.labels(*values),
                wait=self._wait.labels(*values),
            )
        return series

    def job_started(self, job: Job) -> None:
        series = self._of(job)
        series.started.inc()
        series.wait.observe(max(0.0, time.time() - job.run_at.timestamp()))

    def job_finished(self, job: Job, outcome: Outcome, duration: float) -> None:
        series = self._of(job)
        if outcome == "completed":
            series.completed.inc()
        elif outcome == "cancelled":
            series.cancelled.inc()
        else:
            series.failed.inc()
            if outcome == "failed":
                series.retried.inc()
        if duration or outcome != "cancelled":  # a job cancelled unstarted did not run
            series.duration.observe(duration)

    def cycle_done(self, duration: float, taken: int, prefetched: int, running: int) -> None:
        self._cycle.observe(duration)
        self._taken.inc(taken)
        self._prefetched.set(prefetched)
        self._running.set(running)


# --- Serving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsServer:
    """A running ``/metrics`` server (:func:`serve`)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when asked for port 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(
    registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 9108
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` on a daemon thread (port 0: a
    free one, which :attr:`MetricsServer.port` tells); ``close()`` stops it."""
    port = check.check_port("port", port)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    served = MetricsServer(server, thread)
    log.info(
        "serving metrics on http://%s:%d/metrics",
        host,
        served.port,
        extra={"host": host, "port": served.port},
    )
    return served
