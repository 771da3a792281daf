"""The transactions of transactional tasks: a typed task whose function takes a
``Session``, ``AsyncSession``, ``Connection`` or ``AsyncConnection`` runs in a transaction
the worker opens, and its job is completed in that transaction (``complete_job``), so that
its writes to this database and the job's completion commit together or not at all.

The worker's own statements stay batched: these transactions are on engines of their own
(one pool connection per running transactional handler), opened on first use.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from sqla_pgjobs.database import create_job_engine, sqlalchemy_url, translate_map

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from sqla_pgjobs.tasks import Job

__all__ = ["HandlerTransactions"]


class HandlerTransactions:
    """Transactions on ``url`` (job schema ``schema``) for up to ``concurrency`` handlers
    at once, and the jobs completed in them (which the worker's cycle must not report)."""

    def __init__(self, url: str, schema: str, concurrency: int) -> None:
        self._url = url
        self._schema = schema
        self._concurrency = concurrency
        self._engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._lock = threading.Lock()
        #: Jobs completed in a handler's transaction, not yet counted by the worker.
        self.done: set[int] = set()

    @contextlib.contextmanager
    def begin(self, kind: str) -> Iterator[Any]:
        from sqlalchemy.orm import Session

        engine = self._sync_engine()
        if kind == "session":
            with Session(engine) as session, session.begin():
                yield session
        else:
            with engine.begin() as connection:
                yield connection

    @contextlib.asynccontextmanager
    async def begin_async(self, kind: str) -> AsyncIterator[Any]:
        from sqlalchemy.ext.asyncio import AsyncSession

        engine = self._asyncio_engine()
        if kind == "async_session":
            async with AsyncSession(engine) as session, session.begin():
                yield session
        else:
            async with engine.begin() as connection:
                yield connection

    def completed(self, job: Job) -> None:
        self.done.add(job.id)

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()

    def _sync_engine(self) -> Engine:
        with self._lock:  # plain handlers run on several threads
            if self._engine is None:
                self._engine = create_job_engine(
                    self._url, self._schema, pool_size=self._concurrency, max_overflow=0
                )
            return self._engine

    def _asyncio_engine(self) -> AsyncEngine:
        if self._async_engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(
                sqlalchemy_url(self._url), pool_size=self._concurrency, max_overflow=0
            )
            mapping = translate_map(self._schema)
            self._async_engine = (
                engine.execution_options(schema_translate_map=mapping) if mapping else engine
            )
        return self._async_engine
