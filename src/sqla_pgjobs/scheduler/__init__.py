"""The scheduler: fires scheduled jobs (see :mod:`sqla_pgjobs.scheduler.runtime`).

What a ``schedule_info`` means is decided by :mod:`sqla_pgjobs.schedules`.
"""

from __future__ import annotations

from sqla_pgjobs.scheduler.runtime import Scheduler, SchedulerStats

__all__ = ["Scheduler", "SchedulerStats"]
