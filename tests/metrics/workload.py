"""A known workload for the metrics tests, and direct counts to check the collector by."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqla_pgjobs import JobSpec, add_jobs, get_job
from tests.helpers import sql

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from sqla_pgjobs.metrics import database_state

__all__ = ["collected", "direct_counts", "execute", "known_workload"]


# The state of a row, written out here independently of sqla_pgjobs.admin.job_state.
DIRECT_COUNT = """
SELECT task_identifier, coalesce(queue_name, ''),
       CASE WHEN locked_at IS NOT NULL THEN 'running'
            WHEN attempts >= max_attempts THEN 'failed'
            WHEN run_at > now() THEN 'delayed'
            ELSE 'due' END,
       count(*)
  FROM app_jobs.jobs GROUP BY 1, 2, 3
"""


def execute(engine: Engine, *statements: Any) -> list[Any]:
    rows: list[Any] = []
    with engine.begin() as connection:
        for statement in statements:
            result = connection.execute(statement)
            rows += result.all() if result.returns_rows else []
    return rows


def direct_counts(engine: Engine) -> Counter[tuple[str, str, str]]:
    with engine.connect() as connection:
        return Counter(
            {
                (task, queue, state): n
                for task, queue, state, n in connection.execute(sql(DIRECT_COUNT))
            }
        )


def collected(counts: database_state.JobCounts) -> Counter[tuple[str, str, str]]:
    return Counter(
        {(c.task_identifier, c.queue_name or "", c.state): c.jobs for c in counts.counts}
    )


def known_workload(engine: Engine) -> None:
    """Due, delayed, failed-for-good and running jobs of two tasks in two queues and none."""
    later = datetime.now(UTC) + timedelta(hours=1)
    execute(
        engine,
        add_jobs(JobSpec("mail", queue_name="a") for _ in range(7)),
        add_jobs(JobSpec("mail", queue_name="b") for _ in range(3)),
        add_jobs(JobSpec("report") for _ in range(4)),
        add_jobs(JobSpec("report", queue_name="b", run_at=later) for _ in range(5)),
    )
    # Two failed for good (attempts used up), one running (held by a worker).
    execute(
        engine,
        sql(
            "INSERT INTO app_jobs.jobs (task_identifier, queue_name, attempts, max_attempts)"
            " SELECT 'mail', 'a', 1, 1 FROM generate_series(1, 2)"
        ),
    )
    [taken] = execute(engine, get_job("metrics-test-worker", task_identifiers=["report"]))
    assert taken.id is not None
