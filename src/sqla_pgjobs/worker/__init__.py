"""The worker: runs the Python handlers of jobs (see :mod:`sqla_pgjobs.worker.runtime`)."""

from __future__ import annotations

from sqla_pgjobs.worker.runtime import Worker, WorkerStats
from sqla_pgjobs.worker.tasks import Handler, Job, Task, TaskRegistry

__all__ = ["Handler", "Job", "Task", "TaskRegistry", "Worker", "WorkerStats"]
