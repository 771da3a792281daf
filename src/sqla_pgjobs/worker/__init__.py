"""The worker: runs the Python handlers of jobs (see :mod:`sqla_pgjobs.worker.runtime`).

Its parts: the loop and the :class:`Worker` (``runtime``), its decisions (``policy``), the
results waiting to be reported (``results``), its statements (``connection``) and the
handlers it runs (``handlers``, ``threads``). ``TaskRegistry`` and ``Job`` live in
:mod:`sqla_pgjobs.tasks` (an application that only enqueues needs them without the worker)
and are importable from here too.
"""

from __future__ import annotations

from sqla_pgjobs.tasks import Handler, Job, Task, TaskRegistry
from sqla_pgjobs.worker.runtime import Worker, WorkerStats

__all__ = ["Handler", "Job", "Task", "TaskRegistry", "Worker", "WorkerStats"]
