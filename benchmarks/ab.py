"""The worker of another checkout against this one's, in one run: drain rate, worker CPU per
job and idle latency, alternating the two run by run.

    git worktree add /tmp/before <commit>
    python benchmarks/ab.py --baseline /tmp/before                       # embedded PostgreSQL
    python benchmarks/ab.py --baseline /tmp/before --database-url postgresql://...

For a change to the worker's code (not its SQL): both workers drain the same freshly filled
database (the job schema installed by this checkout; a baseline that needs another schema
version is not comparable this way). Each measurement runs in a child interpreter whose
``PYTHONPATH`` is the checkout's ``src``, using only the API both share (``Worker``,
``TaskRegistry``, ``run``, ``stop``). The report gives medians and each run, and the ratio
this/baseline (above 1 is better for rates, below 1 for CPU and latency).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THIS = HERE.parent


# --- In the child interpreter: only what both checkouts have ---------------------------------


def _drain_process(url: str, ready: Any, go: Any, out: Any) -> None:
    from sqla_pgjobs.worker import TaskRegistry, Worker

    tasks = TaskRegistry()
    tasks.add("noop", lambda payload: None)
    worker = Worker(url, tasks)
    ready.set()
    go.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    stats = worker.run(drain=True, install_signal_handlers=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.put((stats.processed, cpu))


def child_drain(url: str, processes: int) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")  # children inherit this interpreter's path
    out = spawn.Queue()
    readies = [spawn.Event() for _ in range(processes)]
    go = spawn.Event()
    children = [spawn.Process(target=_drain_process, args=(url, r, go, out)) for r in readies]
    for child in children:
        child.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("a worker process did not start within 60 s")
    started = time.perf_counter()
    go.set()
    reports = [out.get(timeout=600) for _ in children]
    elapsed = time.perf_counter() - started
    for child in children:
        child.join()
    jobs = sum(count for count, _ in reports)
    cpu = sum(seconds for _, seconds in reports)
    return {"jobs_per_second": jobs / elapsed, "cpu_us_per_job": cpu / jobs * 1e6, "jobs": jobs}


def child_latency(url: str, samples: int) -> dict[str, float]:
    import psycopg

    from sqla_pgjobs.schema import render
    from sqla_pgjobs.worker import TaskRegistry, Worker

    tasks = TaskRegistry()
    started = threading.Event()
    tasks.add("ping", lambda payload: started.set())
    worker = Worker(url, tasks)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    time.sleep(0.5)
    timings = []
    statement = render("SELECT * FROM app_jobs.add_job(NULL, 'ping')")
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            for i in range(samples + 20):
                started.clear()
                begin = time.perf_counter()
                connection.execute(statement)
                if not started.wait(10):
                    raise RuntimeError("a job did not start within 10 s")
                if i >= 20:
                    timings.append((time.perf_counter() - begin) * 1000)
                time.sleep(0.002)
    finally:
        worker.stop()
        thread.join()
    timings.sort()
    return {
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[max(0, int(len(timings) * 0.99) - 1)],
    }


# --- In the parent: this checkout ---------------------------------------------------------------


def measure(tree: Path, mode: str, url: str, count: int) -> dict[str, float]:
    """One measurement by the worker of checkout ``tree``, in a child interpreter."""
    environment = {**os.environ, "PYTHONPATH": str(tree / "src")}
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--count", str(count)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tree,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{tree} {mode} failed:\n{result.stdout}\n{result.stderr}")
    report: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="the other checkout (its src/ is used)")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, alternating")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per drain")
    parser.add_argument("--samples", type=int, default=500, help="latency samples per run")
    parser.add_argument("--child", choices=["drain-1", "drain-2", "latency"])
    parser.add_argument("--url")
    parser.add_argument("--count", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.child:
        if arguments.child == "latency":
            report = child_latency(arguments.url, arguments.count)
        else:
            report = child_drain(arguments.url, int(arguments.child[-1]))
        print(json.dumps(report))
        return
    if arguments.baseline is None:
        parser.error("--baseline is required")
    compare(arguments)


def compare(arguments: argparse.Namespace) -> None:
    import sqlalchemy

    sys.path.insert(0, str(HERE))
    from run import fill, fresh_database  # benchmarks/run.py: the same filling

    from sqla_pgjobs.database import libpq_url
    from sqla_pgjobs.testing import postgres_server

    trees = {"baseline": arguments.baseline.resolve(), "this": THIS}
    server_context = (
        contextlib.nullcontext(sqlalchemy.make_url(arguments.database_url))
        if arguments.database_url
        else postgres_server()
    )
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with server_context as server:
        for mode in ("drain-1", "drain-2", "latency"):
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this": []}
            for run in range(arguments.runs):
                # Alternate which goes first, so that a slow spell hits both.
                order = ["baseline", "this"] if run % 2 == 0 else ["this", "baseline"]
                for name in order:
                    with fresh_database(server) as url:
                        if mode == "latency":
                            count = arguments.samples
                        else:
                            count = arguments.jobs
                            fill(url, count)
                        runs[name].append(measure(trees[name], mode, libpq_url(url), count))
                print(f"{mode} run {run + 1}: {runs['baseline'][-1]} | {runs['this'][-1]}")
            results[mode] = runs
    print(f"\nbaseline {trees['baseline']} | this {trees['this']}")
    print(f"{'':<30}{'baseline':>12}{'this':>12}{'this/baseline':>15}")
    for mode, runs in results.items():
        for key in runs["baseline"][0]:
            if key == "jobs":
                continue
            before = statistics.median(r[key] for r in runs["baseline"])
            after = statistics.median(r[key] for r in runs["this"])
            print(f"{mode + ' ' + key:<30}{before:>12.2f}{after:>12.2f}{after / before:>15.3f}")


if __name__ == "__main__":
    main()
