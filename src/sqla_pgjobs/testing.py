"""A real PostgreSQL for tests, with no configuration.

:func:`postgres_server` finds a server in this order:

1. the SQLAlchemy URL in ``PGJOBS_TEST_DATABASE_URL`` (a CI service, your own server);
2. a throwaway container, when the ``testcontainers`` package is installed and a Docker
   daemon answers (``PGJOBS_TEST_DOCKER=0`` turns this off);
3. the embedded PostgreSQL 16 of the pip package ``pgserver`` (``sqla-pgjobs[testing]``;
   wheels for CPython 3.11 and 3.12), started in a temporary directory.

Each test then gets a database of its own, cloned from a template that has the job schema
installed (:func:`create_database` with ``template=``), which costs about 0.1 s.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from sqla_pgjobs.errors import PgJobsError
from sqla_pgjobs.urls import sqlalchemy_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL

__all__ = [
    "NoPostgresError",
    "create_database",
    "drop_database",
    "embedded_postgres",
    "postgres_server",
    "unique_database_name",
]

URL_VARIABLE = "PGJOBS_TEST_DATABASE_URL"
DOCKER_VARIABLE = "PGJOBS_TEST_DOCKER"


class NoPostgresError(PgJobsError):
    """No way to get a PostgreSQL server for the tests was found."""


@contextlib.contextmanager
def postgres_server() -> Iterator[URL]:
    """Yield the URL of a PostgreSQL server's maintenance database (see the module doc)."""
    if configured := os.environ.get(URL_VARIABLE):
        yield sqlalchemy_url(configured)
        return
    if os.environ.get(DOCKER_VARIABLE, "auto") != "0" and _docker_answers():
        with _container() as container_url:
            yield container_url
        return
    with embedded_postgres() as embedded_url:
        yield embedded_url


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker
    except ImportError:
        return False
    try:
        # A fixed API version: "auto" asks the daemon first and leaks the socket on failure.
        client = docker.from_env(timeout=2, version="1.41")
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _container() -> Iterator[URL]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before 4.14
        from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
        yield sqlalchemy_url(container.get_connection_url())


@contextlib.contextmanager
def embedded_postgres() -> Iterator[URL]:
    """Start the embedded PostgreSQL 16 of ``pgserver`` in a temporary directory; yield the
    URL of its maintenance database; stop it and remove the directory afterwards."""
    try:
        import pgserver
    except ImportError as exc:
        raise NoPostgresError(
            f"no PostgreSQL for the tests: {URL_VARIABLE} is not set, no Docker daemon "
            "answers, and the embedded server is not installed "
            "(pip install 'sqla-pgjobs[testing]'; pgserver has wheels for Python 3.11 and 3.12)"
        ) from exc
    data_directory = tempfile.mkdtemp(prefix="pgjobs-test-")
    server = pgserver.get_server(data_directory, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        yield sqlalchemy_url(server.get_uri())
    finally:
        server.cleanup()


def unique_database_name(prefix: str = "pgjobs_test") -> str:
    """A database name no other test run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _with_database(server_url: URL, name: str) -> URL:
    return server_url.set(database=name)


def create_database(server_url: URL, name: str, template: str | None = None) -> URL:
    """Create database ``name`` on the server (optionally as a copy of ``template``)."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            statement = f'CREATE DATABASE "{name}"'
            if template is not None:
                statement += f' TEMPLATE "{template}"'
            connection.execute(text(statement))
    finally:
        engine.dispose()
    return _with_database(server_url, name)


def drop_database(server_url: URL, name: str) -> None:
    """Drop database ``name``, disconnecting anyone still in it."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
