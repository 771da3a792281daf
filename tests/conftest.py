"""The test bed: a real PostgreSQL, a template database with the job schema, one database per test.

Set PGJOBS_TEST_DATABASE_URL to use a server of your own; otherwise Docker or the embedded
server is used (see sqla_pgjobs.testing). PGJOBS_TEST_SCHEMA runs the suite with the job
schema under another name.
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from sqlalchemy import create_engine

from sqla_pgjobs import schema as schema_module
from sqla_pgjobs.testing import (
    create_database,
    drop_database,
    unique_database_name,
)
from sqla_pgjobs.testing import template_database as testing_template
from tests.helpers import SCHEMA, translated
from tests.roles import role_maker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import URL, Engine

    from sqla_pgjobs import Worker
    from tests.roles import Role


# Hypothesis (tests/security/test_hostile_input.py, tests/security/test_attacks.py): bounded
# examples and a deadline per example. CI (CI=true) runs the suite three times on 2 cores:
# fewer examples, the same ones every run (derandomize), no example database.
# HYPOTHESIS_PROFILE=thorough explores ten times more, to hunt bugs by hand.
settings.register_profile("dev", max_examples=100, deadline=timedelta(seconds=5))
settings.register_profile(
    "ci", max_examples=50, deadline=timedelta(seconds=10), derandomize=True, database=None
)
settings.register_profile("thorough", max_examples=1000, deadline=timedelta(seconds=10))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def server_url(pgjobs_server_url: URL) -> URL:
    """The plugin's server (sqla_pgjobs.pytest_plugin): one per session for all fixtures."""
    return pgjobs_server_url


@pytest.fixture(scope="session")
def schema_name() -> str:
    return SCHEMA


@pytest.fixture(scope="session")
def template_database(server_url: URL) -> Iterator[str]:
    """Like the plugin's pgjobs_template, with the job schema under the suite's name."""
    with testing_template(server_url, SCHEMA) as name:
        yield name


@pytest.fixture
def new_database(server_url: URL) -> Iterator[Callable[..., URL]]:
    """Make fresh databases (empty, or copies of a template); all are dropped afterwards."""
    names: list[str] = []

    def make(template: str | None = None) -> URL:
        names.append(unique_database_name())
        return create_database(server_url, names[-1], template=template)

    yield make
    for name in names:
        drop_database(server_url, name)


@pytest.fixture
def database_url(new_database: Callable[..., URL], template_database: str) -> URL:
    """A fresh database with the job schema installed."""
    return new_database(template_database)


@pytest.fixture
def empty_database_url(new_database: Callable[..., URL]) -> URL:
    """A fresh database without the job schema."""
    return new_database()


@pytest.fixture
def empty_engine(empty_database_url: URL) -> Iterator[Engine]:
    engine = create_engine(empty_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def jobs_engine(engine: Engine) -> Engine:
    """``engine`` with the job tables and wrappers on this run's schema (disposed with it)."""
    return translated(engine)


@pytest.fixture
def make_role(engine: Engine) -> Iterator[Callable[..., Role]]:
    """Make login roles with unique names (``make_role(prefix)``); each is dropped, with what
    it owns, afterwards."""
    with role_maker(engine) as make:
        yield make


FAKE_UPGRADE = """
DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(7064106277914394624); END $$;
DO $$
BEGIN
  IF (SELECT max(version) FROM app_jobs.migrations) IS DISTINCT FROM 2 THEN
    RAISE EXCEPTION 'the job schema is not at version 2' USING ERRCODE = '55000';
  END IF;
END $$;
ALTER TABLE app_jobs.jobs ADD COLUMN note text;
CREATE FUNCTION app_jobs.hello() RETURNS text LANGUAGE sql AS $$ SELECT 'hi' $$;
REVOKE ALL ON FUNCTION app_jobs.hello() FROM PUBLIC;
INSERT INTO app_jobs.migrations (version) VALUES (3);
"""
FAKE_DOWNGRADE = """
DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(7064106277914394624); END $$;
DROP FUNCTION app_jobs.hello();
ALTER TABLE app_jobs.jobs DROP COLUMN note;
DELETE FROM app_jobs.migrations WHERE version = 3;
"""


@pytest.fixture
def fake_version_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the library knows a schema version 3 (one past the real latest, 2), to
    exercise the upgrade machinery without the real step files.

    Its upgrade file follows the convention every real one must: take the migration lock,
    check the installed version, change things, revoke from PUBLIC, record the version.
    """
    real_read = schema_module._read
    files = {"upgrade_v2_to_v3.sql": FAKE_UPGRADE, "downgrade_v3_to_v2.sql": FAKE_DOWNGRADE}
    monkeypatch.setattr(schema_module, "LATEST_VERSION", 3)
    monkeypatch.setattr(schema_module, "_read", lambda name: files.get(name) or real_read(name))


@pytest.fixture
def background() -> Iterator[Callable[[Worker], threading.Thread]]:
    """Run workers in threads; stop and join them all afterwards."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(worker: Worker) -> threading.Thread:
        thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
        thread.start()
        started.append((worker, thread))
        return thread

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()
