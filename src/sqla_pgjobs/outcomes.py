"""How a run that raised is recorded: the one rule for the worker and for
:func:`sqla_pgjobs.testing.run_jobs`.

- :class:`~sqla_pgjobs.errors.FailForGood`, and a payload that cannot be its typed task's
  arguments (:class:`~sqla_pgjobs.errors.InvalidPayloadError`): failed for good now;
- :class:`~sqla_pgjobs.errors.Snooze`: run again at its time, the attempt refunded;
- :class:`~sqla_pgjobs.errors.RetryAt`: failed, retried at its time;
- anything else: failed, retried after the task's ``backoff`` (typed tasks:
  :func:`~sqla_pgjobs.tasks.exponential_backoff`, with jitter), or, for a payload handler
  without one, after the SQL functions' own backoff (``fail_job_batch``: e^min(attempts,
  10) seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqla_pgjobs.errors import FailForGood, InvalidPayloadError, RetryAt, Snooze

if TYPE_CHECKING:
    from sqla_pgjobs.tasks import Job, Task

__all__ = ["Failure", "failure"]


@dataclass(frozen=True)
class Failure:
    """How to record a run that raised: ``for_good``, or retried at ``run_at`` (None: the
    SQL functions' own backoff), with the attempt ``refunded`` for a snooze."""

    for_good: bool = False
    run_at: datetime | None = None
    refunded: bool = False


def failure(error: BaseException, task: Task | None, job: Job) -> Failure:
    """How the run of ``job`` (by ``task``, None when unknown) that raised ``error`` is
    recorded."""
    if isinstance(error, FailForGood | InvalidPayloadError):
        return Failure(for_good=True)
    if isinstance(error, Snooze):
        return Failure(run_at=error.when, refunded=True)
    if isinstance(error, RetryAt):
        return Failure(run_at=error.when)
    if task is not None and task.backoff is not None:
        return Failure(run_at=datetime.now(UTC) + task.backoff(job.attempts))
    return Failure()
