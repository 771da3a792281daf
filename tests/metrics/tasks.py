"""Tasks for the metrics tests' worker processes (``pgjobs worker tests.metrics.tasks:tasks``,
from the repository root): one that completes, one that always fails."""

from __future__ import annotations

from typing import Any

from sqla_pgjobs.worker import TaskRegistry

tasks = TaskRegistry()


@tasks.task("ok")
def ok(payload: Any) -> None:
    return None


@tasks.task("boom")
def boom(payload: Any) -> None:
    raise RuntimeError("boom")
