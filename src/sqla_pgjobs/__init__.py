"""sqla-pgjobs: PostgreSQL-native background jobs for SQLAlchemy 2 and Alembic.

Importing this package changes nothing global: no event listeners, no Alembic ops. Import
:mod:`sqla_pgjobs.alembic` in an Alembic ``env.py`` to register the ops.
"""

from __future__ import annotations

from sqla_pgjobs._version import __version__
from sqla_pgjobs.errors import PgJobsError, SchemaNameError, SchemaVersionError
from sqla_pgjobs.schema import DEFAULT_SCHEMA, LATEST_VERSION

__all__ = [
    "DEFAULT_SCHEMA",
    "LATEST_VERSION",
    "PgJobsError",
    "SchemaNameError",
    "SchemaVersionError",
    "__version__",
]
