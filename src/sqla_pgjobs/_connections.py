"""Connection plumbing shared by the worker and the scheduler: their psycopg URL, duration
arguments, reconnect backoff, and the LISTEN loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.engine import URL, Engine

from sqla_pgjobs import validation as check
from sqla_pgjobs.urls import sqlalchemy_url

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable
    from datetime import timedelta

__all__ = [
    "CONNECTION_ERRORS",
    "RECONNECT_FIRST",
    "RECONNECT_MAX",
    "libpq_url",
    "listen",
    "next_delay",
    "seconds",
]

# Reconnect backoff: 0.1 s doubling to 5 s, so a restarting server (typically back in a
# few seconds) is found quickly without hammering it.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def next_delay(delay: float) -> float:
    return min(delay * 2, RECONNECT_MAX)


def libpq_url(database: str | URL | Engine) -> str:
    """The connection string psycopg takes, from a URL or an Engine."""
    url = database.url if isinstance(database, Engine) else sqlalchemy_url(database)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def seconds(argument: str, value: float | timedelta) -> float:
    """A positive duration given as seconds or a timedelta, in seconds."""
    checked = check.check_seconds(argument, value)
    assert checked is not None
    return checked.total_seconds()


async def listen(
    url: str,
    channels: Iterable[str],
    wake: asyncio.Event,
    log: logging.Logger,
    extra: dict[str, Any],
) -> None:
    """LISTEN on ``channels`` and set ``wake`` for every notification, forever; a lost
    connection is logged and made again with backoff (``wake`` is set once it is back,
    for what was missed meanwhile)."""
    delay = RECONNECT_FIRST
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                for channel in channels:
                    await connection.execute(f'LISTEN "{channel}"')
                delay = RECONNECT_FIRST
                wake.set()
                async for _ in connection.notifies():
                    wake.set()
        except CONNECTION_ERRORS as exc:
            log.warning("listen connection lost (%s); polling until it is back", exc, extra=extra)
            await asyncio.sleep(delay)
            delay = next_delay(delay)
