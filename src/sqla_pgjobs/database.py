"""Reaching the database: URLs as users write them, the libpq connection string the worker
and the scheduler connect with, and engines whose job tables and functions resolve to the
configured job schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine, make_url

from sqla_pgjobs.schema import DEFAULT_SCHEMA, validate_schema_name

__all__ = [
    "create_job_engine",
    "libpq_url",
    "mapped_schema",
    "on_schema",
    "sqlalchemy_url",
    "translate_map",
]

# libpq-style schemes and SQLAlchemy's driverless PostgreSQL name (which means psycopg2).
_PLAIN_SCHEMES = {"postgres", "postgresql"}


def sqlalchemy_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver when it names none.

    ``postgres://`` and ``postgresql://`` (what libpq, Heroku and most tools print) become
    ``postgresql+psycopg://``; a URL that names a driver is returned unchanged.
    """
    parsed = make_url(url)
    if parsed.drivername in _PLAIN_SCHEMES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def libpq_url(database: str | URL | Engine) -> str:
    """The connection string psycopg (and psql) take, from a URL or an Engine."""
    url = database.url if isinstance(database, Engine) else sqlalchemy_url(database)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def translate_map(schema: str) -> dict[str | None, str | None]:
    """The ``schema_translate_map`` that points the job tables and function wrappers, which
    are written for ``app_jobs``, at ``schema`` (empty for ``app_jobs`` itself)."""
    validate_schema_name(schema)
    return {} if schema == DEFAULT_SCHEMA else {DEFAULT_SCHEMA: schema}


def on_schema(engine: Engine, schema: str) -> Engine:
    """``engine`` with the job tables and function wrappers resolving to ``schema``."""
    mapping = translate_map(schema)
    return engine.execution_options(schema_translate_map=mapping) if mapping else engine


def mapped_schema(connection: Connection) -> str:
    """The job schema's name that ``connection`` maps the job tables to (see
    :func:`on_schema`), for the rare statement that names a table in a string (a
    ``regclass``)."""
    mapping = connection.get_execution_options().get("schema_translate_map") or {}
    return str(mapping.get(DEFAULT_SCHEMA) or DEFAULT_SCHEMA)


def create_job_engine(database: str | URL, schema: str = DEFAULT_SCHEMA, **options: Any) -> Engine:
    """A new engine on ``database`` (psycopg 3 unless the URL names a driver) for the job
    schema ``schema``; ``options`` go to :func:`sqlalchemy.create_engine`."""
    return on_schema(create_engine(sqlalchemy_url(database), **options), schema)
