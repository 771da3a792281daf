"""Enqueue triggers declared on tables and models.

A job is enqueued by the database itself, in the transaction that writes the row, whoever
writes it (the ORM, raw SQL, another service)::

    class Order(Base):
        __tablename__ = "orders"
        __table_args__ = (
            JobTrigger("ship_order", on=("update",), update_columns=("status",),
                       when="NEW.status = 'paid' AND OLD.status IS DISTINCT FROM 'paid'",
                       payload=RowId(), key="order:{id}"),
        )

``metadata.create_all()`` creates the trigger after its table and ``drop_all()`` drops it;
in migrations, ``op.create_job_trigger("orders", JobTrigger(...))`` and autogenerate (see
:mod:`sqla_pgjobs.alembic`). Every trigger executes ``app_jobs.tg_add_job`` with one JSON
argument compiled from the options here: row values are never spliced into SQL.

Templates (``key``, ``queue``, ``tenant``) are text with ``{column}`` placeholders, filled
with the row's values as text; ``{{`` and ``}}`` stand for braces.
"""

from __future__ import annotations

import json
import re
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event
from sqlalchemy.sql.schema import SchemaItem

from sqla_pgjobs import validation as check
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.schema import (
    DEFAULT_SCHEMA,
    as_text,
    quote_identifier,
    quote_literal,
    quote_schema,
    validate_schema_name,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.engine import Connection

__all__ = [
    "EVENTS",
    "Fields",
    "JobTrigger",
    "Row",
    "RowId",
    "create_trigger_sql",
    "drop_trigger_sql",
    "job_triggers",
]

EVENTS = ("insert", "update", "delete")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}|[{}]")


@dataclass(frozen=True)
class RowId:
    """Payload ``{"id": <column>}`` (the seed's ``tg_add_job_with_row_id``)."""

    column: str = "id"

    def spec(self) -> dict[str, Any]:
        return {"kind": "row_id", "column": self.column}

    def __repr__(self) -> str:
        return "RowId()" if self.column == "id" else f"RowId({self.column!r})"


@dataclass(frozen=True)
class Row:
    """Payload: the whole row as JSON (the seed's ``tg_add_job_with_row``)."""

    def spec(self) -> dict[str, Any]:
        return {"kind": "row"}

    def __repr__(self) -> str:
        return "Row()"


@dataclass(frozen=True, init=False)
class Fields:
    """Payload ``{"<column>": value, ...}`` for the named columns, values keeping their
    JSON types (the seed's ``tg_add_job_with_fields``)."""

    columns: tuple[str, ...]

    def __init__(self, *columns: str) -> None:
        if not columns:
            raise InvalidArgumentError("columns", columns, "Fields needs at least one column")
        for column in columns:
            check.check_name("columns", column)
        object.__setattr__(self, "columns", tuple(columns))

    def spec(self) -> dict[str, Any]:
        return {"kind": "fields", "columns": list(self.columns)}

    def __repr__(self) -> str:
        return f"Fields({', '.join(repr(c) for c in self.columns)})"


Payload = RowId | Row | Fields


def _seconds(delay: timedelta) -> str:
    """A delay as exact decimal seconds (``{:g}`` would print 1.2096e+06 for two weeks,
    which PostgreSQL does not read as an interval, and round 12345.678 to 12345.7)."""
    whole = delay.days * 86400 + delay.seconds
    if not delay.microseconds:
        return str(whole)
    return f"{whole}.{delay.microseconds:06d}".rstrip("0")


def _delay(text: str) -> timedelta:
    whole, _, fraction = text.split()[0].partition(".")
    return timedelta(seconds=int(whole), microseconds=int(fraction.ljust(6, "0")[:6] or 0))


def _template(argument: str, text: str | None) -> list[dict[str, str]] | None:
    """``"order:{id}"`` as ``[{"text": "order:"}, {"column": "id"}]``."""
    if text is None:
        return None
    check.check_text(argument, text, optional=False)
    parts: list[dict[str, str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append({"text": text[position : match.start()]})
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append({"text": token[0]})
        elif match.group(1) is not None:
            parts.append({"column": match.group(1)})
        else:
            raise InvalidArgumentError(
                argument, text, "a lone brace: write {column} for a value, {{ or }} for a brace"
            )
        position = match.end()
    if position < len(text):
        parts.append({"text": text[position:]})
    # Adjacent texts merge, so that equal templates compile to equal specs.
    merged: list[dict[str, str]] = []
    for part in parts:
        if merged and "text" in part and "text" in merged[-1]:
            merged[-1] = {"text": merged[-1]["text"] + part["text"]}
        else:
            merged.append(part)
    return merged


def _untemplate(parts: list[dict[str, str]] | None) -> str | None:
    if parts is None:
        return None
    return "".join(
        p["text"].replace("{", "{{").replace("}", "}}") if "text" in p else "{" + p["column"] + "}"
        for p in parts
    )


def _tenant(value: uuid.UUID | str | None) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return [{"text": str(value)}]
    parts = _template("tenant", value)
    assert parts is not None
    if all("text" in p for p in parts):
        try:
            return [{"text": str(uuid.UUID("".join(p["text"] for p in parts)))}]
        except ValueError:
            raise InvalidArgumentError(
                "tenant",
                value,
                "it must be a UUID, or a template naming the column holding "
                "it, such as '{tenant_id}'",
            ) from None
    return parts


@dataclass(frozen=True, eq=False, repr=False)
class _Options:
    task: str
    on: tuple[str, ...]
    update_columns: tuple[str, ...]
    payload: Payload
    name: str
    when: str | None
    tenant: list[dict[str, str]] | None
    key: list[dict[str, str]] | None
    queue: list[dict[str, str]] | None
    priority: int | None
    max_attempts: int | None
    delay: timedelta | None
    job_schema: str = field(default=DEFAULT_SCHEMA)


class JobTrigger(SchemaItem):
    """An enqueue trigger, declared in ``__table_args__`` or in ``Table(...)``.

    :param task: the task of the jobs it enqueues.
    :param on: the row events: any of ``"insert"``, ``"update"``, ``"delete"``.
    :param update_columns: with ``"update"``: only updates that set these columns.
    :param payload: :class:`RowId` (default), :class:`Row` or :class:`Fields`.
    :param when: a SQL condition on ``NEW`` and ``OLD`` (a trigger ``WHEN``), e.g.
        ``"NEW.status = 'paid' AND OLD.status IS DISTINCT FROM 'paid'"``.
    :param key: a job key template: bursts of changes to one row make one pending job.
    :param queue: a queue template: jobs of one queue run one at a time.
    :param tenant: the tenant (``database_id``): a UUID, or a template such as ``"{tenant_id}"``.
    :param priority, max_attempts: as for ``add_job``.
    :param delay: run the job this long after the change.
    :param name: the trigger's name (default ``pgjobs_<task>``; unique per table).
    :param job_schema: where the job schema is installed.
    """

    __visit_name__ = "pgjobs_job_trigger"

    def __init__(
        self,
        task: str,
        *,
        on: Iterable[str] = ("insert",),
        update_columns: Iterable[str] = (),
        payload: Payload | None = None,
        when: str | None = None,
        key: str | None = None,
        queue: str | None = None,
        tenant: uuid.UUID | str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        delay: timedelta | None = None,
        name: str | None = None,
        job_schema: str = DEFAULT_SCHEMA,
    ) -> None:
        task = str(check.check_name("task", task))
        events = tuple(on) if not isinstance(on, str) else (on,)
        if not events or not set(events) <= set(EVENTS) or len(set(events)) != len(events):
            raise InvalidArgumentError(
                "on", on, f"it must be some of {', '.join(EVENTS)}, each once"
            )
        events = tuple(e for e in EVENTS if e in events)
        columns = (
            tuple(update_columns) if not isinstance(update_columns, str) else (update_columns,)
        )
        if columns and "update" not in events:
            raise InvalidArgumentError("update_columns", update_columns, 'it needs "update" in on')
        for column in columns:
            check.check_name("update_columns", column)
        payload = payload if payload is not None else RowId()
        if not isinstance(payload, RowId | Row | Fields):
            raise InvalidArgumentError(
                "payload", payload, "it must be RowId(), Row() or Fields(...)"
            )
        name = check.check_identifier("name", name if name is not None else f"pgjobs_{task}")
        if when is not None:
            check.check_text("when", when, optional=False)
            if not when.strip():
                raise InvalidArgumentError("when", when, "it must be a SQL condition, or None")
        if delay is not None:
            check.check_interval("delay", delay)
        self._options = _Options(
            task=task,
            on=events,
            update_columns=columns,
            payload=payload,
            name=name,
            when=when,
            tenant=_tenant(tenant),
            key=_template("key", key),
            queue=_template("queue", queue),
            priority=check.check_priority("priority", priority),
            max_attempts=check.check_positive("max_attempts", max_attempts),
            delay=delay,
            job_schema=validate_schema_name(job_schema),
        )
        self._table: weakref.ref[Table] | None = None

    # --- What it is -----------------------------------------------------------------------------

    @property
    def table(self) -> Table | None:
        """The table this trigger is declared on (None before it is attached)."""
        return self._table() if self._table is not None else None

    @property
    def name(self) -> str:
        return self._options.name

    @property
    def task(self) -> str:
        return self._options.task

    @property
    def job_schema(self) -> str:
        return self._options.job_schema

    def spec(self) -> dict[str, Any]:
        """The JSON argument of ``app_jobs.tg_add_job``."""
        o = self._options
        return {
            "task": o.task,
            "payload": o.payload.spec(),
            "tenant": o.tenant,
            "key": o.key,
            "queue": o.queue,
            "priority": o.priority,
            "max_attempts": o.max_attempts,
            "delay": None if o.delay is None else f"{_seconds(o.delay)} seconds",
        }

    def spec_json(self) -> str:
        return json.dumps(self.spec(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_catalog(
        cls,
        *,
        name: str,
        spec: dict[str, Any],
        on: Iterable[str],
        update_columns: Iterable[str],
        when: str | None,
        job_schema: str,
    ) -> JobTrigger:
        """The trigger as it is in a database (for autogenerate's reverse operations)."""
        payload_spec = spec["payload"]
        payload: Payload
        if payload_spec["kind"] == "row":
            payload = Row()
        elif payload_spec["kind"] == "fields":
            payload = Fields(*payload_spec["columns"])
        else:
            payload = RowId(payload_spec.get("column", "id"))
        delay = spec.get("delay")
        return cls(
            spec["task"],
            on=on,
            update_columns=update_columns,
            payload=payload,
            when=when,
            key=_untemplate(spec.get("key")),
            queue=_untemplate(spec.get("queue")),
            tenant=_untemplate(spec.get("tenant")),
            priority=spec.get("priority"),
            max_attempts=spec.get("max_attempts"),
            delay=None if delay is None else _delay(delay),
            name=name,
            job_schema=job_schema,
        )

    def _key(self) -> tuple[Any, ...]:
        o = self._options
        return (o.name, o.on, o.update_columns, self.spec_json(), o.when, o.job_schema)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobTrigger) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        """Python that builds this trigger again (autogenerate writes it into revisions)."""
        o = self._options
        args = [repr(o.task)]
        if o.on != ("insert",):
            args.append(f"on={o.on!r}")
        if o.update_columns:
            args.append(f"update_columns={o.update_columns!r}")
        if o.payload != RowId():
            args.append(f"payload={o.payload!r}")
        for label, value in (
            ("when", o.when),
            ("key", _untemplate(o.key)),
            ("queue", _untemplate(o.queue)),
            ("tenant", _untemplate(o.tenant)),
            ("priority", o.priority),
            ("max_attempts", o.max_attempts),
        ):
            if value is not None:
                args.append(f"{label}={value!r}")
        if o.delay is not None:
            args.append(f"delay=timedelta(seconds={_seconds(o.delay)})")
        if o.name != f"pgjobs_{o.task}":
            args.append(f"name={o.name!r}")
        if o.job_schema != DEFAULT_SCHEMA:
            args.append(f"job_schema={o.job_schema!r}")
        return f"JobTrigger({', '.join(args)})"

    # --- Attached to a table ----------------------------------------------------------------------

    def _set_parent(self, parent: Any, **kw: Any) -> None:
        if not isinstance(parent, Table):
            raise InvalidArgumentError("parent", parent, "a JobTrigger belongs to a Table")
        declared = _TRIGGERS.setdefault(parent, [])
        if any(other.name == self.name for other in declared):
            raise InvalidArgumentError(
                "name", self.name, f"it must be unique among the job triggers of {parent.name}"
            )
        declared.append(self)
        # A weak reference: the registry's values must not keep its keys (the tables) alive.
        self._table = weakref.ref(parent)
        # Listeners on this one Table: create_all/drop_all create and drop the trigger.
        event.listen(parent, "after_create", self._after_create)
        event.listen(parent, "before_drop", self._before_drop)

    def _after_create(self, table: Table, connection: Connection, **kw: Any) -> None:
        connection.execute(as_text(create_trigger_sql(self, table.name, table.schema)))

    def _before_drop(self, table: Table, connection: Connection, **kw: Any) -> None:
        connection.execute(as_text(drop_trigger_sql(self.name, table.name, table.schema)))


# The triggers declared on each Table. Plain data, not a listener: Table.info would be
# copied into autogenerated create_table() calls, where these objects do not belong.
_TRIGGERS: weakref.WeakKeyDictionary[Table, list[JobTrigger]] = weakref.WeakKeyDictionary()


def job_triggers(table: Table) -> list[JobTrigger]:
    """The job triggers declared on ``table``."""
    return list(_TRIGGERS.get(table, ()))


def _table(table_name: str, schema: str | None) -> str:
    return (quote_identifier(schema) + "." if schema else "") + quote_identifier(table_name)


def create_trigger_sql(trigger: JobTrigger, table_name: str, schema: str | None = None) -> str:
    """``CREATE TRIGGER`` for ``trigger`` on ``schema.table_name``."""
    o = trigger._options
    events = []
    for e in o.on:
        if e == "update" and o.update_columns:
            events.append("UPDATE OF " + ", ".join(quote_identifier(c) for c in o.update_columns))
        else:
            events.append(e.upper())
    when = f" WHEN ({o.when})" if o.when else ""
    spec = quote_literal(trigger.spec_json())
    return (
        f"CREATE TRIGGER {quote_identifier(o.name)} AFTER {' OR '.join(events)} "
        f"ON {_table(table_name, schema)} FOR EACH ROW{when} "
        f"EXECUTE FUNCTION {quote_schema(o.job_schema)}.tg_add_job({spec})"
    )


def drop_trigger_sql(name: str, table_name: str, schema: str | None = None) -> str:
    """``DROP TRIGGER`` for the trigger ``name`` on ``schema.table_name``."""
    return f"DROP TRIGGER IF EXISTS {quote_identifier(name)} ON {_table(table_name, schema)}"
