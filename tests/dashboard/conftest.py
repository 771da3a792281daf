"""Fixtures of the dashboard tests: an app on the test database, and a known workload
(live jobs in every state, finished jobs in the history) to check its pages by."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("starlette", reason="the dashboard extra: pip install -e '.[dashboard]'")

from starlette.testclient import TestClient

from sqla_pgjobs.dashboard import create_app
from tests.dashboard.workload import Workload, make_workload
from tests.helpers import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine
    from starlette.applications import Starlette


@pytest.fixture
def make_client(engine: Engine) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**create_app options)``: a TestClient on a dashboard of the test
    database (its cookies kept between requests, as a browser keeps them)."""
    clients: list[TestClient] = []

    def make(app: Starlette | None = None, **options: object) -> TestClient:
        client = TestClient(app or create_app(engine, schema=SCHEMA, **options))  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def csrf_token(page: str) -> str:
    """The CSRF token in a page's action forms."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no action form"
    return match.group(1)


@pytest.fixture
def workload(jobs_engine: Engine) -> Workload:
    """The known workload (tests/dashboard/workload.py) in the test's database."""
    return make_workload(jobs_engine)
