"""Fixtures of the worker tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.worker.test_processes import OwnPostgres

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A throwaway cluster this test may restart; stopped and removed even on failure."""
    server = OwnPostgres()
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.destroy()
