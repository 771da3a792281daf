"""pytest fixtures for applications that use sqla-pgjobs (registered automatically when
the package is installed; they start nothing until a test asks for one).

- ``pgjobs_server_url``: a PostgreSQL server for the session, found as
  :func:`sqla_pgjobs.testing.postgres_server` finds it (``PGJOBS_TEST_DATABASE_URL``, Docker,
  else the embedded server of ``sqla-pgjobs[testing]``);
- ``pgjobs_schema``: the job schema's name (override it in your conftest.py);
- ``pgjobs_database_url`` / ``pgjobs_engine``: a fresh database per test with the job
  schema installed, cloned from a template in about 0.1 s.

With them and the helpers of :mod:`sqla_pgjobs.testing`::

    def test_placing_an_order_sends_a_receipt(pgjobs_engine):
        Base.metadata.create_all(pgjobs_engine)
        with Session(pgjobs_engine) as session, session.begin():
            place_order(session, "ada")
        assert_enqueued(pgjobs_engine, "send_receipt", {"customer": "ada"})
        assert run_jobs(pgjobs_engine, tasks).tasks == ["send_receipt"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sqla_pgjobs.database import create_job_engine
from sqla_pgjobs.schema import DEFAULT_SCHEMA
from sqla_pgjobs.testing import (
    create_database,
    drop_database,
    postgres_server,
    template_database,
    unique_database_name,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL, Engine


@pytest.fixture(scope="session")
def pgjobs_server_url() -> Iterator[URL]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def pgjobs_schema() -> str:
    return DEFAULT_SCHEMA


@pytest.fixture(scope="session")
def pgjobs_template(pgjobs_server_url: URL, pgjobs_schema: str) -> Iterator[str]:
    with template_database(pgjobs_server_url, pgjobs_schema) as name:
        yield name


@pytest.fixture
def pgjobs_database_url(pgjobs_server_url: URL, pgjobs_template: str) -> Iterator[URL]:
    name = unique_database_name()
    yield create_database(pgjobs_server_url, name, template=pgjobs_template)
    drop_database(pgjobs_server_url, name)


@pytest.fixture
def pgjobs_engine(pgjobs_database_url: URL, pgjobs_schema: str) -> Iterator[Engine]:
    engine = create_job_engine(pgjobs_database_url, pgjobs_schema)
    yield engine
    engine.dispose()
