"""Migrations: installing, upgrading and dropping the job schema, and the Alembic operations."""
