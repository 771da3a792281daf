"""The worker's decisions: how many jobs to take, when to cycle, how long to wait, when to give
prefetched jobs back. Pure functions of a :class:`Load` (counts, ages, run times), so that
they are tested without PostgreSQL (tests/worker/test_policy.py).

The numbers:

- ``PREFETCH_HORIZON`` (10 ms): a prefetched job should start within about this long. The
  prefetch is the jobs the slots are expected to ask for in that time at the recent run
  times: short jobs never wait for a round trip, and a worker busy with long ones holds none
  that another worker could start sooner.
- ``GIVE_BACK_AFTER`` (0.25 s): prefetched jobs that have waited this long with every slot
  busy (long jobs after short ones) go back, attempt refunded, for other workers.
- ``REPORT_DELAY`` (50 ms): a result waits at most this long for others to share its
  commit while jobs are still running (it goes at once when none is).
- ``BLOCKED_RETRY`` (1 s): a job is due but the last cycle gave none (its queue is busy):
  look again after this long at most, since releasing a queue sends no NOTIFY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "BLOCKED_RETRY",
    "DURATION_WEIGHT",
    "GIVE_BACK_AFTER",
    "PREFETCH_HORIZON",
    "REPORT_DELAY",
    "Load",
    "Pace",
    "Policy",
]

PREFETCH_HORIZON = 0.01
GIVE_BACK_AFTER = 0.25
REPORT_DELAY = 0.05
BLOCKED_RETRY = 1.0
#: Weight of the newest run time in the running average that sizes the prefetch: about
#: the last twenty jobs count.
DURATION_WEIGHT = 0.1


class Pace:
    """How long jobs take: a running average of run times (None until one has run), and
    when a job last finished (a monotonic time)."""

    __slots__ = ("average", "last_finished")

    def __init__(self, now: float, average: float | None = None) -> None:
        self.average = average
        self.last_finished = now

    def finished(self, duration: float, now: float) -> None:
        average = self.average
        self.average = (
            duration if average is None else average + DURATION_WEIGHT * (duration - average)
        )
        self.last_finished = now


class Load(NamedTuple):
    """What a worker holds at one moment, as the policy sees it. Ages are in seconds."""

    running: int = 0
    prefetched: int = 0
    #: Results not yet reported, and how long the oldest of them has waited.
    results: int = 0
    results_age: float = 0.0
    #: How long the oldest prefetched job has waited.
    prefetched_age: float = 0.0
    #: Since a job last finished.
    since_finished: float = 0.0
    #: The running average of run times (None: no job has run yet).
    average_duration: float | None = None


@dataclass(frozen=True)
class Policy:
    """The decisions of a worker with ``concurrency`` slots, at most ``prefetch`` jobs held
    beyond the running ones, and ``poll_interval`` as its longest sleep."""

    concurrency: int
    prefetch: int
    poll_interval: float

    def prefetch_target(self, load: Load) -> int:
        """How many jobs to hold beyond the running ones: as many as should start within
        PREFETCH_HORIZON at the recent run times, at most ``prefetch``. With every slot
        busy, the time since one last freed counts as a run time too: a burst of long jobs
        stops the prefetch before the first of them ends."""
        if not self.prefetch or load.average_duration is None:
            return 0
        duration = load.average_duration
        if load.running >= self.concurrency:
            duration = max(duration, load.since_finished)
        expected = self.concurrency * PREFETCH_HORIZON / max(duration, 1e-6)
        return min(self.prefetch, int(expected))

    def room(self, load: Load) -> int:
        """How many jobs to take now: the free slots plus the prefetch target, less what is
        already prefetched (never negative)."""
        wanted = self.concurrency + self.prefetch_target(load) - load.running - load.prefetched
        return max(wanted, 0)

    def cycle_due(self, load: Load) -> bool:
        """Whether to cycle now. Taking waits until the prefetched jobs are down to half their
        target (with no prefetch: until a slot is free), so that one commit serves many
        jobs; reporting waits at most REPORT_DELAY while jobs are running."""
        target = self.prefetch_target(load)
        free = self.concurrency + target - load.running - load.prefetched
        if free > 0 and 2 * load.prefetched <= target:
            return True
        return load.results > 0 and (load.running == 0 or load.results_age >= REPORT_DELAY)

    def idle_wait(self, load: Load) -> float:
        """How long to wait when no cycle is due: until results are due to be reported, or
        prefetched jobs would be given back, at most ``poll_interval``."""
        wait = self.poll_interval
        if load.results:
            wait = min(wait, REPORT_DELAY)
        if load.prefetched:
            wait = min(wait, GIVE_BACK_AFTER)
        return wait

    def prefetch_is_stuck(self, load: Load) -> bool:
        """Prefetched jobs have waited GIVE_BACK_AFTER with every slot busy (and no slot
        has freed meanwhile)."""
        return (
            load.prefetched > 0
            and load.running >= self.concurrency
            and min(load.prefetched_age, load.since_finished) >= GIVE_BACK_AFTER
        )

    def after_cycle(
        self, next_run_at: tuple[datetime, datetime] | None, *, took_jobs: bool
    ) -> tuple[float, bool]:
        """After a cycle that took fewer jobs than it asked for: how long to sleep (at most
        ``poll_interval``) and whether a job is due now, from ``(next_run_at, now)`` as that
        cycle saw them (None: no job to wait for)."""
        if next_run_at is None:
            return self.poll_interval, False
        seconds = (next_run_at[0] - next_run_at[1]).total_seconds()
        if seconds <= 0:
            # Due, yet not given to us: its queue is busy (or another worker was quicker).
            return (0.0 if took_jobs else min(BLOCKED_RETRY, self.poll_interval)), True
        return min(seconds, self.poll_interval), False
