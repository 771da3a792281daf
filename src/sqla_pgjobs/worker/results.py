"""How finished jobs ended, kept until the worker's next cycle reports them.

Results travel in batches (one ``worker_cycle`` statement reports all those gathered since
the last one). A batch whose statement failed is given back, ahead of the newer results,
and sent again: completing or failing a job twice is harmless, since the database only
records a result for a job the worker still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["Batch", "Results"]


@dataclass(frozen=True)
class Batch:
    """Results taken for one cycle: completed job ids, failed ``(job id, error)`` pairs,
    those to fail for good (no retry), those to retry at a time of the task's choosing
    ``(job id, error, run_at, attempt refunded)``, and when the oldest of them came in
    (monotonic)."""

    completed: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    since: float = 0.0
    failed_for_good: list[tuple[int, str]] = field(default_factory=list)
    retried: list[tuple[int, str, datetime, bool]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.completed) + len(self.failed) + len(self.failed_for_good) + len(self.retried)
        )


class Results:
    """The results not yet reported."""

    __slots__ = ("_completed", "_failed", "_failed_for_good", "_retried", "since")

    def __init__(self) -> None:
        self._completed: list[int] = []
        self._failed: list[tuple[int, str]] = []
        self._failed_for_good: list[tuple[int, str]] = []
        self._retried: list[tuple[int, str, datetime, bool]] = []
        #: When the oldest unreported result came in (monotonic; meaningless when empty).
        self.since = 0.0

    def __len__(self) -> int:
        return (
            len(self._completed)
            + len(self._failed)
            + len(self._failed_for_good)
            + len(self._retried)
        )

    def completed(self, job_id: int, now: float) -> None:
        if not (self._completed or self._failed or self._failed_for_good or self._retried):
            self.since = now
        self._completed.append(job_id)

    def failed(self, job_id: int, error: str, now: float, *, for_good: bool = False) -> None:
        if not self:
            self.since = now
        (self._failed_for_good if for_good else self._failed).append((job_id, error))

    def retried(
        self, job_id: int, error: str, run_at: datetime, now: float, *, refunded: bool = False
    ) -> None:
        """A failed run to retry at ``run_at`` (``refunded``: a snooze, not an attempt)."""
        if not self:
            self.since = now
        self._retried.append((job_id, error, run_at, refunded))

    def take(self) -> Batch:
        """Everything gathered so far, leaving the buffer empty."""
        batch = Batch(
            self._completed, self._failed, self.since, self._failed_for_good, self._retried
        )
        self._completed, self._failed, self._failed_for_good, self._retried = [], [], [], []
        return batch

    def give_back(self, batch: Batch) -> None:
        """Put back a batch that could not be reported, ahead of what came in since."""
        if not batch:
            return
        if not self or batch.since < self.since:
            self.since = batch.since
        self._completed = batch.completed + self._completed
        self._failed = batch.failed + self._failed
        self._failed_for_good = batch.failed_for_good + self._failed_for_good
        self._retried = batch.retried + self._retried

    def job_ids(self) -> list[int]:
        """The jobs with a result waiting: still held by this worker in the database."""
        return [
            *self._completed,
            *(job_id for job_id, _ in self._failed),
            *(job_id for job_id, _ in self._failed_for_good),
            *(job_id for job_id, *_ in self._retried),
        ]
