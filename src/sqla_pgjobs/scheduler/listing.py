"""The scheduled jobs with their next fire time, for ``pgjobs schedules`` and status views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, select

from sqla_pgjobs.schedules import InvalidScheduleError, parse_schedule
from sqla_pgjobs.tables import scheduled_jobs
from sqla_pgjobs.urls import sqlalchemy_url

__all__ = ["list_schedules"]


def list_schedules(database_url: str, schema: str) -> list[dict[str, Any]]:
    """One entry per scheduled job: its row's main columns, a description of its schedule,
    and its next fire time in the schedule's own time zone (None when it will not fire)."""
    engine = create_engine(sqlalchemy_url(database_url)).execution_options(
        schema_translate_map={"app_jobs": schema}
    )
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(scheduled_jobs).order_by(scheduled_jobs.c.id)).all()
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    entries = []
    for row in rows:
        entry: dict[str, Any] = {
            "id": row.id,
            "task_identifier": row.task_identifier,
            "schedule_info": row.schedule_info,
            "locked_by": row.locked_by,
            "lease_expires_at": row.lease_expires_at,
            "last_scheduled": row.last_scheduled,
        }
        try:
            schedule = parse_schedule(row.schedule_info)
        except InvalidScheduleError as exc:
            entry.update(schedule=f"invalid: {exc}", next_fire=None)
        else:
            after = max(now, row.last_scheduled) if row.last_scheduled else now
            next_fire = schedule.next_fire(after)
            entry.update(
                schedule=schedule.describe(),
                next_fire=next_fire.astimezone(schedule.tz).isoformat() if next_fire else None,
            )
        entries.append(entry)
    return entries
