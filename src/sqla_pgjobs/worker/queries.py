"""The worker's SQL statements, loaded from ``sql/worker.sql`` and rendered for a schema."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from sqla_pgjobs.schema import DEFAULT_SCHEMA, quote_schema

__all__ = ["Queries"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)
_TOKEN = re.compile(r"\bapp_jobs\b")


def _load() -> dict[str, str]:
    text = resources.files("sqla_pgjobs").joinpath("sql", "worker.sql").read_text("utf-8")
    parts = _NAME.split(text)
    names, bodies = parts[1::2], parts[2::2]
    return {name: body.strip().rstrip(";") for name, body in zip(names, bodies, strict=True)}


@dataclass(frozen=True)
class Queries:
    """The worker's statements for one schema name, ready for psycopg."""

    get_jobs: str
    complete_jobs: str
    fail_jobs: str
    heartbeat: str
    next_run_at: str
    release_jobs: str

    @classmethod
    def for_schema(cls, schema: str = DEFAULT_SCHEMA) -> Queries:
        # psycopg reads % as the start of a placeholder: a % in the schema name is doubled.
        identifier = quote_schema(schema).replace("%", "%%")
        return cls(**{name: _TOKEN.sub(lambda _: identifier, sql) for name, sql in _load().items()})
