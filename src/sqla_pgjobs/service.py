"""Starting and stopping the long-running parts, the worker and the scheduler, alone or
together on one event loop.

:func:`serve` runs each service's main coroutine. When one ends (a draining worker found
nothing left to do, or a service failed) the others are asked to stop, and the first
error, if any, is raised once all have ended. Under the main thread, SIGTERM and SIGINT
stop every service gracefully; a second signal exits the process at once (status 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterator, Mapping

__all__ = ["Service", "default_id", "run", "serve"]

log = logging.getLogger("sqla_pgjobs")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_id(prefix: str = "") -> str:
    """A worker or scheduler id that no other process uses: ``<prefix>host-pid-random``."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Service:
    """Base of the worker and the scheduler: something that runs until it is stopped.

    :meth:`stop` may be called from any thread (or a signal handler); a running service
    learns of it through ``stopping``, the wake-up event it registered with
    :meth:`_waking`, and :meth:`_pause`.
    """

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the service to stop gracefully (from any thread)."""
        self._stopping.set()
        loop, wake, stopped = self._loop, self._wake, self._stopped
        if loop is not None and wake is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)
                loop.call_soon_threadsafe(stopped.set)

    @contextlib.contextmanager
    def _waking(self, wake: asyncio.Event) -> Iterator[None]:
        """While the service runs on the current loop, :meth:`stop` sets ``wake``."""
        self._loop, self._wake, self._stopped = asyncio.get_running_loop(), wake, asyncio.Event()
        if self.stopping:
            self._stopped.set()
        try:
            yield
        finally:
            self._loop, self._wake, self._stopped = None, None, None

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the service is stopped meanwhile (a reconnect's
        backoff: unlike ``wake``, nothing else cuts it short, so an outage is not spent
        retrying in a tight loop)."""
        stopped = self._stopped
        if stopped is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), timeout=seconds)


def run(mains: Mapping[Service, Awaitable[Any]], *, signals: bool = True) -> list[Any]:
    """:func:`serve` on a new event loop (``asyncio.run``)."""

    async def main() -> list[Any]:
        return await serve(mains, signals=signals)

    return asyncio.run(main())


async def serve(mains: Mapping[Service, Awaitable[Any]], *, signals: bool = False) -> list[Any]:
    """Run each service's main coroutine on this loop, until all have ended; return their
    results in order. ``signals``: handle SIGTERM and SIGINT (under the main thread only)."""
    services = list(mains)
    loop = asyncio.get_running_loop()
    handled = signals and threading.current_thread() is threading.main_thread()
    if handled:
        received: list[str] = []
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, _on_signal, signum, services, received)
    tasks = [asyncio.ensure_future(main) for main in mains.values()]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for service in services:
            service.stop()
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        # Cancelled from outside: the services end as cancelled tasks do (their cleanup runs).
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if handled:
            for signum in _SIGNALS:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
    return [task.result() for task in tasks]


def _on_signal(signum: int, services: list[Service], received: list[str]) -> None:
    name = signal.Signals(signum).name
    if received:
        log.warning(
            "second %s: exiting now; held jobs recover after the heartbeat timeout, "
            "schedule claims when their lease ends",
            name,
        )
        logging.shutdown()
        os._exit(1)
    received.append(name)
    log.info("%s: stopping %s", name, ", ".join(str(service) for service in services))
    for service in services:
        service.stop()
