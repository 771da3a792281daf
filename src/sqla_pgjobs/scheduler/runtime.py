"""The scheduler: turns scheduled jobs into jobs at the times their ``schedule_info`` names.

Several schedulers share the schedules through claims that are leases (SPEC C7): a
scheduler claims free schedules (``get_scheduled_jobs``), renews its leases every third of
their length (``renew_scheduled_jobs``, which also returns each schedule's current
definition), and fires each at its times with ``run_scheduled_job(id, fire_time=...)``. If
it dies, its leases lapse and another scheduler claims the schedules. A fire time makes at
most one job whatever the number of schedulers, because the database records the last
fire time of each schedule and refuses the same fire twice (``ALREADY_SCHEDULED``).

- New schedules (``scheduled_jobs:insert``) and changed or deleted ones
  (``scheduled_jobs:update``) are picked up at once through LISTEN, else at the next renewal.
- A fire refused because the previous job is still pending or running is logged, with
  the reason, and the schedule moves on to its next time.
- Missed fires (no scheduler was running, or this one was busy): the schedule fires once,
  for its latest missed time, then follows its rule; it does not fire once per missed time.
  (Recording the latest time keeps a scheduler that takes over from firing the rest.)
- A schedule whose ``schedule_info`` cannot be understood is logged once and held (so that
  no other scheduler spins on it) until its definition changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from sqla_pgjobs import service
from sqla_pgjobs import validation as check
from sqla_pgjobs._connections import CONNECTION_ERRORS, StatementConnection, listen, seconds
from sqla_pgjobs.database import libpq_url
from sqla_pgjobs.schedules import InvalidScheduleError, Schedule, parse_schedule
from sqla_pgjobs.schema import DEFAULT_SCHEMA, named_statements, validate_schema_name

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.engine import URL, Engine

__all__ = ["Scheduler", "SchedulerStats"]

log = logging.getLogger("sqla_pgjobs.scheduler")

# Claims per statement: enough that a scheduler starting next to thousands of schedules
# takes them in a few round trips.
_CLAIM_BATCH = 100
# Missed fire times stepped over to find the latest one (a day of a per-second schedule).
_MAX_CATCH_UP = 100_000
# The definition of a schedule: when any of these changes, it is parsed again.
_DEFINITION = (
    "task_identifier",
    "payload",
    "schedule_info",
    "priority",
    "max_attempts",
    "queue_name",
    "key",
    "database_id",
)


@dataclass
class SchedulerStats:
    fired: int = 0
    skipped: int = 0  # ALREADY_SCHEDULED: the previous job had not finished, or another
    # scheduler made this fire's job
    invalid: int = 0
    reconnects: int = 0


@dataclass
class _Held:
    """A schedule this scheduler holds."""

    row: dict[str, Any]
    schedule: Schedule | None  # None: schedule_info could not be understood
    next_fire: datetime | None

    @property
    def id(self) -> int:
        return int(self.row["id"])


class Scheduler(service.Service):
    """Fires the scheduled jobs of a database (see the module docs).

    :param lease: how long a claim lasts unless renewed; a dead scheduler's schedules are
        taken over after at most this long. Renewed every third of it.
    :param task_identifiers: only schedules of these tasks (None: all).
    :param job_expiry: how long a running previous job blocks the next fire (the argument
        of ``run_scheduled_job``; default 1 hour).
    :param max_claims: hold at most this many schedules (None: as many as are free).
    """

    def __init__(
        self,
        database: str | URL | Engine,
        *,
        scheduler_id: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        lease: float | timedelta = 60.0,
        task_identifiers: Iterable[str] | None = None,
        job_expiry: float | timedelta = timedelta(hours=1),
        poll_interval: float | timedelta = 10.0,
        listen: bool = True,
        max_claims: int | None = None,
    ) -> None:
        super().__init__()
        self.scheduler_id = check.check_worker_id(
            scheduler_id or service.default_id("scheduler-"), "scheduler_id"
        )
        self.schema = validate_schema_name(schema)
        self.lease = seconds("lease", lease)
        self.job_expiry = seconds("job_expiry", job_expiry)
        self.poll_interval = seconds("poll_interval", poll_interval)
        self.listen = bool(listen)
        self.max_claims = check.check_positive("max_claims", max_claims)
        self.task_identifiers = (
            None
            if task_identifiers is None
            else [str(check.check_name("task_identifiers", name)) for name in task_identifiers]
        )
        self.stats = SchedulerStats()
        self._url = libpq_url(database)
        self._sql = named_statements("scheduler.sql", self.schema)

    def __str__(self) -> str:
        return f"scheduler {self.scheduler_id}"

    def run(self, *, install_signal_handlers: bool = True) -> SchedulerStats:
        """Run until stopped; return the stats. Under the main thread, SIGTERM and SIGINT
        stop the scheduler (it releases its claims); a second signal exits at once."""
        service.run({self: self.run_async()}, signals=install_signal_handlers)
        return self.stats

    async def run_async(self) -> SchedulerStats:
        """Run on the current event loop until :meth:`stop` (no signal handlers)."""
        run = _Run(self, self._url, self._sql)
        with self._waking(run.wake):
            await run.execute()
        return self.stats


class _Run:
    def __init__(self, scheduler: Scheduler, url: str, statements: dict[str, str]) -> None:
        self.s = scheduler
        self.url = url
        self.statements = statements
        self.wake = asyncio.Event()
        self.held: dict[int, _Held] = {}
        self.connection = StatementConnection(
            url, f"pgjobs {scheduler.scheduler_id}", on_lost=self._lost_connection
        )

    # --- Database -------------------------------------------------------------------------------

    async def sql(
        self, name: str, params: dict[str, Any], *, retry: bool = True
    ) -> list[dict[str, Any]]:
        return await self.connection.execute(self.statements[name], params, retry=retry)

    def _lost_connection(self, exc: Exception) -> None:
        if self.s.stopping:
            raise exc  # stopping: no reconnecting
        self.s.stats.reconnects += 1
        log.warning(
            "database connection lost (%s); reconnecting",
            exc,
            extra={"scheduler_id": self.s.scheduler_id},
        )

    # --- Lifecycle ----------------------------------------------------------------------------

    async def execute(self) -> None:
        s = self.s
        # Claims a previous life of this id left behind go back first (the first statement
        # does not retry: a wrong URL or a missing schema fails at once).
        try:
            await self.sql("release", {"scheduler_id": s.scheduler_id}, retry=False)
        except BaseException:
            await self._close()
            raise
        log.info(
            "scheduler %s started (lease %g s)",
            s.scheduler_id,
            s.lease,
            extra={"scheduler_id": s.scheduler_id},
        )
        listener = asyncio.create_task(self.listener()) if s.listen else None
        try:
            await self.loop()
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.sql("release", {"scheduler_id": s.scheduler_id}, retry=False)
            await self._close()
            log.info(
                "scheduler %s stopped: %d fired, %d skipped",
                s.scheduler_id,
                s.stats.fired,
                s.stats.skipped,
                extra={"scheduler_id": s.scheduler_id},
            )

    async def _close(self) -> None:
        await self.connection.close()

    async def loop(self) -> None:
        s = self.s
        renew_every = s.lease / 3
        next_renewal = 0.0
        loop = asyncio.get_running_loop()
        while not s.stopping:
            if self.wake.is_set() or loop.time() >= next_renewal:
                self.wake.clear()
                await self.renew()
                await self.claim()
                next_renewal = loop.time() + renew_every
            await self.fire_due()
            wait = min(next_renewal - loop.time(), s.poll_interval, self.until_next_fire())
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=wait)

    def until_next_fire(self) -> float:
        fires = [h.next_fire for h in self.held.values() if h.next_fire is not None]
        if not fires:
            return float("inf")
        return max((min(fires) - datetime.now(UTC)).total_seconds(), 0.0)

    # --- Claims -------------------------------------------------------------------------------

    async def claim(self) -> None:
        s = self.s
        while s.max_claims is None or len(self.held) < s.max_claims:
            room = (
                _CLAIM_BATCH
                if s.max_claims is None
                else min(_CLAIM_BATCH, s.max_claims - len(self.held))
            )
            rows = await self.sql(
                "claim",
                {
                    "scheduler_id": s.scheduler_id,
                    "task_identifiers": s.task_identifiers,
                    "lease": timedelta(seconds=s.lease),
                    "max_jobs": room,
                },
            )
            for row in rows:
                self.hold(row)
            if len(rows) < room:
                return

    async def renew(self) -> None:
        rows = await self.sql(
            "renew", {"scheduler_id": self.s.scheduler_id, "lease": timedelta(seconds=self.s.lease)}
        )
        current = {int(row["id"]): row for row in rows}
        for schedule_id in list(self.held):
            if schedule_id not in current:
                # Deleted, replaced (add_scheduled_job with its key), or taken over after
                # our lease lapsed: not ours to fire any more.
                log.info(
                    "scheduled job %d is no longer held by this scheduler",
                    schedule_id,
                    extra={"scheduler_id": self.s.scheduler_id, "scheduled_job_id": schedule_id},
                )
                del self.held[schedule_id]
        for schedule_id, row in current.items():
            held = self.held.get(schedule_id)
            if held is None or any(held.row[k] != row[k] for k in _DEFINITION):
                self.hold(row)
            else:
                held.row = row

    def hold(self, row: dict[str, Any]) -> None:
        s = self.s
        fields = {
            "scheduler_id": s.scheduler_id,
            "scheduled_job_id": row["id"],
            "task": row["task_identifier"],
        }
        try:
            schedule = parse_schedule(row["schedule_info"])
        except InvalidScheduleError as exc:
            s.stats.invalid += 1
            log.error(
                "scheduled job %d (%s) is skipped: %s",
                row["id"],
                row["task_identifier"],
                exc,
                extra=fields,
            )
            self.held[int(row["id"])] = _Held(row, None, None)
            return
        now = datetime.now(UTC)
        last: datetime | None = row["last_scheduled"]
        next_fire = schedule.next_fire(last if last is not None else now)
        if next_fire is not None and last is not None and next_fire < now:
            # Missed while no scheduler ran: fire_due fires once, for the latest missed time.
            log.info(
                "scheduled job %d (%s) missed fires since %s: firing once now",
                row["id"],
                row["task_identifier"],
                last.isoformat(),
                extra=fields,
            )
        self.held[int(row["id"])] = _Held(row, schedule, next_fire)
        log.debug(
            "holding scheduled job %d: %s, next at %s",
            row["id"],
            schedule.describe(),
            next_fire,
            extra=fields,
        )

    # --- Firing -------------------------------------------------------------------------------

    async def fire_due(self) -> None:
        now = datetime.now(UTC)
        for held in sorted(self.held.values(), key=lambda h: h.next_fire or now):
            if held.next_fire is None or held.next_fire > now or held.schedule is None:
                continue
            fire_time = held.next_fire
            # Several fire times passed (missed): fire once, for the latest of them.
            following = held.schedule.next_fire(fire_time)
            for _ in range(_MAX_CATCH_UP):
                if following is None or following > now:
                    break
                fire_time, following = following, held.schedule.next_fire(following)
            else:
                following = held.schedule.next_fire(now)
            await self.fire(held, fire_time)
            if held.id in self.held:
                held.next_fire = following

    async def fire(self, held: _Held, fire_time: datetime) -> None:
        s = self.s
        fields = {
            "scheduler_id": s.scheduler_id,
            "scheduled_job_id": held.id,
            "task": held.row["task_identifier"],
            "fire_time": fire_time.isoformat(),
        }
        try:
            rows = await self.sql(
                "fire",
                {
                    "id": held.id,
                    "fire_time": fire_time,
                    "job_expiry": timedelta(seconds=s.job_expiry),
                },
            )
        except psycopg.errors.RaiseException as exc:
            if exc.diag.constraint_name != "scheduled_jobs_already_scheduled":
                raise
            s.stats.skipped += 1
            log.warning(
                "scheduled job %d (%s): fire at %s skipped: %s",
                held.id,
                held.row["task_identifier"],
                fire_time.isoformat(),
                exc.diag.message_detail,
                extra=fields,
            )
            return
        job_id = rows[0]["id"] if rows else None
        if job_id is None:
            log.info("scheduled job %d is gone; dropping it", held.id, extra=fields)
            self.held.pop(held.id, None)
            return
        s.stats.fired += 1
        log.info(
            "scheduled job %d (%s) fired: job %d",
            held.id,
            held.row["task_identifier"],
            job_id,
            extra={**fields, "job_id": job_id},
        )

    # --- Notifications --------------------------------------------------------------------------

    async def listener(self) -> None:
        await listen(
            self.url,
            ["scheduled_jobs:insert", "scheduled_jobs:update"],
            self.wake,
            log,
            {"scheduler_id": self.s.scheduler_id},
        )
