"""A known workload for the dashboard's pages: live jobs in every state (the metrics tests'
workload), finished runs in the history (completed, failed, cancelled), a payload to find,
a hostile payload, a trace context, a registered worker and a schedule."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqla_pgjobs import JobSpec, add_job, add_jobs, add_scheduled_job, heartbeat
from sqla_pgjobs.testing import run_jobs
from sqla_pgjobs.worker import TaskRegistry
from tests.helpers import sql
from tests.metrics.workload import direct_counts, execute, known_workload

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["HOSTILE", "Workload", "direct_counts", "finished_counts", "make_workload"]

#: A payload that would run script if the pages did not escape it.
HOSTILE = {
    "note": "<script>window.__pwned=1</script>",
    "img": '<img src=x onerror="window.__pwned=2">',
    "quote": "\"'><svg onload=window.__pwned=3>",
}


@dataclasses.dataclass(frozen=True)
class Workload:
    account_job: int  # payload {"account_id": 42, ...}
    hostile_job: int
    failed_job: int  # failed for good, still in the queue
    delayed_job: int
    traced_job: int
    trace_id: str


def _tasks() -> TaskRegistry:
    tasks = TaskRegistry()

    @tasks.task("ok")
    def ok(payload: Any) -> None:
        return None

    @tasks.task("boom")
    def boom(payload: Any) -> None:
        raise RuntimeError("boom: the traceback shows in the dashboard")

    return tasks


def make_workload(engine: Engine) -> Workload:
    """``engine``: translated to the suite's schema."""
    # Finished runs first (run_jobs runs every due job of its tasks): 4 completed, and
    # 2 that fail for good (max_attempts 1), which stay in the queue as failed.
    execute(
        engine,
        add_jobs(JobSpec("ok", queue_name="fast") for _ in range(4)),
        add_jobs(JobSpec("boom", queue_name="fast", max_attempts=1) for _ in range(2)),
    )
    run_jobs(engine, _tasks())
    known_workload(engine)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    [account, hostile, delayed, traced] = execute(
        engine,
        add_job("billing", {"account_id": 42, "lines": [1, 2]}, queue_name="slow"),
        add_job("billing", HOSTILE, queue_name="slow"),
        add_job("billing", {"account_id": 7}, queue_name="slow", run_at=None),
        add_job("traced", {"x": 1}),
        heartbeat("dashboard-test-worker", timedelta(seconds=30), {"host": "test"}),
        add_scheduled_job("tick", {}, {"rule": "*/5 * * * *", "tz": "Europe/Paris"}),
    )[:4]
    execute(
        engine,
        sql(
            "UPDATE app_jobs.jobs SET run_at = now() + interval '1 hour' WHERE id = :id"
        ).bindparams(id=delayed.id),
        sql(
            "INSERT INTO app_jobs.job_trace_contexts (job_id, context) VALUES (:id, "
            "CAST(:context AS jsonb))"
        ).bindparams(
            id=traced.id, context=f'{{"traceparent": "00-{trace_id}-00f067aa0ba902b7-01"}}'
        ),
    )
    [failed] = execute(
        engine,
        sql("SELECT id FROM app_jobs.jobs WHERE task_identifier = 'boom' ORDER BY id LIMIT 1"),
    )
    return Workload(account.id, hostile.id, failed.id, delayed.id, traced.id, trace_id)


def finished_counts(engine: Engine) -> Counter[tuple[str, str, str]]:
    """Finished runs of the last day by task, queue and outcome, read directly."""
    rows = execute(
        engine,
        sql(
            "SELECT task_identifier, coalesce(queue_name, ''), outcome, count(*)"
            " FROM app_jobs.job_history WHERE finished_at > now() - interval '1 day'"
            " GROUP BY 1, 2, 3"
        ),
    )
    return Counter({(task, queue, outcome): n for task, queue, outcome, n in rows})
