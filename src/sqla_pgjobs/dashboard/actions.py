"""What the dashboard's buttons do: the operator actions of :mod:`sqla_pgjobs.admin` and
the pause functions, on listed jobs (one, or the current filter's selection), with a
summary to show. Jobs a live worker holds are left alone (as ``pgjobs jobs ...`` leaves
them without ``--force``): the dashboard never forces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqla_pgjobs import admin
from sqla_pgjobs import functions as fn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection

__all__ = ["ACTIONS", "JOB_ACTIONS", "QUEUE_ACTIONS", "Summary", "on_jobs", "on_queue"]

#: Actions on jobs, and what each button says.
JOB_ACTIONS = {
    "retry": "Retry",
    "cancel": "Cancel",
    "delete": "Delete",
    "run_now": "Run now",
}
#: Actions on queues.
QUEUE_ACTIONS = {"pause": "Pause", "resume": "Resume"}
#: Every action: the names ``authorize(request, action)`` is asked about.
ACTIONS = (*JOB_ACTIONS, *QUEUE_ACTIONS)

#: What each action does, for its confirmation step.
EXPLAINED = {
    "retry": "run again now with their attempts reset (a finished job that failed, was "
    "cancelled or discarded is enqueued again as a new job)",
    "cancel": "be cancelled: a waiting job ends now, a running one is asked to stop",
    "delete": "be deleted without running (recorded in the history as discarded)",
    "run_now": "run now (their attempts are kept)",
    "pause": "stop being taken by workers (running jobs finish; new jobs are still enqueued)",
    "resume": "be taken by workers again",
}


@dataclass(frozen=True)
class Summary:
    """What an action did: ids acted on, ids left alone, and for a retry of finished jobs
    the new job of each."""

    action: str
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    requeued: dict[int, int] = field(default_factory=dict)
    detail: dict[str, list[int]] = field(default_factory=dict)
    message: str = ""


def on_jobs(connection: Connection, action: str, job_ids: Sequence[int]) -> Summary:
    """Run a job action (one of :data:`JOB_ACTIONS`) on ``job_ids``."""
    ids = list(job_ids)
    if action == "cancel":
        result = admin.cancel(connection, ids)
        done = result.ids("cancelled", "cancel_requested")
        skipped = sorted(set(ids) - set(done))
        return Summary(action, done, skipped, detail=result.by_result)
    if action == "retry":
        acted = admin.retry(connection, ids)
        done = sorted([*acted.done, *acted.requeued])
        return Summary(action, done, acted.skipped, requeued=acted.requeued)
    if action == "delete":
        acted = admin.delete(connection, ids)
    elif action == "run_now":
        acted = admin.reschedule(connection, ids, run_at=datetime.now(UTC))
    else:
        raise ValueError(f"not a job action: {action!r}")
    return Summary(action, acted.done, acted.skipped)


def on_queue(connection: Connection, action: str, queue: str) -> Summary:
    """Pause or resume a queue."""
    if action == "pause":
        changed = connection.execute(fn.pause_queue(queue)).scalar()
        message = f"Queue {queue} paused." if changed else f"Queue {queue} was already paused."
    elif action == "resume":
        changed = connection.execute(fn.resume_queue(queue)).scalar()
        message = f"Queue {queue} resumed." if changed else f"Queue {queue} was not paused."
    else:
        raise ValueError(f"not a queue action: {action!r}")
    return Summary(action, message=message)
