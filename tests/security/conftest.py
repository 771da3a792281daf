"""Fixtures of the security tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@pytest.fixture
def admin(jobs_engine: Engine) -> Engine:
    """The superuser who owns the job schema, with the wrappers' schema translated."""
    return jobs_engine
