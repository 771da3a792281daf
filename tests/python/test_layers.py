"""The package's layers as an application meets them: importing ``sqla_pgjobs`` to enqueue
loads no worker, no scheduler, no driver of its own and no Alembic; the import-layer
contracts of pyproject.toml hold (CI also runs ``lint-imports`` itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: What an application that only enqueues must not pay for at import time.
HEAVY = (
    "sqla_pgjobs.worker",
    "sqla_pgjobs.scheduler",
    "sqla_pgjobs.service",
    "sqla_pgjobs._connections",
    "sqla_pgjobs.alembic",
    "sqla_pgjobs.cli",
    "psycopg",
    "alembic",
    "click",
)


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``statement``."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.startswith(HEAVY)}


def test_importing_the_package_loads_no_worker_driver_or_alembic() -> None:
    assert heavy(loaded_after("import sqla_pgjobs")) == set()


def test_enqueueing_statements_and_tasks_load_no_worker() -> None:
    statement = (
        "from sqla_pgjobs import JobTrigger, TaskRegistry, add_job, add_jobs\n"
        "tasks = TaskRegistry()\n"
        "@tasks.task('send')\n"
        "def send(payload): pass\n"
        "send.job({'n': 1}); add_job('x', {}); add_jobs([{'identifier': 'x'}])"
    )
    assert heavy(loaded_after(statement)) == set()


def test_the_worker_is_there_on_first_use() -> None:
    import sqla_pgjobs
    from sqla_pgjobs.worker import Worker

    assert sqla_pgjobs.Worker is Worker
    assert "sqla_pgjobs.worker" in loaded_after("from sqla_pgjobs import Worker")
    with pytest.raises(AttributeError, match="no attribute 'Wroker'"):
        _ = sqla_pgjobs.Wroker  # type: ignore[attr-defined]


def test_all_is_the_application_facing_api_and_the_wrappers_stay_importable() -> None:
    import sqla_pgjobs
    from sqla_pgjobs import functions

    assert set(sqla_pgjobs.__all__) == {
        "AlreadyScheduledError",
        "Fields",
        "InvalidArgumentError",
        "InvalidWorkerIdError",
        "Job",
        "JobCancelledError",
        "JobSpec",
        "JobTrigger",
        "PgJobsError",
        "Row",
        "RowId",
        "SchemaNameError",
        "SchemaVersionError",
        "TaskRegistry",
        "Worker",
        "__version__",
        "add_job",
        "add_jobs",
        "add_scheduled_job",
        "cancel_jobs",
        "run_scheduled_job",
    }
    # SPEC section 3: one wrapper per SQL function, importable from the package.
    for name in functions.__all__:
        assert getattr(sqla_pgjobs, name) is getattr(functions, name), name


def test_the_import_layer_contracts_hold() -> None:
    lint_imports = str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([lint_imports], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
