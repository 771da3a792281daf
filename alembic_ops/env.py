"""Alembic environment for the job schema.

The one line a project needs in its own env.py is the import of sqla_pgjobs.alembic;
keep ``dialect_opts={"paramstyle": "named"}`` in offline mode (Alembic's default template
has it): without it, ``--sql`` output doubles every ``%`` in the function bodies.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

import sqla_pgjobs.alembic  # noqa: F401  (registers op.create_pgjobs_schema and friends)
from sqla_pgjobs.database import sqlalchemy_url

config = context.config
target_metadata = None


def database_url() -> str | None:
    return os.environ.get("PGJOBS_DATABASE_URL") or config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=sqlalchemy_url(url) if url else None,
        dialect_name=None if url else "postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A caller (tests, pgjobs) may hand over its own connection.
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return

    url = database_url()
    if not url:
        raise SystemExit(
            "No database URL: set PGJOBS_DATABASE_URL or sqlalchemy.url in alembic.ini "
            "(or use --sql to print the migration without a database)."
        )
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
