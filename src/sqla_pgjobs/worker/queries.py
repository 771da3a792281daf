"""The worker's SQL statements, from ``sql/worker.sql``, rendered for a schema."""

from __future__ import annotations

from dataclasses import dataclass

from sqla_pgjobs.schema import DEFAULT_SCHEMA, named_statements

__all__ = ["Queries"]


@dataclass(frozen=True)
class Queries:
    """The worker's statements for one schema name, ready for psycopg."""

    cycle: str
    heartbeat: str
    release_jobs: str

    @classmethod
    def for_schema(cls, schema: str = DEFAULT_SCHEMA) -> Queries:
        return cls(**named_statements("worker.sql", schema))
