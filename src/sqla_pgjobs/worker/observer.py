"""What a worker tells an observer (metrics, for one): each job started and how each run
ended, and each cycle.

The worker calls an observer only when one is given (``Worker(..., observer=...)``): with
none, what it costs is one ``is None`` test per job and per cycle. The calls are made on the
worker's event loop and must return quickly (counting, not I/O).
:class:`sqla_pgjobs.metrics.prometheus.WorkerMetrics` is the observer ``pgjobs worker
--metrics-port`` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from sqla_pgjobs.outcomes import Failure
    from sqla_pgjobs.tasks import Job

__all__ = ["Outcome", "WorkerObserver", "outcome_of"]

#: How a run ended: ``failed`` runs run again later (their attempts are not used up),
#: ``failed_for_good`` ones do not; a run with a cancel request that fails is ``cancelled``.
Outcome = Literal["completed", "failed", "failed_for_good", "cancelled"]


def outcome_of(job: Job, error: BaseException | None, how: Failure | None = None) -> Outcome:
    """How the run of ``job`` that ended with ``error`` (None: it returned) ends the job,
    recorded as ``how`` says (:func:`sqla_pgjobs.outcomes.failure`): the rule of the SQL
    functions (a job whose cancellation was requested ends as cancelled, never retried; a
    snoozed one comes back; otherwise a failure is retried while attempts remain)."""
    if error is None:
        return "completed"
    if job.cancel_requested:
        return "cancelled"
    if how is not None and how.for_good:
        return "failed_for_good"
    if how is not None and how.refunded:
        return "failed"
    return "failed" if job.attempts < job.max_attempts else "failed_for_good"


class WorkerObserver(Protocol):
    """The calls a worker makes; see the module doc."""

    def job_started(self, job: Job) -> None:
        """A handler starts for ``job`` (its queue wait: now minus ``job.run_at``)."""

    def job_finished(self, job: Job, outcome: Outcome, duration: float) -> None:
        """A run ended after ``duration`` seconds (``duration`` 0 for a job cancelled
        before it started: :meth:`job_started` was not called for it)."""

    def cycle_done(self, duration: float, taken: int, prefetched: int, running: int) -> None:
        """A cycle took ``duration`` seconds and ``taken`` jobs; the worker now holds
        ``prefetched`` jobs waiting for a slot and runs ``running``."""
