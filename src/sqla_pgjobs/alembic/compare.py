"""Autogenerate for enqueue triggers: what models declare against what the database has.

For each table Alembic compares, the job triggers declared on the model
(:func:`sqla_pgjobs.triggers.job_triggers`) are matched by name with the triggers in the
database that execute the job schema's ``tg_add_job``:

- declared, not in the database: ``op.create_job_trigger``;
- in the database, no longer declared: ``op.drop_job_trigger`` (with the whole trigger as
  the database has it, so the downgrade can create it again);
- in both, defined differently: drop, then create.

Definitions are compared as PostgreSQL itself prints them (``pg_get_triggerdef``): the
declared trigger is created under a savepoint, read back and rolled back, so that
formatting, casts and quoting never count as changes. Triggers that do not execute
``tg_add_job`` (your own, or ones written by hand with the seed's ``tg_add_job_with_*``)
are left alone.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alembic.autogenerate import comparators
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from sqla_pgjobs.alembic.ops import CreateJobTriggerOp, DropJobTriggerOp
from sqla_pgjobs.schema import as_text
from sqla_pgjobs.triggers import EVENTS, JobTrigger, create_trigger_sql, job_triggers

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.operations.ops import ModifyTableOps
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

__all__ = ["compare_job_triggers"]

# pg_trigger.tgtype bits (src/include/catalog/pg_trigger.h).
_TYPE_BITS = {"insert": 1 << 2, "delete": 1 << 3, "update": 1 << 4}

_EXISTING = text(
    """
    SELECT t.tgname AS name,
           pg_catalog.pg_get_triggerdef(t.oid) AS definition,
           t.tgargs AS args,
           t.tgtype AS type,
           t.tgqual IS NOT NULL AS has_when,
           ARRAY(SELECT a.attname FROM pg_catalog.unnest(t.tgattr) AS k(attnum)
                   JOIN pg_catalog.pg_attribute a
                     ON a.attrelid = t.tgrelid AND a.attnum = k.attnum) AS update_columns,
           fn.nspname AS job_schema,
           pg_catalog.quote_ident(t.tgname) AS quoted_name
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
     WHERE NOT t.tgisinternal
       AND c.relname = :table_name
       AND n.nspname = coalesce(:schema, pg_catalog.current_schema())
       AND p.proname = 'tg_add_job'
       AND t.tgnargs = 1
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_class m
                    WHERE m.relnamespace = p.pronamespace AND m.relname = 'migrations')
    """
)


@dataclass(frozen=True)
class _Existing:
    trigger: JobTrigger
    body: str  # pg_get_triggerdef without "CREATE TRIGGER <name> "


def _body(definition: str, quoted_name: str) -> str:
    prefix = f"CREATE TRIGGER {quoted_name} "
    return definition[len(prefix) :] if definition.startswith(prefix) else definition


def _when(definition: str, has_when: bool) -> str | None:
    """The WHEN condition of a trigger definition printed by pg_get_triggerdef, whose shape
    is fixed: ``... FOR EACH ROW WHEN (<condition>) EXECUTE FUNCTION ...``."""
    if not has_when:
        return None
    start = definition.index(" WHEN (") + len(" WHEN (")
    end = definition.rindex(") EXECUTE FUNCTION ")
    return definition[start:end]


def _existing(connection: Connection, schema: str | None, table_name: str) -> dict[str, _Existing]:
    found = {}
    for row in connection.execute(_EXISTING, {"table_name": table_name, "schema": schema}):
        try:
            spec: dict[str, Any] = json.loads(bytes(row.args).split(b"\x00")[0].decode())
            trigger = JobTrigger.from_catalog(
                name=row.name,
                spec=spec,
                on=[event for event in EVENTS if row.type & _TYPE_BITS[event]],
                update_columns=list(row.update_columns),
                when=_when(row.definition, row.has_when),
                job_schema=row.job_schema,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a trigger of someone else's tg_add_job: not ours to manage
        found[row.name] = _Existing(trigger, _body(row.definition, row.quoted_name))
    return found


def _declared_body(
    connection: Connection, trigger: JobTrigger, table_name: str, schema: str | None
) -> str | None:
    """The declared trigger as PostgreSQL prints it, or None if it cannot be created as is
    (for instance its WHEN names a column this revision adds)."""
    temporary = f"pgjobs_autogenerate_{uuid.uuid4().hex[:12]}"
    probe = JobTrigger.from_catalog(
        name=temporary,
        spec=trigger.spec(),
        on=trigger._options.on,
        update_columns=trigger._options.update_columns,
        when=trigger._options.when,
        job_schema=trigger.job_schema,
    )
    savepoint = connection.begin_nested()
    try:
        connection.execute(as_text(create_trigger_sql(probe, table_name, schema)))
        definition = connection.execute(
            text(
                "SELECT pg_catalog.pg_get_triggerdef(t.oid) FROM pg_catalog.pg_trigger t"
                " WHERE t.tgname = :name"
            ),
            {"name": temporary},
        ).scalar_one()
    except DBAPIError:
        return None
    finally:
        savepoint.rollback()
    return _body(definition, temporary)


@comparators.dispatch_for("table")
def compare_job_triggers(
    autogen_context: AutogenContext,
    modify_table_ops: ModifyTableOps,
    schema: str | None,
    table_name: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> None:
    connection = autogen_context.connection
    declared = (
        {t.name: t for t in job_triggers(metadata_table)} if metadata_table is not None else {}
    )
    existing = (
        _existing(connection, schema, table_name)
        if conn_table is not None and connection is not None
        else {}
    )
    for name, trigger in declared.items():
        current = existing.get(name)
        if current is None:
            modify_table_ops.ops.append(CreateJobTriggerOp(table_name, trigger, schema))
            continue
        assert connection is not None
        if _declared_body(connection, trigger, table_name, schema) != current.body:
            modify_table_ops.ops.append(DropJobTriggerOp(table_name, current.trigger, schema))
            modify_table_ops.ops.append(CreateJobTriggerOp(table_name, trigger, schema))
    for name, current in existing.items():
        if name not in declared:
            modify_table_ops.ops.append(DropJobTriggerOp(table_name, current.trigger, schema))
