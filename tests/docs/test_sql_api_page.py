"""docs/sql-api.md documents every function of the job schema, with its real parameters.

The page's signature tables are compared with the catalog of an installed schema: a
function added, removed or changed in the SQL fails here until the page follows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import text

from tests.docs.snippets import ROOT
from tests.helpers import SCHEMA

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# Helpers the public functions and triggers call; not part of the API.
INTERNAL = {
    "add_job_from_trigger",
    "alive_until",
    "as_finished",
    "assert_interval",
    "assert_positive",
    "assert_row_json_trusted",
    "assert_worker_id",
    "change_access",
    "do_notify",
    "end_cancelled",
    "json_build_object_apply",
    "lock_is_held",
    "record_history",
    "remove_jobs",
    "set_paused",
    "tg_add_job",  # documented in docs/triggers.md: what declared triggers execute
    "tg_decrease_job_queue_count",
    "tg_increase_job_queue_count",
    "tg_reset_job_queue_counts",
    "tg_update_timestamps",
    "trigger_job_arguments",
    "trigger_template",
}

_DOCUMENTED = re.compile(r"^\|\s*`(?P<name>\w+)\((?P<args>[^`]*)\)`", re.MULTILINE)
_TYPES = {
    "int": "integer",
    "int[]": "integer[]",
    "timestamptz": "timestamp with time zone",
    "timestamptz[]": "timestamp with time zone[]",
}


def _parameters(arguments: str) -> list[tuple[str, str]]:
    """``name type [= default | DEFAULT default]`` items as (name, type) pairs."""
    found = []
    for item in re.split(r",\s*(?=\w+ )", arguments.strip()) if arguments.strip() else []:
        item = re.split(r"\s+(?:=|DEFAULT)\s+", item, maxsplit=1)[0].strip()
        mode, item = ("OUT ", item[4:]) if item.startswith("OUT ") else ("", item)
        name, type_ = item.split(" ", 1)
        type_ = re.sub(r"^.*\.", "", type_)  # app_jobs.jobs[] (any schema name): jobs[]
        found.append((mode + name, _TYPES.get(type_, type_)))
    return found


def test_every_function_is_documented_with_its_parameters(engine: Engine) -> None:
    page = (ROOT / "docs" / "sql-api.md").read_text(encoding="utf-8")
    documented = {match["name"]: _parameters(match["args"]) for match in _DOCUMENTED.finditer(page)}
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT p.proname, pg_get_function_arguments(p.oid) FROM pg_proc p "
                "WHERE p.pronamespace = CAST(:schema AS regnamespace) ORDER BY 1"
            ),
            {"schema": '"' + SCHEMA.replace('"', '""') + '"'},
        ).all()
    actual = {name: _parameters(arguments) for name, arguments in rows if name not in INTERNAL}
    assert sorted(set(actual) - set(documented)) == [], "functions missing from docs/sql-api.md"
    assert sorted(set(documented) - set(actual)) == [], "docs/sql-api.md names no such function"
    for name, parameters in actual.items():
        assert documented[name] == parameters, f"{name}: docs/sql-api.md differs from the SQL"
