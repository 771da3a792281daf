"""Database URLs as users write them, turned into SQLAlchemy URLs for psycopg 3."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

__all__ = ["sqlalchemy_url"]

# libpq-style schemes and SQLAlchemy's driverless PostgreSQL name (which means psycopg2).
_PLAIN_SCHEMES = {"postgres", "postgresql"}


def sqlalchemy_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver when it names none.

    ``postgres://`` and ``postgresql://`` (what libpq, Heroku and most tools print) become
    ``postgresql+psycopg://``; a URL that names a driver is returned unchanged.
    """
    parsed = make_url(url)
    if parsed.drivername in _PLAIN_SCHEMES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed
