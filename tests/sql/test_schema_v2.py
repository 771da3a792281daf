"""Schema version 2 (src/sqla_pgjobs/sql/upgrade_v1_to_v2.sql): its fixes, one section each.

Each test of a fix fails against schema version 1 (run with the suite's template installed
at version 1, it fails on the behaviour it names) and passes against version 2. The few
that version 1 passes too say so: they pin what version 2 keeps.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.helpers import index_entries_read, libpq_url, raw, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

NODE = "node-worker-1"  # a holder that never heartbeats, as the reference Node worker
WORKER = "worker-1"
LIMIT = "at most 365000 days"


# --- Helpers -------------------------------------------------------------------------------


@pytest.fixture
def db(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection to the test's database."""
    with psycopg.connect(libpq_url(engine.url), autocommit=True) as connection:
        yield connection


def value(connection: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    """The first column of the first row of a statement written with ``app_jobs``."""
    row = connection.execute(raw(statement), params).fetchone()
    assert row is not None
    return row[0]


def column(connection: psycopg.Connection[Any], statement: str, *params: Any) -> list[Any]:
    return [row[0] for row in connection.execute(raw(statement), params)]


def state(connection: psycopg.Connection[Any]) -> list[str]:
    """Every row of every table of the job schema, as text."""
    return [
        value(
            connection,
            f"SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text FROM app_jobs.{t} t",
        )
        for t in ("jobs", "scheduled_jobs", "job_queues", "workers")
    ]


def refusal(
    connection: psycopg.Connection[Any], statement: str, params: Any = None
) -> psycopg.Error:
    """The error a statement raises (in a transaction of its own, rolled back)."""
    with pytest.raises(psycopg.Error) as info, connection.transaction():
        connection.execute(raw(statement), params)
    return info.value


def assert_argument_error(error: psycopg.Error, argument: str, allowed: str) -> None:
    """SQLSTATE 22023 naming the argument (COLUMN and message) and what is allowed."""
    assert (error.sqlstate, error.diag.column_name) == ("22023", argument), error
    message = error.diag.message_primary or ""
    assert message.startswith(f"{argument} must be ") and allowed in message, message


def add_job(connection: psycopg.Connection[Any], task: str = "t", **options: Any) -> int:
    names = ", ".join(f"{name} => %s" for name in options)
    return int(
        value(
            connection,
            f"SELECT id FROM app_jobs.add_job(NULL, %s{', ' + names if names else ''})",
            task,
            *options.values(),
        )
    )


def take(connection: psycopg.Connection[Any], worker: str = WORKER, n: int = 10) -> list[int]:
    return column(connection, "SELECT id FROM app_jobs.get_jobs(%s, NULL, NULL, %s)", worker, n)


def held_by_node(connection: psycopg.Connection[Any]) -> int:
    """A job a never-heartbeating holder took a minute ago: still well within job_expiry."""
    job = add_job(connection, "held")
    assert take(connection, NODE) == [job]
    connection.execute(
        raw("UPDATE app_jobs.jobs SET locked_at = now() - interval '1 minute' WHERE id = %s"),
        [job],
    )
    return job


def age_last_fire(connection: psycopg.Connection[Any]) -> None:
    """Move the schedules' last fire a minute back: only the previous job's state and the
    arguments decide then (version 1 refused any call within 500 ms of the last fire)."""
    connection.execute(
        raw(
            "UPDATE app_jobs.scheduled_jobs"
            " SET last_scheduled = last_scheduled - interval '1 minute'"
        )
    )


# --- 1. run_scheduled_job without fire_time: no wall-clock window ------------------------------


@pytest.mark.parametrize("outcome", ["completed", "failed for good"])
def test_calls_without_fire_time_in_quick_succession_make_a_job_each_once_the_last_finished(
    db: psycopg.Connection[Any], outcome: str
) -> None:
    """Version 1 refused the second call with ALREADY_SCHEDULED: it came less than 500 ms
    after the first. The reference creates the job, and so does version 2. All in one
    transaction, so that now() does not move: 0 ms apart, however slow the machine."""
    schedule = value(
        db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'tick', max_attempts => 1)"
    )
    run = "SELECT id FROM app_jobs.run_scheduled_job(%s)"
    with db.transaction():
        first = value(db, run, schedule)
        assert take(db) == [first]
        if outcome == "completed":
            assert value(db, "SELECT id FROM app_jobs.complete_job(%s, %s)", WORKER, first) == first
        else:
            assert (
                value(db, "SELECT id FROM app_jobs.fail_job(%s, %s, 'x')", WORKER, first) == first
            )
        second = value(db, run, schedule)
    assert second not in (None, first)
    assert value(db, "SELECT last_scheduled_id FROM app_jobs.scheduled_jobs") == second
    # The original's rule stays: refused while the previous fire's job is pending.
    error = refusal(db, run, [schedule])
    assert (error.sqlstate, error.diag.message_primary) == ("P0001", "ALREADY_SCHEDULED")
    assert column(db, "SELECT id FROM app_jobs.jobs ORDER BY id") == (
        [second] if outcome == "completed" else [first, second]
    )


def test_calls_with_the_same_fire_time_make_one_job(db: psycopg.Connection[Any]) -> None:
    """What version 2 keeps (version 1 passes this too): an explicit fire_time dedupes."""
    schedule = value(db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'tick')")
    run = "SELECT id FROM app_jobs.run_scheduled_job(%s, NULL, %s::timestamptz)"
    fire = "2030-01-01 02:00:00+00"
    with db.transaction():
        job = value(db, run, schedule, fire)
        assert take(db) == [job]
        value(db, "SELECT id FROM app_jobs.complete_job(%s, %s)", WORKER, job)
    # The previous job is finished; the fire_time alone says it is the same fire.
    for _ in range(2):
        error = refusal(db, run, [schedule, fire])
        assert (error.sqlstate, error.diag.message_primary) == ("P0001", "ALREADY_SCHEDULED")
    assert column(db, "SELECT id FROM app_jobs.jobs") == []
    assert value(db, run, schedule, "2030-01-01 02:01:00+00") not in (None, job)


# --- 2. job_expiry: zero, negative or too large is refused -------------------------------------

#: Every function that takes a job_expiry, called with one (%s) while a never-heartbeating
#: holder has held a job for a minute (%s: its id) and a schedule's job is running (%s: the
#: schedule's id). With a job_expiry of 0, version 1 took that lock, completed, failed or
#: rescheduled the held job, or fired the schedule again beside its running job.
EXPIRY_CALLS = {
    "get_jobs": "get_jobs('worker-2', NULL, %(expiry)s, 10)",
    "get_job": "get_job('worker-2', NULL, %(expiry)s)",
    "worker_cycle": "worker_cycle('worker-2', NULL, NULL, NULL, NULL, %(expiry)s, 10)",
    "worker_cycle taking none": "worker_cycle('worker-2', NULL, NULL, NULL, NULL, %(expiry)s, 0)",
    "recover_jobs": "recover_jobs(%(expiry)s)",
    "complete_jobs": "complete_jobs(ARRAY[%(held)s]::bigint[], %(expiry)s)",
    "permanently_fail_jobs": "permanently_fail_jobs(ARRAY[%(held)s]::bigint[], 'x', %(expiry)s)",
    "reschedule_jobs": "reschedule_jobs(ARRAY[%(held)s]::bigint[], job_expiry => %(expiry)s)",
    "run_scheduled_job": "run_scheduled_job(%(schedule)s, %(expiry)s)",
}  # fmt: skip
#: Out of range: zero, negative, just over the limit, and past the timestamp range.
BAD_DURATIONS = ["0", "-1 hour", "365000 days 1 second", "100000000 years"]


@pytest.mark.parametrize("call", sorted(EXPIRY_CALLS))
def test_a_job_expiry_out_of_range_is_refused_naming_it_and_changes_nothing(
    db: psycopg.Connection[Any], call: str
) -> None:
    held = held_by_node(db)
    schedule = value(db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'tick')")
    fired = value(db, "SELECT id FROM app_jobs.run_scheduled_job(%s)", schedule)
    assert take(db, NODE) == [fired]
    age_last_fire(db)
    before = state(db)
    for expiry in BAD_DURATIONS:
        error = refusal(
            db,
            f"SELECT * FROM app_jobs.{EXPIRY_CALLS[call]}",
            {"expiry": expiry, "held": held, "schedule": schedule},
        )
        assert_argument_error(error, "job_expiry", LIMIT)
        assert state(db) == before, expiry


def test_the_duration_limits_are_inclusive(db: psycopg.Connection[Any]) -> None:
    """365000 days is allowed (version 1 allowed it too), as the Python wrappers allow."""
    held = held_by_node(db)
    job = add_job(db)
    get = "SELECT id FROM app_jobs.get_jobs('worker-2', NULL, %s::interval, 10)"
    assert column(db, get, "365000 days") == [job]
    db.execute(raw("SELECT app_jobs.recover_jobs(interval '365000 days')"))
    assert value(db, "SELECT locked_by FROM app_jobs.jobs WHERE id = %s", held) == NODE
    value(db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'tick')")
    lease = value(
        db,
        "SELECT lease_expires_at - locked_at FROM app_jobs.get_scheduled_jobs(%s, NULL, %s, 1)",
        WORKER,
        "365000 days",
    )
    assert lease.days == 365_000


# --- 3. Scheduled-job functions with extreme values --------------------------------------------


@pytest.fixture
def schedules(db: psycopg.Connection[Any]) -> dict[str, int]:
    """A schedule claimed by scheduler-1 whose last fire's job is running (held a minute by
    a never-heartbeating holder), one nobody claimed, and one never fired."""
    claimed = value(db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'claimed')")
    assert column(
        db, "SELECT id FROM app_jobs.get_scheduled_jobs('scheduler-1', NULL, NULL, 5)"
    ) == [claimed]
    fired = value(db, "SELECT id FROM app_jobs.run_scheduled_job(%s)", claimed)
    assert take(db, NODE) == [fired]
    db.execute(raw("UPDATE app_jobs.jobs SET locked_at = now() - interval '1 minute'"))
    age_last_fire(db)
    free = value(db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'free')")
    fresh = value(db, "SELECT id FROM app_jobs.add_scheduled_job(NULL, 'fresh')")
    return {"claimed": claimed, "free": free, "fresh": fresh}


#: (call, argument, values, what is allowed). Version 1 failed with "timestamp out of
#: range" (22008) for the large values, and took the others: a claim that had lapsed when
#: it was made, a renewal that ended the lease, a second job beside the running one, a
#: fire at 'infinity' after which the schedule never fired again.
EXTREME_CALLS = {
    "get_scheduled_jobs": ("get_scheduled_jobs('scheduler-2', NULL, %(v)s, 5)", "lease"),
    "get_scheduled_job": ("get_scheduled_job('scheduler-2', NULL, %(v)s)", "lease"),
    "renew_scheduled_jobs": ("renew_scheduled_jobs('scheduler-1', NULL, %(v)s)", "lease"),
    "run_scheduled_job expiry": ("run_scheduled_job(%(claimed)s, %(v)s)", "job_expiry"),
    "run_scheduled_job fire_time": ("run_scheduled_job(%(fresh)s, NULL, %(v)s::timestamptz)",
                                    "fire_time"),
}  # fmt: skip
INFINITIES = ["infinity", "-infinity"]


@pytest.mark.parametrize("call", sorted(EXTREME_CALLS))
def test_scheduled_job_functions_refuse_extreme_values_naming_the_argument_and_change_nothing(
    db: psycopg.Connection[Any], schedules: dict[str, int], call: str
) -> None:
    arguments, argument = EXTREME_CALLS[call]
    values, allowed = (
        (INFINITIES, "a finite timestamp") if argument == "fire_time" else (BAD_DURATIONS, LIMIT)
    )
    before = state(db)
    for extreme in values:
        error = refusal(db, f"SELECT * FROM app_jobs.{arguments}", {"v": extreme, **schedules})
        assert_argument_error(error, argument, allowed)
        assert state(db) == before, extreme


def test_add_scheduled_job_and_release_take_extreme_values_or_name_the_rule(
    db: psycopg.Connection[Any], schedules: dict[str, int]
) -> None:
    """The probe of the two scheduled-job functions version 2 leaves alone (version 1 passes
    this too): their limits are the table's CHECK constraints, refused with the constraint's
    name (the seed's contract), and the integer extremes are valid values."""
    add = "SELECT id FROM app_jobs.add_scheduled_job(NULL, %s, '{}', '{}', %s, %s, %s, %s)"
    before = state(db)
    for identifier, key, queue, attempts, constraint in [
        ("t", None, None, 0, "scheduled_jobs_max_attempts_check"),
        ("t", None, None, -(2**31), "scheduled_jobs_max_attempts_check"),
        ("t" * 127, None, None, 1, "scheduled_jobs_task_identifier_check"),
        ("t", "k" * 513, None, 1, "scheduled_jobs_key_check"),
        ("t", None, "q" * 127, 1, "scheduled_jobs_queue_name_check"),
    ]:
        error = refusal(db, add, [identifier, key, queue, attempts, 0])
        assert (error.sqlstate, error.diag.constraint_name) == ("23514", constraint)
        assert state(db) == before
    with db.transaction(force_rollback=True):
        for priority in (2**31 - 1, -(2**31)):
            assert value(db, add, "t", None, None, 2**31 - 1, priority) is not None
    for ids in (None, [], [-1, 2**63 - 1]):
        db.execute(raw("SELECT app_jobs.release_scheduled_jobs('scheduler-9', %s)"), [ids])
    assert state(db) == before


# --- 4. get_jobs: the head of each priority comes from the cursor's own snapshot -----------------


def wait_for_lock(db: psycopg.Connection[Any], pid: int) -> None:
    query = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)"
    wait_for(
        lambda: value(db, query, pid), 10, lambda: f"backend {pid} never waited for a lock", 0.01
    )


@pytest.mark.parametrize("priority", [0, -1], ids=["same-priority", "more-urgent-priority"])
def test_a_job_committed_while_get_jobs_waits_for_its_cursor_is_taken_in_that_call(
    engine: Engine, db: psycopg.Connection[Any], priority: int
) -> None:
    """Session B holds EXCLUSIVE on jobs: get_jobs' first statements (ACCESS SHARE) go
    through, its FOR UPDATE cursor (ROW SHARE) waits, and takes its snapshot only once it
    has the lock. B meanwhile commits a due job O with a run_at years back. Version 1 read
    the head (priority, run_at) before waiting, so its cursor saw O but started after it:
    the call returned J1 only (and the worker would wait up to a second for O)."""
    j1 = add_job(db, "j1")
    url = libpq_url(engine.url)
    outcome: dict[str, Any] = {}
    with psycopg.connect(url) as blocker, psycopg.connect(url, autocommit=True) as taker:
        blocker.execute(raw("LOCK TABLE app_jobs.jobs IN EXCLUSIVE MODE"))

        def call() -> None:
            try:
                outcome["ids"] = take(taker)
            except psycopg.Error as exc:  # reported below
                outcome["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        try:
            wait_for_lock(db, taker.info.backend_pid)
            o = int(
                value(
                    blocker,
                    "INSERT INTO app_jobs.jobs (task_identifier, run_at, priority)"
                    " VALUES ('o', now() - interval '5 years', %s) RETURNING id",
                    priority,
                )
            )
            blocker.commit()
        finally:
            blocker.rollback()
            thread.join(10)
    assert not thread.is_alive()
    assert outcome.get("ids") == [o, j1], outcome


def test_get_jobs_reads_only_the_entries_it_takes_however_many_are_due_or_future(
    engine: Engine, db: psycopg.Connection[Any]
) -> None:
    """The head and the candidates are one statement now; its generic plan must still read
    jobs_available_idx in order and stop at what it takes (no sort of the priority's due
    entries), and never visit a future job. (Version 1's separate statements pass this
    too; it guards the shape of version 2's.)"""
    db.execute(
        raw(
            "INSERT INTO app_jobs.jobs (task_identifier, run_at)"
            " SELECT 'due', now() - interval '1 hour' + i * interval '1 ms'"
            " FROM generate_series(1, 2000) AS i"
            " UNION ALL SELECT 'later', now() + interval '1 hour' + i * interval '1 ms'"
            " FROM generate_series(1, 2000) AS i"
        )
    )
    db.execute(raw("ANALYZE app_jobs.jobs"))
    before = index_entries_read(engine)
    with db.transaction():
        assert len(take(db, n=3)) == 3
        db.execute("SELECT pg_stat_force_next_flush()")
    read = index_entries_read(engine) - before
    assert read < 20, read


# --- 5. A detached job is never revived by release_jobs ------------------------------------------


@pytest.mark.parametrize("max_attempts", [25, 1, 2**31 - 1])
def test_a_job_detached_from_its_key_does_not_run_again_after_its_worker_releases_it(
    db: psycopg.Connection[Any], max_attempts: int
) -> None:
    """add_job with the key of a running job detaches that job (it finishes, but is not
    retried). Its worker then gives its jobs back (shutting down, or after a reconnect):
    version 1 refunded the attempt, and the detached job ran a second time beside the new
    keyed job."""
    detached = add_job(db, "sync", job_key="user:7", max_attempts=max_attempts)
    assert take(db, WORKER) == [detached]
    keyed = add_job(db, "sync", job_key="user:7", max_attempts=max_attempts)
    assert keyed != detached
    db.execute(raw("SELECT app_jobs.release_jobs(%s)"), [WORKER])
    assert take(db, "worker-2") == [keyed]
    row = db.execute(
        raw("SELECT attempts, max_attempts, locked_by, key, last_error FROM app_jobs.jobs"),
    ).fetchone()
    assert row is not None
    attempts, maximum, locked_by, key, last_error = row
    assert (locked_by, key) == (None, None)
    assert attempts >= maximum  # failed for good: the run that was given back was its last
    assert "detached from key user:7" in last_error
    assert take(db, "worker-3") == []


def test_a_release_racing_the_detach_does_not_revive_the_job(
    engine: Engine, db: psycopg.Connection[Any]
) -> None:
    """The detach is still uncommitted when the worker's release_jobs reaches the row: the
    release waits for the row lock and then works on the row as the detach left it."""
    detached = add_job(db, "sync", job_key="k")
    assert take(db, WORKER) == [detached]
    url = libpq_url(engine.url)
    released = threading.Event()
    with psycopg.connect(url) as enqueuer, psycopg.connect(url, autocommit=True) as worker:
        keyed = int(
            value(enqueuer, "SELECT id FROM app_jobs.add_job(NULL, 'sync', job_key => 'k')")
        )

        def release() -> None:
            worker.execute(raw("SELECT app_jobs.release_jobs(%s)"), [WORKER])
            released.set()

        thread = threading.Thread(target=release)
        thread.start()
        try:
            wait_for_lock(db, worker.info.backend_pid)
            enqueuer.commit()
        finally:
            enqueuer.rollback()
            thread.join(10)
    assert released.is_set()
    assert take(db, "worker-2") == [keyed]
