"""Login roles for the tests of privileges and attacks, and the traps an attacking role lays.

Roles are cluster-wide: each has a unique name and is dropped, with what it owns, afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from tests.helpers import translated

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from sqlalchemy.engine import Connection, Engine


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    engine: Engine  # logs in as the role; the wrappers' schema is translated


@contextlib.contextmanager
def role_maker(engine: Engine) -> Iterator[Callable[..., Role]]:
    """The ``make_role`` fixture (tests/conftest.py), for fixtures and tests that make roles
    in a database of their own."""
    made: list[tuple[str, Engine]] = []

    def make(prefix: str = "pgjobs_role_") -> Role:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        with engine.begin() as connection:
            connection.execute(text(f"CREATE ROLE {ident(name)} LOGIN"))
        role_engine = create_engine(engine.url.set(username=name))
        made.append((name, role_engine))
        return Role(name, translated(role_engine))

    yield make
    for name, role_engine in reversed(made):
        role_engine.dispose()
        with engine.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {ident(name)}"))
            connection.execute(text(f"DROP ROLE {ident(name)}"))


def is_superuser(engine: Engine, role: str) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).scalar_one()
        )


def shadow_builtins(
    connection: Connection,
    role: str,
    functions: Iterable[tuple[str, str, str]],
    operators: Iterable[tuple[str, str]] = (),
) -> None:
    """In schema ``evil``: ``functions`` (signature, return type, result) and ``operators``
    (operator, function name) on jsonb and text that shadow built-ins and make ``role`` a
    superuser if they ever run with the rights of the job schema's owner."""
    escalate = f"ALTER ROLE {ident(role)} SUPERUSER"
    for signature, returns, result in functions:
        connection.execute(
            text(
                f"CREATE FUNCTION evil.{signature} RETURNS {returns} LANGUAGE plpgsql AS "
                f"$$ BEGIN EXECUTE '{escalate}'; RETURN {result}; END $$"
            )
        )
    for operator, function in operators:
        connection.execute(
            text(
                f"CREATE OPERATOR evil.{operator} (LEFTARG = jsonb, RIGHTARG = text,"
                f" FUNCTION = evil.{function})"
            )
        )
