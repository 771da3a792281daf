"""The worker's share of upkeep: pruning the job history (schema version 2).

Every ``interval`` seconds each worker asks ``claim_maintenance`` whether the history is
due for pruning; one worker per interval is told yes (the lease is a row of
``app_jobs.maintenance``), and deletes the expired rows in small batches on a connection
of its own, so its cycles never wait behind a delete. Against a version 1 schema (a
rolling upgrade not finished yet) there is nothing to prune: it says so once and stays
idle.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from typing import Any

import psycopg

from sqla_pgjobs.schema import named_statements

__all__ = ["BATCH", "PAUSE", "prune_periodically"]

#: Rows one batch deletes: a few milliseconds of locks, so that pruning never competes
#: with the workers for long.
BATCH = 1000
#: Seconds between batches.
PAUSE = 0.05

log = logging.getLogger("sqla_pgjobs.worker")


async def prune_periodically(
    url: str, schema: str, worker_id: str, interval: float, fields: dict[str, Any]
) -> None:
    """Run forever: every ``interval`` seconds (the first time after a random part of it,
    so that workers started together do not all ask at once), prune if this worker holds
    the lease. Errors are logged and the next interval tries again."""
    statements = named_statements("worker.sql", schema)
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        try:
            deleted = await _prune_if_due(url, statements, worker_id, interval)
        except psycopg.errors.UndefinedFunction:
            log.info(
                "the job schema has no history to prune (version 1): pruning is off until "
                "this worker restarts on an upgraded schema",
                extra=fields,
            )
            await asyncio.Event().wait()  # stays idle; the worker stops it
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "pruning the job history failed (%s); next try in %g s", exc, interval, extra=fields
            )
        else:
            if deleted:
                log.info("pruned %d expired job history row(s)", deleted, extra=fields)
        await asyncio.sleep(interval)


async def _prune_if_due(
    url: str, statements: dict[str, str], worker_id: str, interval: float
) -> int:
    """The rows deleted, if this worker got the lease; else 0."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, application_name=f"pgjobs worker {worker_id} (pruning)"
    ) as connection:
        claim = await connection.execute(
            statements["claim_prune"],
            {"worker_id": worker_id, "every": timedelta(seconds=interval)},
        )
        row = await claim.fetchone()
        if row is None or not row[0]:
            return 0
        total = 0
        while True:
            batch = await connection.execute(statements["prune"], {"max_rows": BATCH})
            deleted_row = await batch.fetchone()
            deleted = int(deleted_row[0]) if deleted_row is not None else 0
            total += deleted
            if deleted < BATCH:
                return total
            await asyncio.sleep(PAUSE)
