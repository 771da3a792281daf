"""Benchmarks of sqla-pgjobs against the seed's way of using the same SQL, in one run.

    python benchmarks/run.py                         # an embedded PostgreSQL (pgserver)
    python benchmarks/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Each workload runs in a fresh database with the job schema installed, three times; the
medians are reported, and each figure as a ratio to its baseline measured in the same run:
our own SQL driven the way the seed's Node worker drives it (one ``get_job`` and one
``complete_job`` round trip per job; one ``add_job`` per transaction). Results print as a
table and are saved as JSON under ``benchmarks/results/``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import sqla_pgjobs
from sqla_pgjobs import JobSpec, add_job, add_jobs
from sqla_pgjobs.schema import install, render
from sqla_pgjobs.testing import (
    create_database,
    drop_database,
    postgres_server,
    unique_database_name,
)
from sqla_pgjobs.worker import TaskRegistry, Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL

RUNS = 3


@contextlib.contextmanager
def fresh_database(server: URL) -> Iterator[URL]:
    name = unique_database_name("pgjobs_bench")
    url = create_database(server, name)
    engine = create_engine(url)
    with engine.begin() as connection:
        install(connection)
    engine.dispose()
    try:
        yield url
    finally:
        drop_database(server, name)


def libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def fill(url: URL, count: int) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(add_jobs(JobSpec("noop") for _ in range(min(10_000, count - start))))
    engine.dispose()
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


# --- Workloads: each returns jobs per second -------------------------------------------------


def seed_enqueue_one_per_transaction(url: URL, count: int) -> float:
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        started = time.perf_counter()
        for i in range(count):
            connection.execute(
                render("SELECT * FROM app_jobs.add_job(NULL, 'noop', %s::json)"), [f'{{"i": {i}}}']
            )
        return count / (time.perf_counter() - started)


def session_enqueue_one_per_transaction(url: URL, count: int) -> float:
    engine = create_engine(url)
    started = time.perf_counter()
    for i in range(count):
        with Session(engine) as session, session.begin():
            session.execute(add_job("noop", {"i": i}))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def seed_enqueue_bulk(url: URL, count: int) -> float:
    """The seed has no bulk call: add_job for every job in one transaction (pipelined)."""
    with psycopg.connect(libpq(url)) as connection:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.executemany(
                render("SELECT * FROM app_jobs.add_job(NULL, 'noop', %s::json)"),
                [[f'{{"i": {i}}}'] for i in range(count)],
            )
        connection.commit()
        return count / (time.perf_counter() - started)


def bulk_enqueue(url: URL, count: int) -> float:
    engine = create_engine(url)
    specs = [JobSpec("noop", {"i": i}) for i in range(count)]
    started = time.perf_counter()
    with engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(add_jobs(specs[start : start + 10_000]))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def seed_drain(url: URL, count: int) -> float:
    fill(url, count)
    get = render("SELECT id FROM app_jobs.get_job(%s, %s::text[])")
    complete = render("SELECT id FROM app_jobs.complete_job(%s, %s)")
    done = 0
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        started = time.perf_counter()
        while True:
            row = connection.execute(get, ["seed-worker", ["noop"]]).fetchone()
            if row is None or row[0] is None:
                break
            connection.execute(complete, ["seed-worker", row[0]])
            done += 1
        return done / (time.perf_counter() - started)


def worker_drain(url: URL, count: int, concurrency: int = 10) -> float:
    fill(url, count)
    tasks = TaskRegistry()
    tasks.add("noop", lambda payload: None)
    started = time.perf_counter()
    stats = Worker(url, tasks, concurrency=concurrency).run(
        drain=True, install_signal_handlers=False
    )
    return stats.processed / (time.perf_counter() - started)


def latency(url: URL, samples: int, poll_interval: float) -> dict[str, float]:
    """Idle worker; sequential enqueue -> handler start, in milliseconds."""
    tasks = TaskRegistry()
    started = threading.Event()
    tasks.add("ping", lambda payload: started.set())
    worker = Worker(url, tasks, concurrency=1, poll_interval=poll_interval)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    time.sleep(0.5)
    timings = []
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        statement = render("SELECT * FROM app_jobs.add_job(NULL, 'ping')")
        for i in range(samples + 20):
            started.clear()
            begin = time.perf_counter()
            connection.execute(statement)
            if not started.wait(10):
                raise RuntimeError("a job did not start within 10 s")
            if i >= 20:  # warm-up
                timings.append((time.perf_counter() - begin) * 1000)
            time.sleep(0.002)
    worker.stop()
    thread.join()
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 3),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 3),
        "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 3),
    }


def median_of_runs(server: URL, workload: Callable[[URL], float]) -> tuple[float, list[float]]:
    values = []
    for _ in range(RUNS):
        with fresh_database(server) as url:
            values.append(workload(url))
    return statistics.median(values), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain workload")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    arguments = parser.parse_args()
    scale = 0.02 if arguments.quick else 1.0
    drain_jobs = max(200, int(arguments.jobs * scale))
    one_by_one = max(100, int(2_000 * scale))
    bulk = max(1_000, int(50_000 * scale))

    server_context = (
        contextlib.nullcontext(sqlalchemy.make_url(arguments.database_url))
        if arguments.database_url
        else postgres_server()
    )
    results: dict[str, Any] = {}
    with server_context as server:
        with create_engine(server).connect() as connection:
            server_version = connection.exec_driver_sql("SHOW server_version").scalar()
            fsync = connection.exec_driver_sql("SHOW fsync").scalar()
            synchronous_commit = connection.exec_driver_sql("SHOW synchronous_commit").scalar()
        rows = [
            (
                "enqueue, 1 per transaction (jobs/s)",
                lambda u: seed_enqueue_one_per_transaction(u, one_by_one),
                lambda u: session_enqueue_one_per_transaction(u, one_by_one),
            ),
            (
                "enqueue, bulk (jobs/s)",
                lambda u: seed_enqueue_bulk(u, bulk),
                lambda u: bulk_enqueue(u, bulk),
            ),
            (
                "drain, 1 process (jobs/s)",
                lambda u: seed_drain(u, drain_jobs),
                lambda u: worker_drain(u, drain_jobs),
            ),
        ]
        for label, baseline, ours in rows:
            base, base_runs = median_of_runs(server, baseline)
            mine, mine_runs = median_of_runs(server, ours)
            results[label] = {
                "baseline": round(base),
                "ours": round(mine),
                "ratio": round(mine / base, 2),
                "baseline_runs": [round(v) for v in base_runs],
                "ours_runs": [round(v) for v in mine_runs],
            }
        with fresh_database(server) as url:
            results["latency, idle worker (listen)"] = latency(
                url, 200 if not arguments.quick else 20, 10.0
            )

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "postgresql": server_version,
        "fsync": fsync,
        "synchronous_commit": synchronous_commit,
        "python": platform.python_version(),
        "sqla_pgjobs": sqla_pgjobs.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "runs": RUNS,
        "jobs": {"drain": drain_jobs, "one_by_one": one_by_one, "bulk": bulk},
        "results": results,
    }
    print(f"PostgreSQL {server_version}, fsync {fsync}, {RUNS} runs, medians")
    print(f"{'workload':<40}{'seed-style':>12}{'sqla-pgjobs':>13}{'ratio':>8}")
    for label, value in results.items():
        if "ratio" in value:
            print(f"{label:<40}{value['baseline']:>12}{value['ours']:>13}{value['ratio']:>8}")
        else:
            print(f"{label:<40}" + "  ".join(f"{k} {v}" for k, v in value.items()))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
