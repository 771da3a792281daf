"""Install the job schema (version 1) in schema app_jobs.

Revision ID: 0001_install_pgjobs
Revises:
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001_install_pgjobs"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_pgjobs_schema()


def downgrade() -> None:
    op.drop_pgjobs_schema()
