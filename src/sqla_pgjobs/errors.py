"""The package's exceptions: one base, :class:`PgJobsError`, with subclasses that carry data."""

from __future__ import annotations

__all__ = ["PgJobsError", "SchemaNameError", "SchemaVersionError"]


class PgJobsError(Exception):
    """Base of every exception raised by sqla_pgjobs."""


class SchemaNameError(PgJobsError, ValueError):
    """A schema name the job schema cannot live in."""

    def __init__(self, schema: object, allowed: str) -> None:
        self.schema = schema
        self.allowed = allowed
        super().__init__(f"schema name {schema!r} is not allowed: it must be {allowed}")


class SchemaVersionError(PgJobsError, ValueError):
    """A schema version (or pair of versions) this library cannot install or reach."""
