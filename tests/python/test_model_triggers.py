"""Enqueue triggers declared on models (``sqla_pgjobs.triggers.JobTrigger``), on a real
PostgreSQL: every option for insert, update and delete; create_all/drop_all; the Alembic
ops online and offline (``--sql`` replayed through psql); autogenerate (added, changed,
removed, foreign triggers ignored); and the safety properties (hostile values, awkward
names, a role that may only write the table).

Every trigger is declared with ``job_schema=SCHEMA`` and jobs are read through
:func:`tests.helpers.sql`, so the suite also runs under PGJOBS_TEST_SCHEMA.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import uuid
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import compare_metadata, render_op_text
from alembic.autogenerate.api import AutogenContext
from alembic.migration import MigrationContext
from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqla_pgjobs import InvalidArgumentError
from sqla_pgjobs.alembic import CreateJobTriggerOp, DropJobTriggerOp
from sqla_pgjobs.triggers import (
    Fields,
    JobTrigger,
    Row,
    RowId,
    create_trigger_sql,
    drop_trigger_sql,
    job_triggers,
)
from tests.helpers import SCHEMA, quote_schema, run_ops, sql
from tests.migrations.test_alembic_extras import STOCK_IMPORT, STOCK_METADATA, STOCK_URL, op_calls
from tests.migrations.test_alembic_ops import IMPORT_LINE, alembic, ok, psql
from tests.roles import Role, is_superuser, shadow_builtins

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy.engine import URL, Connection, Engine

EVENTS = ("insert", "update", "delete")
TENANT_A = "5b720132-17d5-424d-9bcb-ee7b17c13d43"
TENANT_B = "0f6d3a4e-8d0c-4f55-a3b5-2d9b8f1c7e21"

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def trigger(task: str, **options: Any) -> JobTrigger:
    """A JobTrigger in this run's job schema."""
    return JobTrigger(task, job_schema=SCHEMA, **options)


def orders_table(metadata: MetaData, *triggers: JobTrigger, schema: str | None = None) -> Table:
    """The table of the option tests (Core), with columns of most JSON types."""
    return Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("other_id", Integer, nullable=False),
        Column("customer_id", Integer, nullable=False),
        Column("status", Text, nullable=False),
        Column("total", Numeric(10, 2)),
        Column("paid", Boolean),
        Column("tags", ARRAY(Text)),
        Column("note", Text),
        Column("tenant_id", UUID(as_uuid=False)),
        *triggers,
        schema=schema,
    )


def create_orders(engine: Engine, *triggers: JobTrigger) -> Table:
    """A fresh MetaData with the orders table and ``triggers``, created with create_all."""
    metadata = MetaData()
    table = orders_table(metadata, *triggers)
    metadata.create_all(engine)
    return table


def order(order_id: int, **values: Any) -> dict[str, Any]:
    """A row of the orders table: FIRST's values for ``order_id``, with ``values``."""
    return {**FIRST, "id": order_id, "other_id": 100 + order_id, **values}


FIRST: dict[str, Any] = {
    "id": 1,
    "other_id": 101,
    "customer_id": 7,
    "status": "new",
    "total": Decimal("12.50"),
    "paid": False,
    "tags": ["a", "b"],
    "note": None,
    "tenant_id": TENANT_A,
}
CHANGES: dict[str, Any] = {
    "status": "paid",
    "total": Decimal("20.00"),
    "paid": True,
    "tags": [],
    "note": "rush",
}
SECOND = {**FIRST, **CHANGES}
#: The row each event's trigger sees in insert_update_delete: NEW, NEW, OLD.
SEEN = {"insert": FIRST, "update": SECOND, "delete": SECOND}


def insert_update_delete(engine: Engine, table: Table) -> None:
    """One row's life, one transaction per statement: insert FIRST, update to SECOND, delete."""
    with engine.begin() as connection:
        connection.execute(table.insert().values(FIRST))
    with engine.begin() as connection:
        connection.execute(table.update().where(table.c.id == 1).values(CHANGES))
    with engine.begin() as connection:
        connection.execute(table.delete().where(table.c.id == 1))


def execute(engine: Engine, *statements: Any) -> None:
    """Each statement in a transaction of its own (so that each one fires its triggers
    as a separate write would)."""
    for statement in statements:
        with engine.begin() as connection:
            connection.execute(statement)


@dataclass(frozen=True)
class Job:
    task: str
    payload: dict[str, Any]
    tenant: str | None
    queue: str | None
    key: str | None
    priority: int
    max_attempts: int
    #: run_at - created_at: the trigger's delay (created_at is the writer's now()).
    delay: timedelta


def jobs(engine: Engine) -> list[Job]:
    with engine.connect() as connection:
        rows = connection.execute(
            sql(
                "SELECT task_identifier, payload::text, database_id::text, queue_name, key,"
                " priority, max_attempts, run_at - created_at FROM app_jobs.jobs ORDER BY id"
            )
        ).all()
    return [
        Job(r[0], json.loads(r[1], parse_float=Decimal), r[2], r[3], r[4], r[5], r[6], r[7])
        for r in rows
    ]


def queue_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            sql("SELECT queue_name, job_count FROM app_jobs.job_queues ORDER BY 1")
        ).all()
    return {row[0]: row[1] for row in rows}


def trigger_definitions(engine: Engine, schema: str = "public") -> dict[tuple[str, str], str]:
    """``(table, trigger) -> pg_get_triggerdef`` for the user triggers of ``schema``."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE NOT t.tgisinternal AND n.nspname = :schema"
            ),
            {"schema": schema},
        ).all()
    return {(row[0], row[1]): row[2] for row in rows}


def table_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None


def sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def autogenerate_diffs(engine: Engine, metadata: MetaData) -> list[Any]:
    """What ``alembic revision --autogenerate`` would do, as Alembic's diff tuples."""
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


# --------------------------------------------------------------------------------------
# 1. The options, for insert, update and delete
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [None, RowId(), RowId("other_id")], ids=["default", "id", "other"]
)
@pytest.mark.parametrize("event_", EVENTS)
def test_row_id_payload_fires_only_on_its_event_with_defaults(
    engine: Engine, event_: str, payload: RowId | None
) -> None:
    options: dict[str, Any] = {} if payload is None else {"payload": payload}
    table = create_orders(engine, trigger("sync", on=(event_,), **options))
    insert_update_delete(engine, table)
    column = "id" if payload is None else payload.column
    assert jobs(engine) == [
        Job(
            task="sync",
            payload={"id": SEEN[event_][column]},
            tenant=None,
            queue=None,
            key=None,
            priority=0,
            max_attempts=25,
            delay=timedelta(0),
        )
    ]


@pytest.mark.parametrize("event_", EVENTS)
def test_row_payload_is_the_whole_row_new_or_old(engine: Engine, event_: str) -> None:
    table = create_orders(engine, trigger("sync", on=(event_,), payload=Row()))
    insert_update_delete(engine, table)
    [job] = jobs(engine)
    assert list(job.payload) == [column.name for column in table.columns]
    assert job.payload == SEEN[event_]


@pytest.mark.parametrize("event_", EVENTS)
def test_fields_payload_keeps_order_json_types_and_null(engine: Engine, event_: str) -> None:
    columns = ("note", "total", "id", "paid", "tags", "status", "tenant_id")
    table = create_orders(engine, trigger("sync", on=(event_,), payload=Fields(*columns)))
    insert_update_delete(engine, table)
    [job] = jobs(engine)
    seen = SEEN[event_]
    assert list(job.payload.items()) == [(column, seen[column]) for column in columns]
    assert isinstance(job.payload["total"], Decimal)
    assert isinstance(job.payload["paid"], bool)
    assert isinstance(job.payload["tags"], list)
    assert isinstance(job.payload["id"], int)
    if event_ == "insert":
        assert job.payload["note"] is None  # SQL NULL is JSON null, not "" or missing


def test_update_columns_only_updates_setting_those_columns_enqueue(engine: Engine) -> None:
    table = create_orders(
        engine,
        trigger("on_status", on=("insert", "update"), update_columns=("status",)),
    )
    execute(engine, table.insert().values(FIRST))
    assert len(jobs(engine)) == 1  # insert is not limited by update_columns
    execute(
        engine,
        table.update().values(note="not the status"),
        table.update().values(total=Decimal(1), paid=True),
    )
    assert len(jobs(engine)) == 1
    execute(engine, table.update().values(status="paid"), table.delete())
    assert [job.payload for job in jobs(engine)] == [{"id": 1}, {"id": 1}]


WHEN = {
    "insert": "NEW.status = 'paid'",
    "update": "NEW.status = 'paid' AND OLD.status IS DISTINCT FROM 'paid'",
    "delete": "OLD.status = 'paid'",
}
#: The order ids whose event passes WHEN, in the script of the test below.
WHEN_PASSES = {"insert": [2], "update": [1], "delete": [1, 2]}


@pytest.mark.parametrize("event_", EVENTS)
def test_when_condition_filters_rows(engine: Engine, event_: str) -> None:
    table = create_orders(engine, trigger("paid", on=(event_,), when=WHEN[event_]))
    execute(
        engine,
        table.insert().values([order(1), order(2, status="paid"), order(3)]),
        table.update().where(table.c.id == 1).values(status="paid"),  # new -> paid
        table.update().where(table.c.id == 2).values(note="still paid"),  # paid -> paid
        table.update().where(table.c.id == 3).values(status="shipped"),  # new -> shipped
        *(table.delete().where(table.c.id == i) for i in (1, 2, 3)),
    )
    assert [job.payload["id"] for job in jobs(engine)] == WHEN_PASSES[event_]


KEYS = {
    "insert": "customer:{customer_id}",
    "update": "order:{id}",
    "delete": "customer:{customer_id}",
}
#: (key, payload) of the pending jobs after the script of the test below.
KEYED_JOBS = {
    "insert": [
        ("customer:7", {"id": 2, "status": "new"}),
        ("customer:8", {"id": 3, "status": "new"}),
    ],
    "update": [
        ("order:1", {"id": 1, "status": "s3"}),
        ("order:3", {"id": 3, "status": "s1"}),
    ],
    "delete": [
        ("customer:7", {"id": 2, "status": "new"}),
        ("customer:8", {"id": 3, "status": "s1"}),
    ],
}


@pytest.mark.parametrize("event_", EVENTS)
def test_key_coalesces_bursts_into_one_pending_job_per_key(engine: Engine, event_: str) -> None:
    table = create_orders(
        engine,
        trigger("sync", on=(event_,), payload=Fields("id", "status"), key=KEYS[event_]),
    )
    execute(
        engine,
        *(table.insert().values(order(i, customer_id=c)) for i, c in ((1, 7), (2, 7), (3, 8))),
        # Three updates of order 1, one of order 3.
        *(table.update().where(table.c.id == 1).values(status=s) for s in ("s1", "s2", "s3")),
        table.update().where(table.c.id == 3).values(status="s1"),
        *(table.delete().where(table.c.id == i) for i in (1, 2, 3)),
    )
    assert [(job.key, job.payload) for job in jobs(engine)] == KEYED_JOBS[event_]


@pytest.mark.parametrize("event_", EVENTS)
def test_queue_template_sets_the_queue_name_from_the_row(engine: Engine, event_: str) -> None:
    table = create_orders(engine, trigger("sync", on=(event_,), queue="customer:{customer_id}"))
    execute(
        engine,
        table.insert().values([order(1), order(2), order(3, customer_id=8)]),
        table.update().values(note="x"),
        table.delete(),
    )
    assert sorted((job.queue, job.payload["id"]) for job in jobs(engine)) == [
        ("customer:7", 1),
        ("customer:7", 2),
        ("customer:8", 3),
    ]
    assert queue_counts(engine) == {"customer:7": 2, "customer:8": 1}


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [
        (uuid.UUID(TENANT_A), [TENANT_A, TENANT_A]),
        (TENANT_A.upper(), [TENANT_A, TENANT_A]),
        ("{tenant_id}", [TENANT_A, TENANT_B]),
    ],
    ids=["fixed-uuid", "fixed-text", "from-column"],
)
@pytest.mark.parametrize("event_", EVENTS)
def test_tenant_fixed_or_from_a_column_sets_database_id(
    engine: Engine, event_: str, tenant: uuid.UUID | str, expected: list[str]
) -> None:
    table = create_orders(engine, trigger("sync", on=(event_,), tenant=tenant))
    execute(
        engine,
        table.insert().values([order(1), order(2, tenant_id=TENANT_B)]),
        table.update().values(note="x"),
        table.delete(),
    )
    assert sorted((job.payload["id"], job.tenant) for job in jobs(engine)) == [
        (1, expected[0]),
        (2, expected[1]),
    ]


@pytest.mark.parametrize("event_", EVENTS)
def test_tenant_column_not_a_uuid_fails_the_write_with_the_database_error(
    engine: Engine, event_: str
) -> None:
    table = create_orders(engine, trigger("sync", on=(event_,), tenant="{status}"))
    row = order(1, status="not-a-uuid")
    if event_ != "insert":
        execute(engine, table.insert().values(row))
    statement = {
        "insert": table.insert().values(row),
        "update": table.update().values(note="x"),
        "delete": table.delete(),
    }[event_]
    with pytest.raises(DBAPIError, match='invalid input syntax for type uuid: "not-a-uuid"'):
        execute(engine, statement)
    with engine.connect() as connection:
        rows = connection.execute(table.select()).mappings().all()
    assert [dict(r) for r in rows] == ([] if event_ == "insert" else [row])
    assert jobs(engine) == []


@pytest.mark.parametrize("event_", EVENTS)
def test_a_null_column_in_a_template_gives_no_value_rather_than_an_empty_one(
    engine: Engine, event_: str
) -> None:
    """A NULL tenant_id means no tenant, a NULL note no key: two rows with NULL notes must
    not share the key "" (the second would replace the first one's job)."""
    table = create_orders(
        engine, trigger("sync", on=(event_,), tenant="{tenant_id}", key="n:{note}")
    )
    first, second = order(1, tenant_id=None, note=None), order(2, tenant_id=None, note=None)
    if event_ == "insert":
        execute(engine, table.insert().values([first, second]))
    else:
        execute(engine, table.insert().values([first, second]))
        execute(engine, table.update().values(status="x") if event_ == "update" else table.delete())
    made = jobs(engine)
    assert len(made) == 2
    assert all(job.tenant is None and job.key is None for job in made)


@pytest.mark.parametrize("event_", EVENTS)
def test_priority_max_attempts_and_delay(engine: Engine, event_: str) -> None:
    table = create_orders(
        engine,
        trigger("later", on=(event_,), priority=-5, max_attempts=3, delay=timedelta(minutes=5)),
    )
    insert_update_delete(engine, table)
    [job] = jobs(engine)
    assert (job.priority, job.max_attempts, job.delay) == (-5, 3, timedelta(minutes=5))
    with engine.connect() as connection:
        # run_at = now() + 5 minutes of the writing transaction, a moment ago.
        ahead = connection.execute(sql("SELECT run_at - now() FROM app_jobs.jobs")).scalar_one()
    assert timedelta(minutes=4) < ahead <= timedelta(minutes=5)


@pytest.mark.parametrize(
    "delay",
    [timedelta(days=14), timedelta(seconds=12345.678)],
    ids=["two-weeks", "fractional"],
)
def test_long_or_precise_delay_is_kept_exactly(engine: Engine, delay: timedelta) -> None:
    table = create_orders(engine, trigger("later", delay=delay))
    execute(engine, table.insert().values(FIRST))
    assert [job.delay for job in jobs(engine)] == [delay]


def test_every_option_together(engine: Engine) -> None:
    table = create_orders(
        engine,
        trigger(
            "sync",
            on=("insert", "update"),
            update_columns=("status",),
            when="NEW.status <> 'draft'",
            payload=Fields("id", "status"),
            key="order:{id}:{status}",
            queue="customer:{customer_id}",
            tenant="{tenant_id}",
            priority=2,
            max_attempts=4,
            delay=timedelta(seconds=90),
        ),
    )
    execute(
        engine,
        table.insert().values([order(1), order(2, status="draft", tenant_id=TENANT_B)]),
        table.update().where(table.c.id == 1).values(note="not the status"),
        table.update().where(table.c.id == 2).values(status="paid"),
        table.update().where(table.c.id == 1).values(status="draft"),
    )
    assert jobs(engine) == [
        Job("sync", {"id": 1, "status": "new"}, TENANT_A, "customer:7", "order:1:new", 2, 4,
            timedelta(seconds=90)),
        Job("sync", {"id": 2, "status": "paid"}, TENANT_B, "customer:7", "order:2:paid", 2, 4,
            timedelta(seconds=90)),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------
# 2. Declaration errors, and templates naming columns the row does not have
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"key": "order:{id"}, "key"),
        ({"key": "order:id}"}, "key"),
        ({"queue": "{"}, "queue"),
        ({"queue": "a}b{c"}, "queue"),
        ({"tenant": "{tenant_id"}, "tenant"),
        ({"tenant": "not-a-uuid"}, "tenant"),
        ({"on": ("truncate",)}, "on"),
        ({"on": ()}, "on"),
        ({"on": ("insert", "insert")}, "on"),
        ({"update_columns": ("status",)}, "update_columns"),
        ({"payload": "id"}, "payload"),
        ({"when": "  "}, "when"),
        ({"priority": True}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"delay": timedelta(0)}, "delay"),
        ({"name": "x" * 64}, "name"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_declaration_raises_invalid_argument_error(
    options: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        trigger("sync", **options)
    assert raised.value.argument == argument


def test_fields_needs_a_column() -> None:
    with pytest.raises(InvalidArgumentError):
        Fields()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "order:{missing}"}, "the key template names column missing, which the row"),
        ({"queue": "q:{Missing Col}"}, 'the queue template names column "Missing Col"'),
        ({"tenant": "{tenant}"}, "the tenant template names column tenant"),
        ({"payload": RowId("nope")}, "for task sync: the row has no column nope"),
        ({"payload": Fields("id", "nope", "Other")}, 'the row has no column nope, "Other"'),
    ],
    ids=["key", "queue", "tenant", "row-id", "fields"],
)
def test_missing_column_fails_the_write_naming_the_column(
    engine: Engine, options: dict[str, Any], message: str
) -> None:
    table = create_orders(engine, trigger("sync", **options))
    with pytest.raises(DBAPIError, match=message) as raised:
        execute(engine, table.insert().values(FIRST))
    assert sqlstate(raised.value) == "42703"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM orders")).scalar_one() == 0


# --------------------------------------------------------------------------------------
# 3. create_all / drop_all, the registry, no global listeners
# --------------------------------------------------------------------------------------


def test_create_all_creates_tables_then_triggers_and_drop_all_drops_them(engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        __table_args__ = (trigger("welcome"),)

        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    class Order(Base):
        __tablename__ = "orders"
        __table_args__ = (
            trigger("ship", on=("update",)),
            trigger("audit", on=("insert", "delete"), payload=Row()),
        )

        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
        status: Mapped[str]

    class Note(Base):
        __tablename__ = "notes"

        id: Mapped[int] = mapped_column(primary_key=True)

    statements: list[str] = []

    def record(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        Base.metadata.create_all(engine)
        created = [
            s for s in statements if s.lstrip().startswith(("CREATE TABLE", "CREATE TRIGGER"))
        ]
        assert [s.split("(")[0].split()[:3] for s in created] == [
            ["CREATE", "TABLE", "customers"],
            ["CREATE", "TRIGGER", "pgjobs_welcome"],
            ["CREATE", "TABLE", "notes"],
            ["CREATE", "TABLE", "orders"],
            ["CREATE", "TRIGGER", "pgjobs_ship"],
            ["CREATE", "TRIGGER", "pgjobs_audit"],
        ]
        assert set(trigger_definitions(engine)) == {
            ("customers", "pgjobs_welcome"),
            ("orders", "pgjobs_ship"),
            ("orders", "pgjobs_audit"),
        }

        with Session(engine) as session, session.begin():
            session.add(Customer(id=1, name="Ann"))
            session.flush()
            session.add(Order(id=5, customer_id=1, status="new"))
        with Session(engine) as session, session.begin():
            session.get_one(Order, 5).status = "paid"
        with Session(engine) as session, session.begin():
            session.delete(session.get_one(Order, 5))
            session.add(Note(id=1))
        assert [(job.task, job.payload) for job in jobs(engine)] == [
            ("welcome", {"id": 1}),
            ("audit", {"id": 5, "customer_id": 1, "status": "new"}),
            ("ship", {"id": 5}),
            ("audit", {"id": 5, "customer_id": 1, "status": "paid"}),
        ]

        # Again: the tables exist, so nothing is created, triggers included.
        before = trigger_definitions(engine)
        Base.metadata.create_all(engine)
        assert trigger_definitions(engine) == before

        statements.clear()
        Base.metadata.drop_all(engine)
        dropped = [s.strip() for s in statements]
        assert dropped.index("DROP TRIGGER IF EXISTS pgjobs_ship ON orders") < dropped.index(
            next(s for s in dropped if s.startswith("DROP TABLE orders"))
        )
        assert dropped.index("DROP TRIGGER IF EXISTS pgjobs_welcome ON customers") < (
            dropped.index(next(s for s in dropped if s.startswith("DROP TABLE customers")))
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert trigger_definitions(engine) == {}
    assert not table_exists(engine, "orders")
    assert not table_exists(engine, "customers")


def test_core_table_create_and_drop_create_and_drop_its_triggers(engine: Engine) -> None:
    metadata = MetaData()
    table = orders_table(metadata, trigger("sync"))
    table.create(engine)
    assert set(trigger_definitions(engine)) == {("orders", "pgjobs_sync")}
    execute(engine, table.insert().values(FIRST))
    assert len(jobs(engine)) == 1
    table.drop(engine)
    assert trigger_definitions(engine) == {}


def test_duplicate_trigger_name_on_one_table_is_refused_at_declaration() -> None:
    metadata = MetaData()
    with pytest.raises(InvalidArgumentError) as raised:
        Table("a", metadata, Column("id", Integer, primary_key=True), trigger("x"), trigger("x"))
    assert raised.value.argument == "name"
    with pytest.raises(InvalidArgumentError, match="unique among the job triggers of b"):
        Table(
            "b",
            metadata,
            Column("id", Integer, primary_key=True),
            trigger("x", on=("insert",)),
            trigger("y", on=("update",), name="pgjobs_x"),
        )

    class Base(DeclarativeBase):
        pass

    with pytest.raises(InvalidArgumentError):

        class Twice(Base):
            __tablename__ = "twice"
            __table_args__ = (trigger("x"), trigger("x", on=("delete",)))

            id: Mapped[int] = mapped_column(primary_key=True)

    # The same task twice under different names, and the same name on another table: fine.
    first, second = trigger("x"), trigger("x", on=("update",), name="pgjobs_x_update")
    table_c = Table("c", metadata, Column("id", Integer, primary_key=True), first, second)
    third = trigger("x")
    table_d = Table("d", metadata, Column("id", Integer, primary_key=True), third)
    assert job_triggers(table_c) == [first, second]
    assert job_triggers(table_d) == [third]
    assert (first.table, third.table) == (table_c, table_d)
    assert job_triggers(Table("e", metadata, Column("id", Integer, primary_key=True))) == []


def test_a_job_trigger_belongs_to_a_table() -> None:
    with pytest.raises(InvalidArgumentError):
        Column("id", Integer, trigger("x"))


def test_trigger_registry_keeps_no_table_alive() -> None:
    metadata = MetaData()
    table = Table("t", metadata, Column("id", Integer, primary_key=True), trigger("x"))
    assert job_triggers(table)
    table_ref = weakref.ref(table)
    metadata_ref = weakref.ref(metadata)
    del table, metadata
    gc.collect()
    assert (table_ref(), metadata_ref()) == (None, None)


# Listeners on classes (Table, MetaData, Engine, Session, ...) are global; SQLAlchemy's own
# listeners on the package's Table and Column objects (sqla_pgjobs.tables) are not.
NO_GLOBAL_LISTENERS = """\
import gc

import sqlalchemy.orm
from sqlalchemy.event import registry

before = set(registry._key_to_collection)
import sqla_pgjobs
import sqla_pgjobs.triggers
import sqla_pgjobs.alembic
added = set(registry._key_to_collection) - before
classes = {id(o): o for o in gc.get_objects() if isinstance(o, type)}
print(sorted((repr(classes[k[0]]), k[1]) for k in added if k[0] in classes))
"""


def test_importing_the_package_registers_no_global_listeners() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_GLOBAL_LISTENERS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------
# 4. Alembic ops: online, reverse(), rendering
# --------------------------------------------------------------------------------------


def test_create_and_drop_job_trigger_ops_online_each_the_others_reverse(engine: Engine) -> None:
    shop = "Shop's Floor"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {quote_schema(shop)}"))
    metadata = MetaData()
    table = orders_table(metadata, schema=shop)
    metadata.create_all(engine)
    sync = trigger("sync", on=("insert", "update"), key="order:{id}", queue="c:{customer_id}")

    run_ops(engine, lambda op: op.create_job_trigger("orders", sync, schema=shop))
    assert set(trigger_definitions(engine, shop)) == {("orders", "pgjobs_sync")}
    execute(engine, table.insert().values(FIRST))
    assert [(job.key, job.queue) for job in jobs(engine)] == [("order:1", "c:7")]

    create = CreateJobTriggerOp("orders", sync, shop)
    drop = create.reverse()
    assert type(drop) is DropJobTriggerOp
    assert (drop.table_name, drop.trigger, drop.schema) == ("orders", sync, shop)
    assert drop.to_diff_tuple() == ("drop_job_trigger", shop, "orders", "pgjobs_sync")
    recreate = drop.reverse()
    assert type(recreate) is CreateJobTriggerOp
    assert recreate.to_diff_tuple() == create.to_diff_tuple()
    assert recreate.trigger == sync

    run_ops(engine, lambda op: op.invoke(drop))
    assert trigger_definitions(engine, shop) == {}
    execute(engine, table.update().values(note="unseen"))
    assert len(jobs(engine)) == 1

    run_ops(engine, lambda op: op.invoke(recreate))
    execute(engine, table.update().values(note="seen"))
    assert len(jobs(engine)) == 1  # same key, the pending job took the update

    # Dropping by name works too, but such an op cannot be reversed.
    run_ops(engine, lambda op: op.drop_job_trigger("orders", "pgjobs_sync", schema=shop))
    assert trigger_definitions(engine, shop) == {}
    with pytest.raises(InvalidArgumentError, match="reversing needs the whole JobTrigger"):
        DropJobTriggerOp("orders", "pgjobs_sync").reverse()


def test_ops_refuse_what_is_not_a_trigger() -> None:
    with pytest.raises(InvalidArgumentError):
        CreateJobTriggerOp("orders", "pgjobs_sync")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        DropJobTriggerOp("orders", 42)  # type: ignore[arg-type]


EVERY_OPTION = JobTrigger(
    "ship_order",
    on=("insert", "update", "delete"),
    update_columns=("status", "Customer Name"),
    payload=Fields("id", "status"),
    when="NEW.status = 'paid' AND OLD.status IS DISTINCT FROM 'paid'",
    key="order:{id}",
    queue="customer:{customer_id}",
    tenant=uuid.UUID(TENANT_A),
    priority=-3,
    max_attempts=4,
    delay=timedelta(minutes=5),
    name="ship it",
    job_schema='Job Queue\'s "Schema"',
)


@pytest.mark.parametrize(
    "declared",
    [
        JobTrigger("a"),
        JobTrigger("a", payload=Row(), on="delete"),
        JobTrigger("a", payload=RowId("uid"), tenant="{tenant_id}"),
        JobTrigger("a", key='{{literal}} it\'s "q" 100% :x \\ {id}', when="TRUE"),
        EVERY_OPTION,
    ],
    ids=["plain", "row", "row-id", "literal-text", "every-option"],
)
def test_repr_is_python_that_builds_the_same_trigger(declared: JobTrigger) -> None:
    namespace = {"JobTrigger": JobTrigger, "Fields": Fields, "Row": Row, "RowId": RowId}
    rebuilt = eval(repr(declared), {**namespace, "timedelta": timedelta})
    assert rebuilt == declared
    assert create_trigger_sql(rebuilt, "orders") == create_trigger_sql(declared, "orders")


def test_triggers_of_one_revision_share_one_merged_import_line() -> None:
    """Two triggers needing different names (JobTrigger alone; JobTrigger and Row) make
    one import line, not two that both import JobTrigger (ruff F811 in the revision)."""
    context = AutogenContext(MigrationContext.configure(dialect_name="postgresql"))
    render_op_text(context, CreateJobTriggerOp("orders", JobTrigger("ship"), None))
    render_op_text(context, CreateJobTriggerOp("orders", JobTrigger("audit", payload=Row()), None))
    render_op_text(context, DropJobTriggerOp("orders", JobTrigger("old", payload=RowId("n"))))
    assert context.imports == {"from sqla_pgjobs.triggers import JobTrigger, Row, RowId"}


def test_ops_render_into_revision_code_with_their_imports() -> None:
    context = AutogenContext(MigrationContext.configure(dialect_name="postgresql"))
    create = CreateJobTriggerOp("orders", EVERY_OPTION, "shop")
    rendered = render_op_text(context, create)
    assert rendered == f"op.create_job_trigger('orders', {EVERY_OPTION!r}, schema='shop')"
    assert context.imports == {
        "from sqla_pgjobs.triggers import Fields, JobTrigger",
        "from datetime import timedelta",
    }
    assert render_op_text(context, create.reverse()) == (
        f"op.drop_job_trigger('orders', {EVERY_OPTION!r}, schema='shop')"
    )
    assert render_op_text(context, DropJobTriggerOp("orders", "ship it")) == (
        "op.drop_job_trigger('orders', 'ship it')"
    )

    # The rendered code, with its imports, runs and passes the same trigger.
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Recorder:
        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args, **kwargs: calls.append((name, args, kwargs))

    namespace: dict[str, Any] = {"op": Recorder()}
    exec("\n".join(sorted(context.imports)), namespace)
    eval(rendered, namespace)
    [(name, args, kwargs)] = calls
    assert (name, args, kwargs) == (
        "create_job_trigger",
        ("orders", EVERY_OPTION),
        {"schema": "shop"},
    )


# --------------------------------------------------------------------------------------
# 5. Offline (--sql), replayed through psql
# --------------------------------------------------------------------------------------

OFFLINE_TRIGGER = JobTrigger(
    "ship",
    on=("insert", "update"),
    payload=Fields("id", "note"),
    when="NEW.note IS DISTINCT FROM ':skip' AND NEW.note NOT LIKE '%draft%'",
    key="a:b:{id}",
    queue=":q:{customer_id}:%",
    job_schema=SCHEMA,
)

OFFLINE_REVISION = f'''\
"""Orders, and a job for each one."""

import sqlalchemy as sa
from alembic import op

from sqla_pgjobs.triggers import Fields, JobTrigger

revision = "0001_orders"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_job_trigger("orders", {OFFLINE_TRIGGER!r})


def downgrade() -> None:
    op.drop_job_trigger("orders", {OFFLINE_TRIGGER!r})
    op.drop_table("orders")
'''


@dataclass(frozen=True)
class Project:
    """A user's own project made with ``alembic init`` in tmp_path."""

    ini: Path

    @property
    def root(self) -> Path:
        return self.ini.parent

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return alembic(*args, config=self.ini, cwd=self.root)

    def revision(self, rev_id: str) -> Path:
        [found] = self.versions.glob(f"{rev_id}_*.py")
        return found


def alembic_project(tmp_path: Path, url: str, *, models: bool) -> Project:
    """``alembic init``, env.py importing sqla_pgjobs.alembic (and, with ``models``, using
    models.Base.metadata as target_metadata), alembic.ini pointing at ``url``."""
    ini = tmp_path / "alembic.ini"
    ok(alembic("init", "migrations", config=ini, cwd=tmp_path))
    env_py = tmp_path / "migrations" / "env.py"
    env = env_py.read_text(encoding="utf-8")
    assert STOCK_IMPORT in env
    assert STOCK_METADATA in env
    imports = f"{IMPORT_LINE}\n" + ("\nfrom models import Base\n" if models else "")
    env = env.replace(STOCK_IMPORT, f"{STOCK_IMPORT}\n{imports}", 1)
    if models:
        env = env.replace(STOCK_METADATA, "target_metadata = Base.metadata\n", 1)
    env_py.write_text(env, encoding="utf-8")
    source = ini.read_text(encoding="utf-8")
    assert STOCK_URL in source
    ini.write_text(
        source.replace(STOCK_URL, f"sqlalchemy.url = {url.replace('%', '%%')}\n"),
        encoding="utf-8",
    )
    return Project(ini)


def test_offline_sql_creates_a_working_trigger_when_replayed_through_psql(
    database_url: URL, tmp_path: Path
) -> None:
    # Nothing listens on port 1: offline mode must not connect.
    project = alembic_project(
        tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/nowhere", models=False
    )
    (project.versions / "0001_orders.py").write_text(OFFLINE_REVISION, encoding="utf-8")

    upgrade = ok(project.run("upgrade", "head", "--sql"))
    # The statement is printed exactly as compiled: the JSON literal with its ':' and '%',
    # the WHEN with its ':skip' and '%draft%'.
    assert create_trigger_sql(OFFLINE_TRIGGER, "orders") + ";" in upgrade
    assert '{"text":"a:b:"}' in upgrade
    assert '{"text":":q:"}' in upgrade
    downgrade = ok(project.run("downgrade", "0001_orders:base", "--sql"))
    assert drop_trigger_sql("pgjobs_ship", "orders") + ";" in downgrade

    upgrade_file = tmp_path / "upgrade.sql"
    upgrade_file.write_text(upgrade, encoding="utf-8")
    downgrade_file = tmp_path / "downgrade.sql"
    downgrade_file.write_text(downgrade, encoding="utf-8")
    engine = create_engine(database_url)
    try:
        psql(upgrade_file, database_url)
        execute(
            engine,
            text(
                "INSERT INTO orders (customer_id, note) VALUES (7, 'hello'), (8, :skip)"
            ).bindparams(skip=":skip"),
            text("UPDATE orders SET note = 'a draft' WHERE id = 1"),
            text("UPDATE orders SET note = 'final' WHERE id = 1"),
        )
        assert [(job.key, job.queue, job.payload) for job in jobs(engine)] == [
            ("a:b:1", ":q:7:%", {"id": 1, "note": "final"}),
        ]
        psql(downgrade_file, database_url)
        assert not table_exists(engine, "orders")
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------
# 6. Autogenerate
# --------------------------------------------------------------------------------------

SHIP = JobTrigger(
    "ship_order",
    on=("update",),
    update_columns=("status",),
    # Written without spaces: PostgreSQL prints it as ((new.status)::text = 'paid'::text).
    when="NEW.status='paid'",
    key="order:{id}",
    job_schema=SCHEMA,
)
REINDEX = JobTrigger(
    "reindex",
    on=("insert", "update", "delete"),
    payload=Fields("id", "customer_id"),
    queue="customer:{customer_id}",
    delay=timedelta(seconds=30),
    job_schema=SCHEMA,
)
REINDEX_CHANGED = JobTrigger(
    "reindex",
    on=("insert", "update", "delete"),
    payload=Fields("id", "customer_id"),
    queue="customer:{customer_id}",
    delay=timedelta(seconds=60),
    job_schema=SCHEMA,
)
REFUND = JobTrigger("refund", payload=Fields("order_id"), job_schema=SCHEMA)

MODELS = """\
from datetime import timedelta

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_pgjobs.triggers import Fields, JobTrigger


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (ORDER_TRIGGERS)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int]
    status: Mapped[str]
"""

REFUNDS = """

class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (REFUND_TRIGGER,)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int]
"""

FOREIGN_TRIGGERS = [
    "CREATE TRIGGER hand_written_enqueue AFTER INSERT ON orders FOR EACH ROW"
    " EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('x')",
    "CREATE FUNCTION own_audit_fn() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RETURN NULL; END $$",
    "CREATE TRIGGER own_audit AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION own_audit_fn()",
]


def write_models(project: Project, order_triggers: list[JobTrigger], *, refunds: bool) -> None:
    source = MODELS.replace(
        "ORDER_TRIGGERS", "".join(f"{t!r}, " for t in order_triggers).rstrip(" ")
    )
    if refunds:
        source += REFUNDS.replace("REFUND_TRIGGER", repr(REFUND))
    (project.root / "models.py").write_text(source, encoding="utf-8")


def autogenerate(project: Project, rev_id: str) -> tuple[Path, str]:
    ok(project.run("revision", "--autogenerate", "-m", rev_id, "--rev-id", rev_id))
    revision = project.revision(rev_id)
    source = revision.read_text(encoding="utf-8")
    for foreign in ("hand_written_enqueue", "own_audit", "tg_add_job_with_row_id"):
        assert foreign not in source, source
    return revision, source


def assert_no_changes(project: Project) -> None:
    checked = project.run("check")
    assert checked.returncode == 0, f"{checked.stdout}\n{checked.stderr}"
    assert "No new upgrade operations detected" in checked.stdout


def test_autogenerate_adds_changes_and_removes_triggers_and_ignores_foreign_ones(
    database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # models.py is rewritten between runs, sometimes within a second and at the same size:
    # no stale bytecode.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    project = alembic_project(
        tmp_path, database_url.render_as_string(hide_password=False), models=True
    )
    engine = create_engine(database_url)
    try:
        # The tables, without triggers; then triggers this package did not make.
        write_models(project, [], refunds=False)
        revision, _ = autogenerate(project, "0001_tables")
        assert op_calls(revision, "upgrade") == [("create_table", "orders", None)]
        ok(project.run("upgrade", "head"))
        with engine.begin() as connection:
            for statement in FOREIGN_TRIGGERS:
                connection.execute(sql(statement))
        foreign = trigger_definitions(engine)
        assert set(foreign) == {("orders", "hand_written_enqueue"), ("orders", "own_audit")}
        assert_no_changes(project)

        # (added) Two triggers on an existing table, one on a new table.
        write_models(project, [SHIP, REINDEX], refunds=True)
        revision, source = autogenerate(project, "0002_added")
        upgrade = op_calls(revision, "upgrade")
        assert Counter(upgrade) == Counter(
            [
                ("create_table", "refunds", None),
                ("create_job_trigger", "refunds", None),
                ("create_job_trigger", "orders", None),
                ("create_job_trigger", "orders", None),
            ]
        )
        assert upgrade.index(("create_table", "refunds", None)) < upgrade.index(
            ("create_job_trigger", "refunds", None)
        )
        downgrade = op_calls(revision, "downgrade")
        assert downgrade.index(("drop_job_trigger", "refunds", None)) < downgrade.index(
            ("drop_table", "refunds", None)
        )
        for table_name, declared in (("orders", SHIP), ("orders", REINDEX), ("refunds", REFUND)):
            assert f"op.create_job_trigger({table_name!r}, {declared!r})" in source
            assert f"op.drop_job_trigger({table_name!r}, {declared!r})" in source
        assert "from sqla_pgjobs.triggers import Fields, JobTrigger\n" in source
        assert source.count("from sqla_pgjobs.triggers import") == 1
        assert "from datetime import timedelta\n" in source
        ok(project.run("upgrade", "head"))
        added = trigger_definitions(engine)
        assert set(added) == {
            *foreign,
            ("orders", "pgjobs_ship_order"),
            ("orders", "pgjobs_reindex"),
            ("refunds", "pgjobs_refund"),
        }
        # status is a VARCHAR: PostgreSQL prints SHIP's when="NEW.status='paid'" thus.
        assert "WHEN (((new.status)::text = 'paid'::text))" in added["orders", "pgjobs_ship_order"]
        execute(
            engine,
            text("INSERT INTO orders (id, customer_id, status) VALUES (1, 7, 'new')"),
            text("UPDATE orders SET status = 'paid'"),
        )
        # Triggers fire in name order: hand_written_enqueue, then pgjobs_*.
        assert [(job.task, job.key, job.queue) for job in jobs(engine)] == [
            ("x", None, None),
            ("reindex", None, "customer:7"),
            ("reindex", None, "customer:7"),
            ("ship_order", "order:1", None),
        ]
        # In sync, although the database prints SHIP's WHEN differently.
        assert_no_changes(project)

        # (changed) One option of one trigger: dropped with its old definition, re-created.
        write_models(project, [SHIP, REINDEX_CHANGED], refunds=True)
        revision, source = autogenerate(project, "0003_changed")
        assert op_calls(revision, "upgrade") == [
            ("drop_job_trigger", "orders", None),
            ("create_job_trigger", "orders", None),
        ]
        assert op_calls(revision, "downgrade") == [
            ("drop_job_trigger", "orders", None),
            ("create_job_trigger", "orders", None),
        ]
        upgrade_source = source[source.index("def upgrade") : source.index("def downgrade")]
        assert upgrade_source.index(f"op.drop_job_trigger('orders', {REINDEX!r})") < (
            upgrade_source.index(f"op.create_job_trigger('orders', {REINDEX_CHANGED!r})")
        )
        assert "ship_order" not in source
        ok(project.run("upgrade", "head"))
        changed = trigger_definitions(engine)
        assert '"delay":"60 seconds"' in changed["orders", "pgjobs_reindex"]
        assert {k: v for k, v in changed.items() if k[1] != "pgjobs_reindex"} == {
            k: v for k, v in added.items() if k[1] != "pgjobs_reindex"
        }
        assert_no_changes(project)
        ok(project.run("downgrade", "-1"))
        assert trigger_definitions(engine) == added
        ok(project.run("upgrade", "head"))
        assert trigger_definitions(engine) == changed

        # (removed) A trigger no longer declared: dropped, the downgrade re-creates it.
        write_models(project, [REINDEX_CHANGED], refunds=True)
        revision, source = autogenerate(project, "0004_removed")
        assert op_calls(revision, "upgrade") == [("drop_job_trigger", "orders", None)]
        assert op_calls(revision, "downgrade") == [("create_job_trigger", "orders", None)]
        assert "op.drop_job_trigger('orders', JobTrigger('ship_order', " in source
        assert "when=\"((new.status)::text = 'paid'::text)\"" in source
        ok(project.run("upgrade", "head"))
        removed = trigger_definitions(engine)
        assert set(removed) == set(changed) - {("orders", "pgjobs_ship_order")}
        assert_no_changes(project)
        ok(project.run("downgrade", "-1"))
        assert trigger_definitions(engine) == changed
        ok(project.run("upgrade", "head"))
        assert trigger_definitions(engine) == removed
    finally:
        engine.dispose()


BASE_OPTIONS: dict[str, Any] = {
    "on": ("insert", "update"),
    "update_columns": ("status",),
    "payload": Fields("id", "status"),
    "when": "NEW.status <> 'draft'",
    "key": "order:{id}",
    "queue": "customer:{customer_id}",
    "tenant": uuid.UUID(TENANT_A),
    "priority": 1,
    "max_attempts": 5,
    "delay": timedelta(seconds=30),
}
#: Declarations that differ from BASE_OPTIONS in one option, each a changed definition.
CHANGED_OPTIONS: dict[str, dict[str, Any]] = {
    "on": {"on": ("update",)},
    "update_columns": {"update_columns": ("status", "note")},
    "when": {"when": "NEW.status <> 'void'"},
    "no-when": {"when": None},
    "payload-row": {"payload": Row()},
    "payload-row-id": {"payload": RowId("other_id")},
    "payload-fields": {"payload": Fields("status", "id")},
    "key": {"key": "order:{other_id}"},
    "no-queue": {"queue": None},
    "tenant": {"tenant": "{tenant_id}"},
    "priority": {"priority": 2},
    "max_attempts": {"max_attempts": None},
    "delay": {"delay": timedelta(seconds=31)},
}
#: Declarations written differently from BASE_OPTIONS that mean the same trigger.
SAME_OPTIONS: dict[str, dict[str, Any]] = {
    "when-compact": {"when": "NEW.status<>'draft'"},
    "when-lowercase-parenthesised": {"when": "(new.status <> 'draft')"},
    "when-bang-equals": {"when": "NEW.status != 'draft'"},
    "on-order": {"on": ("update", "insert")},
    "tenant-text": {"tenant": TENANT_A.upper()},
    "delay-milliseconds": {"delay": timedelta(milliseconds=30000)},
}


def test_autogenerate_reports_each_changed_option_and_no_mere_formatting(engine: Engine) -> None:
    create_orders(engine, trigger("sync", **BASE_OPTIONS))
    drop_create = [
        ("drop_job_trigger", None, "orders", "pgjobs_sync"),
        ("create_job_trigger", None, "orders", "pgjobs_sync"),
    ]

    def diffs(changes: dict[str, Any]) -> list[Any]:
        metadata = MetaData()
        orders_table(metadata, trigger("sync", **{**BASE_OPTIONS, **changes}))
        return autogenerate_diffs(engine, metadata)

    assert diffs({}) == []
    assert {label: diffs(changes) for label, changes in CHANGED_OPTIONS.items()} == {
        label: drop_create for label in CHANGED_OPTIONS
    }
    assert {label: diffs(changes) for label, changes in SAME_OPTIONS.items()} == {
        label: [] for label in SAME_OPTIONS
    }
    # A new task under the same name is a change; a new name is a drop and a create.
    metadata = MetaData()
    orders_table(metadata, trigger("other", name="pgjobs_sync", **BASE_OPTIONS))
    assert autogenerate_diffs(engine, metadata) == drop_create
    metadata = MetaData()
    orders_table(metadata, trigger("sync", name="renamed", **BASE_OPTIONS))
    assert sorted(autogenerate_diffs(engine, metadata)) == [
        ("create_job_trigger", None, "orders", "renamed"),
        ("drop_job_trigger", None, "orders", "pgjobs_sync"),
    ]
    # Autogenerate rolled its probes back: only the declared trigger is there.
    assert set(trigger_definitions(engine)) == {("orders", "pgjobs_sync")}


def test_autogenerate_ignores_a_foreign_tg_add_job_next_to_a_migrations_table(
    engine: Engine,
) -> None:
    metadata = MetaData()
    orders_table(metadata)
    Table("migrations", metadata, Column("id", Integer, primary_key=True))
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION public.tg_add_job() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RETURN NULL; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER mine AFTER INSERT ON orders FOR EACH ROW"
                " EXECUTE FUNCTION public.tg_add_job()"
            )
        )
    assert autogenerate_diffs(engine, metadata) == []


# --------------------------------------------------------------------------------------
# 7. Safety
# --------------------------------------------------------------------------------------

HOSTILE = [
    "O'Brien",
    "'); drop table victims; --",
    "x'); DROP TABLE victims; --",
    "', (SELECT rolpassword FROM pg_authid LIMIT 1)) --",
    "$$; DROP TABLE victims; $$",
    'back\\slash \\\' "double" \\" quotes \\\\',
    "100% %s %(x)s %% %I %L",
    "line one\nline two\r\n\ttab",
    "{id} {{braces}} :name ::text \\:x",
    "日本語 ✓ émigré \u2028 🚀",
]


def hostile_models() -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        __table_args__ = (
            trigger("copy", on=("insert", "update", "delete"), payload=Row()),
            trigger("index", payload=Fields("body", "id"), key="k:{body}", queue="q:{body}"),
        )

        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        other: Mapped[str | None]

    return Base, Note


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_row_values_land_verbatim_and_execute_nothing(engine: Engine, value: str) -> None:
    base, note = hostile_models()
    base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE victims (id int)"))
    with Session(engine) as session, session.begin():
        session.add(note(id=1, body=value))
    with Session(engine) as session, session.begin():
        session.get_one(note, 1).other = value
    with Session(engine) as session, session.begin():
        session.delete(session.get_one(note, 1))
    found = jobs(engine)
    assert [(job.task, job.payload) for job in found if job.task == "copy"] == [
        ("copy", {"id": 1, "body": value, "other": None}),
        ("copy", {"id": 1, "body": value, "other": value}),
        ("copy", {"id": 1, "body": value, "other": value}),
    ]
    assert [(job.payload, job.key, job.queue) for job in found if job.task == "index"] == [
        ({"body": value, "id": 1}, f"k:{value}", f"q:{value}")
    ]
    assert table_exists(engine, "victims")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM victims")).scalar_one() == 0


@pytest.mark.parametrize("value", ["O'Brien", "x'); DROP TABLE victims; --"])
def test_hostile_value_in_a_tenant_column_is_refused_as_a_uuid_and_executes_nothing(
    engine: Engine, value: str
) -> None:
    table = create_orders(engine, trigger("sync", tenant="{note}"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE victims (id int)"))
    with pytest.raises(DBAPIError, match="invalid input syntax for type uuid") as raised:
        execute(engine, table.insert().values(order(1, note=value)))
    assert value in str(raised.value)
    assert table_exists(engine, "victims")


def test_template_text_with_quotes_percent_colons_and_braces_is_kept_verbatim(
    engine: Engine,
) -> None:
    key = 'it\'s 100% {{literal}} "q" :x ::y $$ %s {id}'
    queue = "O'Brien's; drop table victims; -- :{customer_id}"
    table = create_orders(
        engine,
        trigger(
            "sync",
            key=key,
            queue=queue,
            when="NEW.status NOT LIKE '%draft%' AND NEW.status <> ':skip'",
        ),
    )
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE victims (id int)"))
    execute(
        engine,
        table.insert().values([order(1), order(2, status="a draft"), order(3, status=":skip")]),
    )
    assert [(job.key, job.queue) for job in jobs(engine)] == [
        ('it\'s 100% {literal} "q" :x ::y $$ %s 1', "O'Brien's; drop table victims; -- :7")
    ]
    assert table_exists(engine, "victims")


def test_template_text_with_a_backslash_before_a_colon_is_kept_verbatim(engine: Engine) -> None:
    table = create_orders(engine, trigger("sync", key="C:\\:x\\:{id}"))
    execute(engine, table.insert().values(FIRST))
    assert [job.key for job in jobs(engine)] == ["C:\\:x\\:1"]


def test_columns_and_table_named_with_capitals_and_spaces(engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class Book(Base):
        __tablename__ = "Order Book"
        __table_args__ = (
            trigger(
                "renamed",
                on=("update",),
                update_columns=("Customer Name",),
                when='NEW."Customer Name" IS DISTINCT FROM OLD."Customer Name"',
                payload=Fields("Customer Name", "OrderNo"),
                key="c:{Customer Name}",
                queue="q:{OrderNo}",
            ),
            trigger("created", payload=RowId("OrderNo"), tenant="{Tenant Id}"),
        )

        id: Mapped[int] = mapped_column(primary_key=True)
        order_no: Mapped[int] = mapped_column("OrderNo")
        customer_name: Mapped[str] = mapped_column("Customer Name")
        tenant: Mapped[str] = mapped_column("Tenant Id", UUID(as_uuid=False))
        note: Mapped[str | None]

    Base.metadata.create_all(engine)
    assert set(trigger_definitions(engine)) == {
        ("Order Book", "pgjobs_renamed"),
        ("Order Book", "pgjobs_created"),
    }
    with Session(engine) as session, session.begin():
        session.add(Book(id=1, order_no=42, customer_name="Ann", tenant=TENANT_B))
    with Session(engine) as session, session.begin():
        session.get_one(Book, 1).note = "not the name"
    with Session(engine) as session, session.begin():
        session.get_one(Book, 1).customer_name = "Zoë O'Neil"
    assert [(job.task, job.payload, job.key, job.queue, job.tenant) for job in jobs(engine)] == [
        ("created", {"id": 42}, None, None, TENANT_B),
        ("renamed", {"Customer Name": "Zoë O'Neil", "OrderNo": 42}, "c:Zoë O'Neil", "q:42", None),
    ]
    Base.metadata.drop_all(engine)
    assert not table_exists(engine, '"Order Book"')


WRITER_TRIGGER = {
    "on": ("insert", "update"),
    "payload": Fields("id", "status"),
    "key": "order:{id}",
    "queue": "customer:{customer_id}",
    "tenant": "{tenant_id}",
}


def grant_writes(engine: Engine, role: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"GRANT INSERT, UPDATE ON orders TO {role}"))
        connection.execute(text(f"GRANT USAGE ON SEQUENCE orders_id_seq TO {role}"))


def write_as(role_engine: Engine, *setup: str) -> None:
    with role_engine.begin() as connection:
        for statement in setup:
            connection.execute(text(statement))
        connection.execute(
            text(
                "INSERT INTO orders (other_id, customer_id, status, tenant_id)"
                " VALUES (101, 7, 'new', :tenant)"
            ),
            {"tenant": TENANT_A},
        )
        connection.execute(text("UPDATE orders SET status = 'paid'"))


def assert_writer_job(engine: Engine) -> None:
    assert jobs(engine) == [
        Job("sync", {"id": 1, "status": "paid"}, TENANT_A, "customer:7", "order:1", 0, 25,
            timedelta(0)),
    ]  # fmt: skip


def test_role_that_may_only_write_the_table_gets_jobs_enqueued_and_nothing_else(
    engine: Engine, make_role: Callable[[str], Role]
) -> None:
    create_orders(engine, trigger("sync", **WRITER_TRIGGER))
    made = make_role("writer_")
    role, writer = made.name, made.engine
    grant_writes(engine, role)

    write_as(writer)
    assert_writer_job(engine)

    for statement in (
        "SELECT * FROM app_jobs.add_job(NULL, 'x')",
        "SELECT count(*) FROM app_jobs.jobs",
        "INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x')",
        "SELECT * FROM orders",
    ):
        with pytest.raises(DBAPIError) as raised:
            with writer.begin() as connection:
                connection.execute(sql(statement))
        assert sqlstate(raised.value) == "42501", statement
    with engine.connect() as connection:
        privileges = connection.execute(
            text(
                "SELECT has_schema_privilege(:r, :s, 'USAGE'),"
                " has_schema_privilege(:r, :s, 'CREATE'),"
                " (SELECT count(*) FROM pg_class WHERE relowner = to_regrole(:r)),"
                " (SELECT count(*) FROM pg_proc WHERE proowner = to_regrole(:r))"
            ),
            {"r": role, "s": SCHEMA},
        ).one()
    assert tuple(privileges) == (False, False, 0, 0)
    assert not is_superuser(engine, role)
    assert_writer_job(engine)


#: Functions and operators tg_add_job uses, shadowed in the writer's own schema by versions
#: that would make it a superuser if they ever ran with the job schema owner's rights.
SHADOWS = [
    ("now()", "timestamptz", "pg_catalog.now()"),
    ("to_json(anyelement)", "json", "'{}'::json"),
    ("to_jsonb(anyelement)", "jsonb", "'{}'::jsonb"),
    ("json_build_object(text, jsonb)", "json", "'{}'::json"),
    ("quote_ident(text)", "text", "''"),
    ("jsonb_typeof(jsonb)", "text", "'object'"),
    ("jsonb_exists(jsonb, text)", "boolean", "true"),
    ("field_text(jsonb, text)", "text", "''"),
]


def test_writer_shadowing_functions_on_its_search_path_gains_nothing(
    engine: Engine, make_role: Callable[[str], Role]
) -> None:
    create_orders(engine, trigger("sync", **WRITER_TRIGGER))
    made = make_role("hijacker_")
    role, writer = made.name, made.engine
    grant_writes(engine, role)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA evil AUTHORIZATION {role}"))
    with writer.begin() as connection:
        shadow_builtins(connection, role, SHADOWS, [("?", "jsonb_exists"), ("->>", "field_text")])

    write_as(writer, "SET search_path = evil, pg_catalog, public")
    assert not is_superuser(engine, role)
    assert_writer_job(engine)
