"""The worker's decisions (sqla_pgjobs.worker.policy) and its result buffer, without a
database: counts, ages and run times in, decisions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sqla_pgjobs.worker.policy import (
    BLOCKED_RETRY,
    GIVE_BACK_AFTER,
    PREFETCH_HORIZON,
    REPORT_DELAY,
    Load,
    Pace,
    Policy,
)
from sqla_pgjobs.worker.results import Batch, Results

POLICY = Policy(concurrency=10, prefetch=100, poll_interval=10.0)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


# --- Prefetch -----------------------------------------------------------------------------


def test_no_prefetch_before_a_job_has_run_or_when_it_is_off() -> None:
    assert POLICY.prefetch_target(Load(average_duration=None)) == 0
    off = Policy(concurrency=10, prefetch=0, poll_interval=10.0)
    assert off.prefetch_target(Load(average_duration=1e-6)) == 0


@pytest.mark.parametrize(
    ("duration", "target"),
    [
        (1e-5, 100),  # 10 slots x 10 ms / 10 us = 10,000 jobs: capped at prefetch
        (1e-3, 100),  # exactly 100 start within the horizon
        (2e-3, 50),
        (0.01, 10),
        (0.1, 1),
        (1.0, 0),  # long jobs: none held that another worker could start sooner
    ],
)
def test_the_prefetch_is_what_the_slots_start_within_the_horizon(
    duration: float, target: int
) -> None:
    assert POLICY.prefetch_target(Load(average_duration=duration)) == target
    assert target == min(100, int(10 * PREFETCH_HORIZON / duration))


def test_with_every_slot_busy_the_wait_since_a_slot_freed_counts_as_a_run_time() -> None:
    """A burst of long jobs after short ones stops the prefetch before the first ends."""
    short = 1e-4
    assert POLICY.prefetch_target(Load(running=9, average_duration=short, since_finished=5)) == 100
    assert POLICY.prefetch_target(Load(running=10, average_duration=short, since_finished=0.5)) == 0
    assert POLICY.prefetch_target(Load(running=10, average_duration=short, since_finished=0)) == 100


# --- How many to take, when to cycle ------------------------------------------------------


def test_room_is_free_slots_plus_the_prefetch_target_less_what_is_held() -> None:
    assert POLICY.room(Load()) == 10  # no run time known yet: the slots only
    assert POLICY.room(Load(running=4, prefetched=2)) == 4
    assert POLICY.room(Load(running=4, prefetched=30, average_duration=1e-3)) == 76
    assert POLICY.room(Load(running=10, prefetched=50)) == 0  # never negative


def test_taking_waits_until_the_prefetched_jobs_are_down_to_half_their_target() -> None:
    fast = {"average_duration": 1e-3, "running": 10}  # target 100 while a slot freed lately
    assert POLICY.cycle_due(Load(prefetched=50, **fast))
    assert not POLICY.cycle_due(Load(prefetched=51, **fast))
    # Without prefetch, a free slot is the signal.
    assert POLICY.cycle_due(Load(running=9))
    assert not POLICY.cycle_due(Load(running=10))


def test_results_wait_at_most_the_report_delay_while_jobs_run_and_go_at_once_when_none() -> None:
    busy = {"running": 10, "prefetched": 0}
    assert not POLICY.cycle_due(Load(results=3, results_age=REPORT_DELAY / 2, **busy))
    assert POLICY.cycle_due(Load(results=3, results_age=REPORT_DELAY, **busy))
    assert POLICY.cycle_due(Load(running=0, results=1, results_age=0.0, prefetched=5))
    assert not POLICY.cycle_due(Load(results=0, results_age=100, **busy))


def test_idle_wait_is_bounded_by_what_is_due_next() -> None:
    assert POLICY.idle_wait(Load()) == 10.0
    assert POLICY.idle_wait(Load(results=1)) == REPORT_DELAY
    assert POLICY.idle_wait(Load(prefetched=1)) == GIVE_BACK_AFTER
    assert POLICY.idle_wait(Load(results=1, prefetched=1)) == REPORT_DELAY
    short_poll = Policy(concurrency=1, prefetch=0, poll_interval=0.01)
    assert short_poll.idle_wait(Load(results=1, prefetched=1)) == 0.01


def test_prefetched_jobs_are_stuck_after_the_give_back_delay_with_every_slot_busy() -> None:
    stuck = Load(running=10, prefetched=3, prefetched_age=GIVE_BACK_AFTER, since_finished=1.0)
    assert POLICY.prefetch_is_stuck(stuck)
    assert not POLICY.prefetch_is_stuck(stuck._replace(prefetched_age=GIVE_BACK_AFTER / 2))
    # A slot freed lately: the queue is moving.
    assert not POLICY.prefetch_is_stuck(stuck._replace(since_finished=0.1))
    assert not POLICY.prefetch_is_stuck(stuck._replace(running=9))
    assert not POLICY.prefetch_is_stuck(stuck._replace(prefetched=0))


# --- After a cycle ------------------------------------------------------------------------


def test_after_a_cycle_it_sleeps_until_the_next_job_at_most_the_poll_interval() -> None:
    assert POLICY.after_cycle(None, took_jobs=False) == (10.0, False)
    soon = (NOW + timedelta(seconds=2.5), NOW)
    assert POLICY.after_cycle(soon, took_jobs=False) == (2.5, False)
    later = (NOW + timedelta(hours=1), NOW)
    assert POLICY.after_cycle(later, took_jobs=True) == (10.0, False)


def test_a_due_job_not_given_is_looked_for_again_soon_and_counts_as_due() -> None:
    due = (NOW - timedelta(seconds=1), NOW)
    assert POLICY.after_cycle(due, took_jobs=False) == (BLOCKED_RETRY, True)
    assert POLICY.after_cycle(due, took_jobs=True) == (0.0, True)
    short_poll = Policy(concurrency=1, prefetch=0, poll_interval=0.2)
    assert short_poll.after_cycle(due, took_jobs=False) == (0.2, True)


# --- Pace ---------------------------------------------------------------------------------


def test_pace_is_a_running_average_that_starts_at_the_first_run_time() -> None:
    pace = Pace(now=100.0)
    assert (pace.average, pace.last_finished) == (None, 100.0)
    pace.finished(1.0, now=101.0)
    assert (pace.average, pace.last_finished) == (1.0, 101.0)
    pace.finished(2.0, now=103.0)
    assert pace.average == pytest.approx(1.1)
    for _ in range(200):
        pace.finished(0.01, now=104.0)
    assert pace.average == pytest.approx(0.01)


# --- Results ------------------------------------------------------------------------------


def test_results_are_taken_as_a_batch_and_the_buffer_starts_again() -> None:
    results = Results()
    assert not results
    results.completed(1, now=10.0)
    results.failed(2, "boom", now=11.0)
    results.completed(3, now=12.0)
    assert (len(results), results.since, results.job_ids()) == (3, 10.0, [1, 3, 2])
    batch = results.take()
    assert batch == Batch([1, 3], [(2, "boom")], 10.0)
    assert len(batch) == 3
    assert not results
    results.completed(4, now=20.0)
    assert results.since == 20.0


def test_a_batch_given_back_goes_ahead_of_newer_results_and_keeps_its_age() -> None:
    results = Results()
    results.completed(1, now=10.0)
    results.failed(2, "boom", now=10.5)
    batch = results.take()
    results.completed(3, now=12.0)
    results.give_back(batch)
    assert results.since == 10.0
    again = results.take()
    assert (again.completed, again.failed, again.since) == ([1, 3], [(2, "boom")], 10.0)
    results.give_back(Batch())
    assert not results
    results.give_back(again)
    assert (len(results), results.since) == (3, 10.0)
