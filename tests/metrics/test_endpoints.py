"""The /metrics endpoints scraped over HTTP on 127.0.0.1 after a known workload: ``pgjobs
metrics`` (the database's state) and a worker's own (in process, and ``pgjobs worker
--metrics-port``); the JSON log lines of job outcomes; bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sqla_pgjobs import JobSpec, add_jobs
from sqla_pgjobs.metrics.prometheus import WorkerMetrics, serve
from sqla_pgjobs.worker import Worker
from tests.helpers import REPO, SCHEMA, libpq_url, wait_for
from tests.metrics.tasks import tasks
from tests.metrics.workload import execute, known_workload

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL, Engine

PGJOBS = str(Path(sys.executable).with_name("pgjobs"))
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Command:
    """A long-running ``pgjobs`` command, its stderr read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
        self.process = subprocess.Popen(
            [PGJOBS, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def entries(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (every line must be one)."""
        return [json.loads(line) for line in list(self.lines)]

    def port(self) -> int:
        """The port it serves metrics on, from its "serving metrics" log line."""
        wait_for(
            lambda: any("serving metrics" in line for line in self.lines) or self.exited(),
            describe=lambda: "".join(self.lines),
        )
        [entry] = [e for e in self.entries() if e["message"].startswith("serving metrics")]
        assert entry["host"] == "127.0.0.1"
        return int(entry["port"])

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if not self.exited():
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        if not command.exited():
            command.process.kill()
        command.stop()


def test_pgjobs_metrics_serves_the_database_state(
    database_url: URL, jobs_engine: Engine, commands: list[Command]
) -> None:
    known_workload(jobs_engine)
    url = libpq_url(database_url)
    command = Command("metrics", "--database-url", url, "--schema", SCHEMA, "--port", "0",
                      "--log-format", "json")  # fmt: skip
    commands.append(command)
    samples = scrape(command.port())
    assert value(samples, "pgjobs_database_up") == 1
    assert value(samples, "pgjobs_jobs_estimated") == 0
    expected = {
        ("mail", "a", "due"): 7,
        ("mail", "b", "due"): 3,
        ("report", "", "due"): 3,  # one of the four is running
        ("report", "", "running"): 1,
        ("report", "b", "delayed"): 5,
        ("mail", "a", "failed"): 2,
    }
    jobs = {
        (dict(labels)["task"], dict(labels)["queue"], dict(labels)["state"]): v
        for (name, labels), v in samples.items()
        if name == "pgjobs_jobs"
    }
    assert jobs == expected
    by_state = {"due": 13, "delayed": 5, "running": 1, "failed": 2}
    for state, count in by_state.items():
        assert value(samples, "pgjobs_jobs_by_state", state=state) == count
    assert value(samples, "pgjobs_oldest_due_job_age_seconds") is not None
    assert value(samples, "pgjobs_workers_alive") == 0
    assert value(samples, "pgjobs_workers_registered") == 0
    assert value(samples, "pgjobs_schedules") == 0
    assert value(samples, "pgjobs_schedule_lag_seconds") == 0
    duration = value(samples, "pgjobs_collector_duration_seconds")
    assert duration is not None and 0 < duration < 5
    # Each scrape reads the database afresh.
    execute(jobs_engine, add_jobs(JobSpec("mail", queue_name="a") for _ in range(4)))
    assert value(scrape(command.port()), "pgjobs_jobs", task="mail", queue="a", state="due") == 11
    assert command.stop() == 0
    assert command.entries()[-1]["message"] == "metrics server stopped"


def test_pgjobs_metrics_reports_a_wrong_database_at_once(
    empty_database_url: URL, commands: list[Command]
) -> None:
    command = Command("metrics", "--database-url", libpq_url(empty_database_url), "--port", "0")
    commands.append(command)
    assert command.process.wait(timeout=60) == 1
    assert command.stop() == 1
    assert "Is the job schema installed" in "".join(command.lines)


def enqueue_outcomes(engine: Engine, *, completed: int, retried: int, failed: int) -> None:
    """``completed`` jobs that complete (queue a), ``retried`` that fail and will run again
    (queue b), ``failed`` that fail for good (no queue)."""
    execute(
        engine,
        add_jobs(JobSpec("ok", queue_name="a") for _ in range(completed)),
        add_jobs(JobSpec("boom", queue_name="b", max_attempts=2) for _ in range(retried)),
        add_jobs(JobSpec("boom", max_attempts=1) for _ in range(failed)),
    )


def check_worker_samples(samples: Samples, *, completed: int, retried: int, failed: int) -> None:
    ok, b, none = (
        {"task": "ok", "queue": "a"},
        {"task": "boom", "queue": "b"},
        {"task": "boom", "queue": ""},
    )
    assert value(samples, "pgjobs_jobs_started_total", **ok) == completed
    assert value(samples, "pgjobs_jobs_completed_total", **ok) == completed
    assert value(samples, "pgjobs_jobs_failed_total", **ok) == 0
    assert value(samples, "pgjobs_jobs_failed_total", **b) == retried
    assert value(samples, "pgjobs_jobs_retried_total", **b) == retried
    assert value(samples, "pgjobs_jobs_failed_total", **none) == failed
    assert value(samples, "pgjobs_jobs_retried_total", **none) == 0
    assert value(samples, "pgjobs_jobs_cancelled_total", **none) == 0
    for labels, runs in ((ok, completed), (b, retried), (none, failed)):
        assert value(samples, "pgjobs_job_duration_seconds_count", **labels) == runs
        assert value(samples, "pgjobs_job_queue_wait_seconds_count", **labels) == runs
        assert value(samples, "pgjobs_job_duration_seconds_bucket", **labels, le="+Inf") == runs
    total = completed + retried + failed
    assert value(samples, "pgjobs_worker_jobs_taken_total") == total
    cycles = value(samples, "pgjobs_worker_cycle_duration_seconds_count")
    assert cycles is not None and cycles >= 1
    assert value(samples, "pgjobs_worker_prefetched_jobs") is not None


def test_a_worker_serves_its_own_metrics(database_url: URL, jobs_engine: Engine) -> None:
    enqueue_outcomes(jobs_engine, completed=12, retried=3, failed=2)
    metrics = WorkerMetrics(worker_id="metrics-worker")
    server = serve(metrics.registry, port=0)
    try:
        worker = Worker(
            database_url, tasks, schema=SCHEMA, worker_id="metrics-worker", observer=metrics
        )
        stats = worker.run(drain=True, install_signal_handlers=False)
        assert stats.processed == 17
        samples = scrape(server.port)
    finally:
        server.close()
    check_worker_samples(samples, completed=12, retried=3, failed=2)
    assert value(samples, "pgjobs_worker_info", worker_id="metrics-worker") == 1
    assert value(samples, "process_cpu_seconds_total") is not None


def test_pgjobs_worker_metrics_port_and_json_job_lines(
    database_url: URL, jobs_engine: Engine, commands: list[Command]
) -> None:
    enqueue_outcomes(jobs_engine, completed=10, retried=2, failed=1)
    url = libpq_url(database_url)
    command = Command("worker", "tests.metrics.tasks:tasks", "--database-url", url,
                      "--schema", SCHEMA, "--worker-id", "json-worker", "--metrics-port", "0",
                      "--log-format", "json", "--poll-interval", "0.2")  # fmt: skip
    commands.append(command)
    port = command.port()
    wait_for(
        lambda: (
            (value(scrape(port), "pgjobs_jobs_completed_total", task="ok", queue="a") or 0) >= 10
            and (value(scrape(port), "pgjobs_jobs_failed_total", task="boom", queue="") or 0) >= 1
        ),
        describe=lambda: "".join(command.lines[-20:]),
    )
    check_worker_samples(scrape(port), completed=10, retried=2, failed=1)
    assert command.stop() == 0
    outcomes = [entry for entry in command.entries() if "outcome" in entry]
    assert sorted(entry["outcome"] for entry in outcomes) == ["completed"] * 10 + ["failed"] * 3
    for entry in outcomes:
        assert entry["worker_id"] == "json-worker" and entry["attempt"] == 1
        assert isinstance(entry["job_id"], int) and isinstance(entry["duration_ms"], float)
        assert (entry["task"], entry["queue"]) in (("ok", "a"), ("boom", "b"), ("boom", None))
    assert sorted(e["will_retry"] for e in outcomes if e["outcome"] == "failed") == [
        False,
        True,
        True,
    ]


def pgjobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    return subprocess.run(
        [PGJOBS, *args], capture_output=True, text=True, env={**environment, **(env or {})},
        cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["metrics", "--port", "70000"],
        ["metrics", "--port", "-1"],
        ["worker", "tests.metrics.tasks:tasks", "--metrics-port", "65536"],
    ],
)
def test_a_port_out_of_range_is_a_usage_error_naming_it(args: list[str]) -> None:
    result = pgjobs(*args, "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2, result.stderr
    port = args[-1]
    assert f"port {port} is not allowed: it must be an integer from 0 to 65535" in result.stderr


def test_a_port_in_use_is_reported(database_url: URL) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = pgjobs("metrics", "--database-url", libpq_url(database_url), "--schema", SCHEMA,
                        "--port", port)  # fmt: skip
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("command", ["metrics", "worker"])
def test_without_the_extra_the_commands_say_what_to_install(
    command: str, database_url: URL
) -> None:
    args = ["metrics", "--port", "0"] if command == "metrics" else [
        "worker", "tests.metrics.tasks:tasks", "--metrics-port", "0", "--drain"]  # fmt: skip
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from sqla_pgjobs.cli import main\n"
        f"main({[*args, '--database-url', libpq_url(database_url), '--schema', SCHEMA]!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "needs prometheus-client, which is not installed" in result.stderr
    assert "pip install 'sqla-pgjobs[metrics]'" in result.stderr
