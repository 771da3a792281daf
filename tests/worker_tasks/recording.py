"""Tasks that record every run outside the job table, for tests of real worker processes.

Each handler appends JSON lines to ``$PGJOBS_TEST_RUNS_DIR/<pid>.jsonl``: a ``start`` line
when it begins and an ``end`` line when it returns. A line is one ``write()`` to a file
opened with ``O_APPEND``, so lines from the threads of a worker never interleave, and the
record survives the worker being killed and the database being restarted.

Run by ``pgjobs worker tests.worker_tasks.recording:tasks`` from the repository root.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session  # noqa: TC002 (read at run time: the transaction to give)

from sqla_pgjobs.worker import Job, TaskRegistry

RUNS_DIR_VARIABLE = "PGJOBS_TEST_RUNS_DIR"

tasks = TaskRegistry()

_lock = threading.Lock()
_fd: int | None = None


def _runs_fd() -> int:
    global _fd
    with _lock:
        if _fd is None:
            path = os.path.join(os.environ[RUNS_DIR_VARIABLE], f"{os.getpid()}.jsonl")
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return _fd


def record(event: str, job: Job, **fields: Any) -> None:
    """Append one line: the event, the job, its attempt, this process and the wall time."""
    entry = {
        "event": event,
        "job_id": job.id,
        "attempt": job.attempts,
        "pid": os.getpid(),
        "worker_id": job.locked_by,
        "time": time.time(),
        **fields,
    }
    os.write(_runs_fd(), (json.dumps(entry) + "\n").encode())


@tasks.task("record")
def record_run(payload: dict[str, Any] | None, job: Job) -> None:
    """Record the run; sleep ``payload["sleep"]`` seconds (default none) in between."""
    record("start", job)
    if payload and payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    record("end", job)


@tasks.task("fail_first_attempt")
def fail_first_attempt(payload: dict[str, Any] | None, job: Job) -> None:
    """Raise on the first attempt when ``payload["fail"]`` is true; succeed otherwise."""
    record("start", job, last_error=job.last_error)
    if payload and payload.get("fail") and job.attempts == 1:
        record("raise", job)
        raise RuntimeError(f"job {job.id} fails its first attempt on purpose")
    record("end", job)


@tasks.task("sleep_on_first_attempt")
def sleep_on_first_attempt(payload: dict[str, Any], job: Job) -> None:
    """Sleep ``payload["seconds"]`` on attempt 1 (long enough to be interrupted), then
    ``payload.get("then", 0)`` on later attempts. Records ``last_error`` as it was taken."""
    record("start", job, last_error=job.last_error)
    time.sleep(float(payload["seconds"]) if job.attempts == 1 else float(payload.get("then", 0)))
    record("end", job)


# A transactional task (a typed task taking a Session): its write and its job's completion
# commit together. While the file ``hold_while`` exists it waits inside its transaction,
# for a test to kill the worker there.


@tasks.task
def write_in_transaction(hold_while: str, job: Job, session: Session) -> None:
    session.execute(
        text("INSERT INTO public.tx_effects (job_id, attempt) VALUES (:j, :a)"),
        {"j": job.id, "a": job.attempts},
    )
    session.flush()
    record("start", job)
    deadline = time.monotonic() + 60
    while os.path.exists(hold_while) and time.monotonic() < deadline:
        time.sleep(0.05)
    record("end", job)
