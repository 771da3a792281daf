"""The ``pgjobs`` command as a user runs it: help, errors and exit codes, and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import libpq_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

PGJOBS = str(Path(sys.executable).with_name("pgjobs"))


def pgjobs(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    environment.update(env or {})
    return subprocess.run(
        [PGJOBS, *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = pgjobs("--help")
    assert result.returncode == 0
    assert "worker" in result.stdout and "demo" in result.stdout
    for command in ("worker", "demo"):
        assert pgjobs(command, "--help").returncode == 0
    assert "--drain, --once" in pgjobs("worker", "--help").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["worker", "no_such_module:tasks", "--database-url", "postgresql://x"],
            "cannot import module 'no_such_module'",
        ),
        (
            ["worker", "json:dumps", "--database-url", "postgresql://x"],
            "json.dumps must be a sqla_pgjobs TaskRegistry, found function",
        ),
        (
            ["worker", "json"],
            "Missing option '--database-url'. Pass it, or set PGJOBS_DATABASE_URL",
        ),
        (["worker", "json:dumps", "--database-url", "x", "--concurrency", "0"], "--concurrency"),
    ],
)
def test_usage_errors_exit_2_and_say_what_is_wrong(args: list[str], message: str) -> None:
    result = pgjobs(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_runtime_errors_exit_1_with_a_hint(tmp_path: Path, database_url: URL) -> None:
    (tmp_path / "mytasks.py").write_text(
        "from sqla_pgjobs.worker import TaskRegistry\ntasks = TaskRegistry()\n"
    )
    unreachable = pgjobs(
        "worker",
        "mytasks:tasks",
        "--database-url",
        "postgresql://postgres@127.0.0.1:1/db",
        cwd=tmp_path,
    )
    assert unreachable.returncode == 1
    assert "Connection refused" in unreachable.stderr
    no_schema = pgjobs(
        "worker",
        "mytasks:tasks",
        "--schema",
        "not_installed",
        cwd=tmp_path,
        env={"PGJOBS_DATABASE_URL": libpq_url(database_url)},
    )
    assert no_schema.returncode == 1
    hint = "Is the job schema installed as 'not_installed', at the latest version?"
    assert hint in no_schema.stderr


def _check_summary(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Every job done in" in out
    for line in ("send_email", "send_reminder", "flaky_upload", "daily_report", "ship_order"):
        assert line in out
    assert "mismatch" not in out
    assert "Removed the 'pgjobs_demo' schema." in out


def test_demo_with_a_database_url_runs_end_to_end_and_cleans_up(database_url: URL) -> None:
    result = pgjobs("demo", "--jobs", "30", env={"PGJOBS_DATABASE_URL": libpq_url(database_url)})
    _check_summary(result)
    assert "embedded" not in result.stdout


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="pgserver has wheels for 3.11/3.12 only")
def test_demo_without_a_database_starts_an_embedded_postgresql() -> None:
    result = pgjobs("demo", "--jobs", "20")
    _check_summary(result)
    assert "starting an embedded PostgreSQL" in result.stdout
    assert result.stderr == ""
