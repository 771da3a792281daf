"""Connection plumbing shared by the worker and the scheduler: their psycopg URL, duration
arguments, the connection for their statements (reconnecting with backoff), and the LISTEN
loop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from sqla_pgjobs import validation as check

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Iterable
    from datetime import timedelta

__all__ = [
    "CONNECTION_ERRORS",
    "RECONNECT_FIRST",
    "RECONNECT_MAX",
    "StatementConnection",
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


def seconds(argument: str, value: float | timedelta) -> float:
    """A positive duration given as seconds or a timedelta, in seconds."""
    checked = check.check_seconds(argument, value)
    assert checked is not None
    return checked.total_seconds()


class StatementConnection:
    """The autocommit connection a worker or a scheduler sends its statements on, one at a
    time. A statement that meets a lost connection is sent again on a new one, after a
    backoff from RECONNECT_FIRST to RECONNECT_MAX; ``on_lost`` hears of each loss (and may
    raise to stop the retrying), ``sleep`` waits out the backoff."""

    def __init__(
        self,
        url: str,
        application_name: str,
        *,
        on_lost: Callable[[Exception], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        settings: dict[str, str] | None = None,
    ) -> None:
        """``settings``: server settings for the connection's session, made on each
        connect (so a reconnect has them too)."""
        self._url = url
        self._application_name = application_name[:63]
        self._settings = dict(settings or {})
        self._on_lost = on_lost
        self._sleep = sleep
        self._connection: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def execute(
        self,
        statement: str,
        params: dict[str, Any],
        *,
        retry: bool = True,
        binary: bool = False,
    ) -> list[dict[str, Any]]:
        """The statement's rows (none for a statement that returns none)."""
        delay = RECONNECT_FIRST
        while True:
            try:
                async with self._lock:
                    if self._connection is None or self._connection.closed:
                        self._connection = await psycopg.AsyncConnection.connect(
                            self._url,
                            autocommit=True,
                            row_factory=dict_row,
                            application_name=self._application_name,
                        )
                        for name, value in self._settings.items():
                            await self._connection.execute(
                                "SELECT set_config(%s, %s, false)", [name, value]
                            )
                    cursor = self._connection.cursor(binary=binary)
                    await cursor.execute(statement, params)
                    return await cursor.fetchall() if cursor.description else []
            except CONNECTION_ERRORS as exc:
                await self._drop()
                if not retry:
                    raise
                self._on_lost(exc)
                await self._sleep(delay)
                delay = next_delay(delay)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None


async def listen(
    url: str,
    channels: Iterable[str],
    wake: asyncio.Event,
    log: logging.Logger,
    extra: dict[str, Any],
    *,
    on_notify: Callable[[str, str], None] | None = None,
) -> None:
    """LISTEN on ``channels`` and set ``wake`` for every notification, forever, after
    ``on_notify(channel, payload)`` when given; a lost connection is logged and made again
    with backoff (``wake`` is set once it is back, for what was missed meanwhile)."""
    delay = RECONNECT_FIRST
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                for channel in channels:
                    await connection.execute(f'LISTEN "{channel}"')
                delay = RECONNECT_FIRST
                wake.set()
                async for notification in connection.notifies():
                    if on_notify is not None:
                        on_notify(notification.channel, notification.payload)
                    wake.set()
        except CONNECTION_ERRORS as exc:
            log.warning("listen connection lost (%s); polling until it is back", exc, extra=extra)
            await asyncio.sleep(delay)
            delay = next_delay(delay)
