"""Limits: the payload size limit and its error, and a million queued jobs.

The payload limit (:data:`sqla_pgjobs.validation.MAX_PAYLOAD_BYTES`, 16 MiB of UTF-8 JSON
text) is checked by the Python wrappers before anything reaches the database; a payload at
the limit goes through a real worker unchanged.

A million jobs: enqueueing and draining on a table that holds 1,000,000 runnable jobs stay
within twice their speed on a small table (the same operations, timed in the same test).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.rows import dict_row
from sqlalchemy import create_engine

import sqla_pgjobs as pgjobs
from sqla_pgjobs import InvalidArgumentError, JobSpec
from sqla_pgjobs.schema import named_statements
from sqla_pgjobs.validation import MAX_PAYLOAD_BYTES
from sqla_pgjobs.worker import TaskRegistry, Worker
from tests.helpers import SCHEMA, libpq_url, sql, translated

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import URL, Engine


def job_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sql("SELECT count(*) FROM app_jobs.jobs")).scalar_one())


def payload_of_size(size: int, character: str = "x") -> dict[str, str]:
    """A payload whose JSON text (as the wrappers send it) is exactly ``size`` bytes, made of
    ``character`` (padded with ASCII where its UTF-8 width does not divide the size)."""
    room = size - len(b'{"data":""}')
    width = len(character.encode())
    payload = {"data": character * (room // width) + "x" * (room % width)}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    assert len(text.encode()) == size
    return payload


# --- Payload size -------------------------------------------------------------------------


def test_a_payload_over_the_limit_is_refused_with_its_size_and_nothing_is_written(
    jobs_engine: Engine,
) -> None:
    """Proves: add_job, add_jobs and add_scheduled_job refuse a payload one byte over the
    limit with InvalidArgumentError naming the argument, the size and the limit (and not
    echoing the payload); the limit counts UTF-8 bytes, not characters; nothing is written."""
    too_big = payload_of_size(MAX_PAYLOAD_BYTES + 1)
    # 2-byte characters: fewer characters than the limit, more bytes.
    too_big_in_bytes = payload_of_size(MAX_PAYLOAD_BYTES + 1, "é")
    assert len(json.dumps(too_big_in_bytes, ensure_ascii=False)) < MAX_PAYLOAD_BYTES
    attempts: list[tuple[str, Callable[[], Any]]] = [
        ("payload", lambda: pgjobs.add_job("t", too_big)),
        ("payload", lambda: pgjobs.add_job("t", too_big_in_bytes)),
        ("jobs[1].payload", lambda: pgjobs.add_jobs([JobSpec("t"), JobSpec("t", too_big)])),
        ("payload", lambda: pgjobs.add_scheduled_job("t", too_big, "* * * * *")),
    ]
    for argument, attempt in attempts:
        with pytest.raises(InvalidArgumentError) as raised:
            attempt()
        error = raised.value
        assert error.argument == argument
        assert str(error) == (
            f"{argument} is not allowed: its JSON text is {MAX_PAYLOAD_BYTES + 1} bytes; "
            f"at most {MAX_PAYLOAD_BYTES} (16 MiB) are allowed"
        )
    assert job_count(jobs_engine) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_payloads_at_the_limit_go_through_a_worker_unchanged(
    jobs_engine: Engine, database_url: URL
) -> None:
    """Proves: payloads of exactly MAX_PAYLOAD_BYTES (one by add_job, two in one add_jobs
    call, ASCII and multi-byte) are stored and handed to the handler byte for byte."""
    payloads = [
        payload_of_size(MAX_PAYLOAD_BYTES),
        payload_of_size(MAX_PAYLOAD_BYTES, "é"),
        payload_of_size(MAX_PAYLOAD_BYTES, "€"),
    ]

    def digest(payload: Any) -> str:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    expected = sorted(digest(p) for p in payloads)
    with jobs_engine.begin() as connection:
        connection.execute(pgjobs.add_job("big", payloads[0]))
        connection.execute(pgjobs.add_jobs([JobSpec("big", p) for p in payloads[1:]]))

    tasks = TaskRegistry()
    seen: list[str] = []
    lock = threading.Lock()

    @tasks.task("big")
    def big(payload: Any) -> None:
        with lock:
            seen.append(digest(payload))

    worker = Worker(database_url, tasks, schema=SCHEMA, concurrency=2, poll_interval=0.5)
    stats = worker.run(drain=True, install_signal_handlers=False)
    assert stats.completed == len(payloads)
    assert sorted(seen) == expected
    assert job_count(jobs_engine) == 0


# --- A million queued jobs ------------------------------------------------------------------

BULK_INSERT = """
INSERT INTO app_jobs.jobs (task_identifier, payload)
SELECT 'queued', pg_catalog.json_build_object('n', n) FROM generate_series(1, :count) n
"""


def enqueue_seconds(url: URL, jobs_per_round: int) -> float:
    """Seconds per job to add ``jobs_per_round`` jobs, one add_job transaction each."""
    engine = translated(create_engine(url))
    try:
        begun = time.perf_counter()
        for i in range(jobs_per_round):
            with engine.begin() as connection:
                connection.execute(pgjobs.add_job("measured", {"i": i}))
        return (time.perf_counter() - begun) / jobs_per_round
    finally:
        engine.dispose()


def bulk_enqueue_seconds(url: URL, jobs_per_call: int) -> float:
    """Seconds per job for one add_jobs call of ``jobs_per_call`` jobs."""
    engine = translated(create_engine(url))
    try:
        specs = [JobSpec("measured", {"i": i}) for i in range(jobs_per_call)]
        begun = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(pgjobs.add_jobs(specs)).all()
        return (time.perf_counter() - begun) / jobs_per_call
    finally:
        engine.dispose()


def drain_seconds(url: URL, cycles: int, batch: int = 10) -> float:
    """Seconds per job to take and complete jobs the way the worker does: its own ``cycle``
    statement (app_jobs.worker_cycle: complete the last batch, take the next), one per
    round trip, over ``cycles`` cycles of ``batch`` jobs."""
    cycle_statement = named_statements("worker.sql", SCHEMA)["cycle"]
    cycle = {
        "worker_id": "drain-measure",
        "failed_ids": None,
        "error_messages": None,
        "task_identifiers": None,
        "job_expiry": None,
        "max_jobs": batch,
    }
    taken = 0
    with psycopg.connect(libpq_url(url), autocommit=True, row_factory=dict_row) as connection:
        held: list[int] = []
        begun = time.perf_counter()
        for _ in range(cycles):
            rows = connection.execute(cycle_statement, {**cycle, "completed_ids": held})
            # No job taken: one row whose job columns are NULL.
            held = [row["id"] for row in rows.fetchall() if row["id"] is not None]
            taken += len(held)
        connection.execute(cycle_statement, {**cycle, "completed_ids": held, "max_jobs": 0})
        took = time.perf_counter() - begun
    assert taken == cycles * batch, "ran out of jobs"
    return took / taken


def fill(url: URL, count: int) -> float:
    """Bulk-insert ``count`` runnable jobs, VACUUM ANALYZE (as autovacuum would) and
    CHECKPOINT (a checkpoint running during the measurements would slow every commit,
    whatever the table's size); the seconds it took."""
    engine = create_engine(url)
    try:
        begun = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(sql(BULK_INSERT), {"count": count})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sql("VACUUM ANALYZE app_jobs.jobs"))
            connection.execute(sql("CHECKPOINT"))
        return time.perf_counter() - begun
    finally:
        engine.dispose()


def queued(url: URL) -> int:
    """Jobs in the table that no one holds."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            count = connection.execute(
                sql("SELECT count(*) FROM app_jobs.jobs WHERE locked_at IS NULL")
            ).scalar_one()
            return int(count)
    finally:
        engine.dispose()


MEASUREMENTS: dict[str, Callable[[URL], float]] = {
    "add_job": lambda url: enqueue_seconds(url, 200),
    "add_jobs": lambda url: bulk_enqueue_seconds(url, 1000),
    "drain": lambda url: drain_seconds(url, cycles=100),
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_with_a_million_jobs_queued_enqueue_and_drain_stay_within_twice_a_small_table(
    database_url: URL, new_database: Callable[..., URL], template_database: str
) -> None:
    """Two databases, one with 10,000 queued jobs and one with 1,000,000 (bulk INSERT ...
    SELECT, then VACUUM ANALYZE as autovacuum would), measured in turns, five rounds:
    add_job one per transaction, add_jobs of 1,000, and take-and-complete through the
    worker's own cycle statement (batches of 10). Proves: on the big table each stays within 2x
    of its small-table speed. Each figure is the best of its rounds, and the rounds
    alternate between the tables, so that other work on a shared machine does not decide
    the ratio."""
    small_url, big_url = database_url, new_database(template_database)
    fill(small_url, 10_000)
    fill_took = fill(big_url, 1_000_000)
    assert queued(small_url) == 10_000
    assert queued(big_url) == 1_000_000

    best: dict[tuple[str, str], float] = {}
    for _ in range(5):
        for table, url in (("small", small_url), ("big", big_url)):
            for name, measure in MEASUREMENTS.items():
                seconds = measure(url)
                best[table, name] = min(best.get((table, name), seconds), seconds)

    ratios = {name: best["big", name] / best["small", name] for name in MEASUREMENTS}
    print(
        f"\n1,000,000 jobs bulk-inserted in {fill_took:.0f} s; best seconds per job, "
        "10,000-job -> 1,000,000-job table: "
        + "; ".join(
            f"{name} {best['small', name] * 1e3:.3f} ms -> {best['big', name] * 1e3:.3f} ms "
            f"(x{ratios[name]:.2f})"
            for name in MEASUREMENTS
        )
    )
    for name, ratio in ratios.items():
        assert ratio <= 2, (name, best)
    # The big table was big throughout: the rounds took 5 x 1,100 of its jobs and added
    # 5 x 1,200.
    assert queued(big_url) >= 1_000_000
