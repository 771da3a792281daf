"""``pgjobs dashboard`` and ``pgjobs demo --dashboard``, as processes: each serves the
dashboard on 127.0.0.1 until interrupted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from sqla_pgjobs import add_job
from sqla_pgjobs.database import libpq_url
from tests.helpers import SCHEMA
from tests.metrics.workload import execute

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL, Engine

PGJOBS = str(Path(sys.executable).with_name("pgjobs"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(*args: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    return subprocess.Popen(
        [PGJOBS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )


def _lines(process: subprocess.Popen[str]) -> Iterator[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    for line in process.stdout:
        assert time.monotonic() < deadline, "the process took too long"
        yield line.rstrip("\n")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_pgjobs_dashboard_serves_until_interrupted(database_url: URL, jobs_engine: Engine) -> None:
    execute(jobs_engine, add_job("from_the_cli", {"n": 1}))
    port = _free_port()
    process = _start(
        "dashboard",
        "--database-url",
        libpq_url(database_url),
        "--schema",
        SCHEMA,
        "--port",
        str(port),
        "--read-only",
    )
    try:
        first = next(_lines(process))
        assert first == f"Dashboard at http://127.0.0.1:{port}/ (read-only)"
        deadline = time.monotonic() + 10
        while True:
            try:
                page = _get(f"http://127.0.0.1:{port}/jobs")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "from_the_cli" in page and "data-action" not in page
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    assert process.returncode == 0


def test_pgjobs_dashboard_refuses_a_bad_tenant_and_a_missing_schema(
    empty_database_url: URL,
) -> None:
    bad = subprocess.run(
        [PGJOBS, "dashboard", "--database-url", libpq_url(empty_database_url), "--tenant", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--tenant 'x' is not allowed" in bad.stderr
    missing = subprocess.run(
        [PGJOBS, "dashboard", "--database-url", libpq_url(empty_database_url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "Is the job schema installed" in missing.stderr


def test_demo_with_the_dashboard_shows_the_jobs_and_waits_for_ctrl_c(
    empty_database_url: URL,
) -> None:
    port = _free_port()
    process = _start(
        "demo",
        "--database-url",
        libpq_url(empty_database_url),
        "--jobs",
        "10",
        "--dashboard",
        "--dashboard-port",
        str(port),
    )
    seen: list[str] = []
    try:
        for line in _lines(process):
            seen.append(line)
            if line.startswith("Dashboard at"):
                assert line == f"Dashboard at http://127.0.0.1:{port}/"
                pending = _get(f"http://127.0.0.1:{port}/")
                assert 'id="total-due">' in pending
            if line.startswith("The dashboard stays up"):
                break
        output = "\n".join(seen)
        assert "Every job done in" in output and "mismatch" not in output
        finished = _get(f"http://127.0.0.1:{port}/")
        engine = create_engine(empty_database_url)
        try:
            with engine.connect() as connection:
                runs = connection.execute(
                    text("SELECT count(*) FROM pgjobs_demo.job_history")
                ).scalar_one()
        finally:
            engine.dispose()
        assert (
            runs >= 19
        )  # 10 emails, 3 reminders, 2 uploads (one failure each), 1 report, 3 orders
        assert f'id="finished-day">{runs}<' in finished
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output + rest
    assert "Removed the 'pgjobs_demo' schema." in rest
