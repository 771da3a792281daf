"""Server time of the dashboard's pages on a large database (issue 20's target: at most
100 ms each with 1,000,000 pending jobs and 1,000,000 history rows).

    python benchmarks/dashboard.py                       # an embedded PostgreSQL (pgserver)
    python benchmarks/dashboard.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/dashboard.py --quick               # a smoke run with tiny counts

One fresh database is filled once: ``--jobs`` pending jobs (7 tasks in 3 queues, a tenth
delayed, payloads ``{"account_id": i % 10000, ...}``, a few running) and ``--history``
history rows finished over the last 30 days in id order (5% failed), then vacuumed and
analyzed as autovacuum would. Each page is requested through Starlette's TestClient in
this process (the request, the queries and the rendering: what the server spends), 3
times to warm up and then ``--requests`` times; the table shows the median and the worst.
Then the optional indexes (``sql/indexes.sql``: ``failed``, then ``payload``) are built
concurrently, each timed, and every page is measured again; the cost of each index to
enqueueing is measured as autocommit ``add_job`` calls per second with none, with
``failed`` and with both, in this run.
See ``benchmarks/README.md`` ("Dashboard") for the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import psycopg
import sqlalchemy

# The sibling module (this directory is on sys.path when this file runs as a script).
from run import fresh_database
from sqlalchemy import create_engine
from starlette.testclient import TestClient

from sqla_pgjobs.dashboard import create_app
from sqla_pgjobs.database import libpq_url
from sqla_pgjobs.schema import create_indexes, drop_indexes, render
from sqla_pgjobs.testing import postgres_server

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

TARGET_MS = 100.0
ACCOUNT_42 = "%7B%22account_id%22%3A42%7D"  # {"account_id":42}, URL-encoded


def fill(url: URL, jobs: int, history: int) -> int:
    """The workload of the module doc; returns the id of a job with a history row."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        # Without the row triggers: each job of a queue would update that queue's row of
        # job_queues, and a million updates of 3 rows in one transaction take many minutes
        # (each walks the row's chain of versions the transaction made). The queue counts
        # are written once afterwards, as the triggers would have kept them.
        connection.execute("SET session_replication_role = replica")
        connection.execute(
            render(
                "INSERT INTO app_jobs.jobs (task_identifier, queue_name, payload, run_at)"
                " SELECT 'task_' || (i %% 7), (ARRAY['mail', 'billing', 'reports'])[i %% 3 + 1],"
                " json_build_object('account_id', i %% 10000, 'n', i),"
                " now() + CASE WHEN i %% 10 = 0 THEN interval '1 hour' ELSE interval '0' END"
                " FROM generate_series(1, %s) i"
            ),
            [jobs],
        )
        connection.execute(
            render(
                "UPDATE app_jobs.jobs SET locked_at = now(), locked_by = 'bench-worker', "
                "attempts = 1 WHERE id <= 20"
            )
        )
        # Finished over the last 30 days, in id order, as workers write them.
        connection.execute(
            render(
                "INSERT INTO app_jobs.job_history (job_id, task_identifier, queue_name, payload,"
                " priority, attempts, max_attempts, created_at, run_at, first_started_at,"
                " started_at, finished_at, outcome, last_error, worker_id)"
                " SELECT %s + g, 'task_' || (g %% 7), 'mail', json_build_object('n', g), 0, 1,"
                " 25, t, t, t, t, t, CASE WHEN g %% 20 = 0 THEN 'failed' ELSE 'completed' END,"
                " CASE WHEN g %% 20 = 0 THEN 'RuntimeError: boom' END, 'bench-worker'"
                " FROM generate_series(1, %s) g,"
                " LATERAL (SELECT now() - (%s - g) * (interval '30 days' / %s) AS t) times"
            ),
            [jobs, history, history, history],
        )
        connection.execute(
            render(
                "INSERT INTO app_jobs.job_queues (queue_name, job_count)"
                " SELECT queue_name, count(*) FROM app_jobs.jobs"
                " WHERE queue_name IS NOT NULL GROUP BY queue_name"
            )
        )
        connection.execute("SET session_replication_role = DEFAULT")
        connection.execute("VACUUM ANALYZE")
        return jobs + history


def enqueue_rate(url: URL, calls: int) -> float:
    """Autocommit ``add_job`` calls per second, each a payload like the table's. A GIN
    index defers most of an insert's work to its pending list, so the time includes
    flushing that list into the index (``gin_clean_pending_list``) once the calls are done:
    the whole cost of the index, not the part each insert pays at once."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        statement = render(
            "SELECT id FROM app_jobs.add_job(NULL, 'task_1', %s::json, 'mail', NULL, NULL,"
            " NULL, NULL)"
        )
        started = time.perf_counter()
        for n in range(calls):
            connection.execute(statement, [json.dumps({"account_id": n % 10000, "n": n})])
        connection.execute(
            render(
                "SELECT gin_clean_pending_list(c.oid) FROM pg_class c"
                " WHERE c.oid = to_regclass('app_jobs.jobs_payload_idx')"
            )
        )
        return calls / (time.perf_counter() - started)


def build_index(engine: sqlalchemy.Engine, name: str) -> float:
    """Seconds to build the optional index ``name`` concurrently, then analyze the table
    (the planner's statistics of an expression index come from ANALYZE)."""
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        create_indexes(connection, [name])
        seconds = time.perf_counter() - started
        connection.exec_driver_sql(render("ANALYZE app_jobs.jobs"))
    return seconds


def measure(client: TestClient, path: str, requests: int) -> list[float]:
    timings = []
    for number in range(requests + 3):
        started = time.perf_counter()
        response = client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, (path, response.status_code, response.text[-400:])
        if number >= 3:
            timings.append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=15)
    arguments = parser.parse_args()
    jobs, history, requests = arguments.jobs, arguments.history, arguments.requests
    if arguments.quick:
        jobs, history, requests = 2_000, 2_000, 3

    server_context = (
        contextlib.nullcontext(sqlalchemy.make_url(arguments.database_url))
        if arguments.database_url
        else postgres_server()
    )
    with server_context as server, fresh_database(server) as url:
        started = time.perf_counter()
        job_id = fill(url, jobs, history)
        print(
            f"filled {jobs:,} jobs and {history:,} history rows"
            f" in {time.perf_counter() - started:.0f} s"
        )
        engine = create_engine(url, pool_size=2)
        pages = {
            "overview": "/",
            "jobs, no filter": "/jobs",
            "jobs, next page (keyset)": f"/jobs?before={jobs // 2}",
            "jobs, task and state": "/jobs?task=task_3&state=due",
            "jobs, queue and created since": "/jobs?queue=billing&since=2000-01-01T00:00",
            "jobs, running (20 of them)": "/jobs?state=running",
            "jobs, failed (none)": "/jobs?state=failed",
            "jobs, delayed": "/jobs?state=delayed",
            "jobs, key (none has one)": "/jobs?key=order:42",
            "jobs, tenant (none has one)": "/jobs?tenant=5f0c6b1e-1d7a-4a53-9b8e-3f1f5b0f6e21",
            "jobs, payload contains (1 in 10,000 jobs)": f"/jobs?payload={ACCOUNT_42}",
            "jobs, payload contains and task (1 in 10,000)": (
                f"/jobs?task=task_0&payload={ACCOUNT_42}"
            ),
            "jobs, payload contains {} (every job)": "/jobs?payload=%7B%7D",
            "history, no filter": "/history",
            "history, failed": "/history?outcome=failed",
            "job page (finished, with history)": f"/jobs/{job_id}",
            "job page (pending)": f"/jobs/{jobs // 2}",
            "queues": "/queues",
            "workers": "/workers",
        }
        app = create_app(engine, statement_timeout=timedelta(seconds=30))
        enqueue_calls = 300 if arguments.quick else 5_000
        passes: dict[str, dict[str, dict[str, float]]] = {}
        builds: dict[str, float] = {}
        with TestClient(app) as client:
            passes["without the optional indexes"] = measure_pages(client, pages, requests)
            builds["failed"] = build_index(engine, "failed")
            builds["payload"] = build_index(engine, "payload")
            passes["with failed and payload"] = measure_pages(client, pages, requests)
        # Enqueueing with none, with failed, with both: in rounds, so that the machine's
        # drift shows as a spread instead of passing for an index's cost.
        rates: dict[str, list[float]] = {"none": [], "failed": [], "failed and payload": []}
        for _ in range(3):
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                drop_indexes(connection, ["failed", "payload"])
            rates["none"].append(enqueue_rate(url, enqueue_calls))
            build_index(engine, "failed")
            rates["failed"].append(enqueue_rate(url, enqueue_calls))
            build_index(engine, "payload")
            rates["failed and payload"].append(enqueue_rate(url, enqueue_calls))
        engine.dispose()
    print()
    names = list(passes)
    print(
        f"| page ({jobs:,} jobs, {history:,} history rows) | "
        + " | ".join(f"{name}: median (worst) ms" for name in names)
        + " | target |"
    )
    print("|---|" + "---:|" * len(names) + "---|")
    for page in pages:
        cells = [passes[name][page] for name in names]
        met = "met" if cells[-1]["median_ms"] <= TARGET_MS else "**not met**"
        print(
            f"| {page} | "
            + " | ".join(f"{cell['median_ms']:,} ({cell['max_ms']:,})" for cell in cells)
            + f" | <= {TARGET_MS:g} ms: {met} |"
        )
    print()
    for name, seconds in builds.items():
        print(f"built {name} concurrently in {seconds:.1f} s")
    for name, rounds in rates.items():
        ratios = sorted(rate / base for rate, base in zip(rounds, rates["none"], strict=True))
        print(
            f"add_job, autocommit, optional indexes {name}: median"
            f" {statistics.median(rounds):,.0f}/s, ratio to none {statistics.median(ratios):.2f}"
            f" (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
        )
    print()
    print(json.dumps({"pages": passes, "builds_s": builds, "add_job_per_s": rates}))


def measure_pages(
    client: TestClient, pages: dict[str, str], requests: int
) -> dict[str, dict[str, float]]:
    results = {}
    for name, path in pages.items():
        timings = measure(client, path, requests)
        results[name] = {
            "median_ms": round(statistics.median(timings), 1),
            "max_ms": round(max(timings), 1),
        }
    return results


if __name__ == "__main__":
    main()
