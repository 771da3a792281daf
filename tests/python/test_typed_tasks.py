"""Typed tasks: a function's annotated parameters as the job's arguments, checked at
enqueue (statically by mypy, at run time by pydantic) and again when a worker decodes the
payload; a payload that cannot be valid fails the job for good."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pydantic
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from sqla_pgjobs import InvalidArgumentError, Job, TaskRegistry, Worker
from sqla_pgjobs.errors import FailForGood, InvalidPayloadError, RetryAt, Snooze, TaskArgumentError
from sqla_pgjobs.functions import add_job, add_jobs
from sqla_pgjobs.tables import job_history, jobs
from sqla_pgjobs.tasks import exponential_backoff
from sqla_pgjobs.testing import run_jobs
from tests.helpers import SCHEMA, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import URL, Engine


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int


class Address(pydantic.BaseModel):
    city: str
    zip_code: str


tasks = TaskRegistry()


@tasks.task
def send_receipt(order_id: int, note: str = "") -> None:
    """A plain typed task."""


@tasks.task(queue_name="shipping", priority=3, max_attempts=4, name="ship")
async def ship_order(
    order_id: UUID,
    when: datetime,
    day: date,
    amount: Decimal,
    color: Color,
    lines: list[Line],
    to: Address,
    job: Job,
) -> None:
    """Every supported kind of argument, and the job."""


def everything() -> dict[str, Any]:
    return {
        "order_id": UUID("6f1c3a52-9a7e-4d3c-8a51-0d9f5b1e2c77"),
        "when": datetime(2026, 12, 7, 10, 30, tzinfo=UTC),
        "day": date(2026, 12, 24),
        "amount": Decimal("19.90"),
        "color": Color.BLUE,
        "lines": [Line("apple", 3), Line("pear", 1)],
        "to": Address(city="Lyon", zip_code="69001"),
    }


# --- Declaring, encoding, decoding (no database) ------------------------------------------------


def test_a_typed_task_is_named_after_its_function_or_its_name_and_keeps_its_options() -> None:
    assert (send_receipt.name, ship_order.name) == ("send_receipt", "ship")
    assert tasks["ship"].queue_name == "shipping" and tasks["ship"].is_async
    assert tasks["send_receipt"].is_async is False
    assert ship_order.arguments.names == [
        "order_id",
        "when",
        "day",
        "amount",
        "color",
        "lines",
        "to",
    ]  # the job is given by the worker, not carried
    assert repr(send_receipt) == "<TypedTask send_receipt(order_id: int, note: str = '')>"


def test_arguments_become_json_and_come_back_as_the_same_values() -> None:
    payload = ship_order.payload(**everything())
    assert payload == {
        "order_id": "6f1c3a52-9a7e-4d3c-8a51-0d9f5b1e2c77",
        "when": "2026-12-07T10:30:00Z",
        "day": "2026-12-24",
        "amount": "19.90",
        "color": "blue",
        "lines": [{"sku": "apple", "quantity": 3}, {"sku": "pear", "quantity": 1}],
        "to": {"city": "Lyon", "zip_code": "69001"},
    }
    assert ship_order.arguments.decode(payload) == everything()
    # A default is the function's: not written into the payload.
    assert send_receipt.payload(42) == {"order_id": 42}
    assert send_receipt.arguments.decode({"order_id": 42}) == {"order_id": 42}


@pytest.mark.parametrize(
    ("call", "argument", "problem"),
    [
        (lambda: send_receipt.payload(order_id="42"), "order_id", "valid integer"),  # type: ignore[arg-type]
        (lambda: send_receipt.payload(orderid=42), "orderid", "no such argument"),  # type: ignore[call-arg]
        (lambda: send_receipt.payload(), "order_id", "missing"),  # type: ignore[call-arg]
        (lambda: send_receipt.payload(1, "x", 3), "#3", "too many positional arguments"),  # type: ignore[call-arg]
        (lambda: send_receipt.payload(1, note=object()), "note", "valid string"),  # type: ignore[arg-type]
        (
            lambda: ship_order.payload(**{**everything(), "when": "2026-12-07"}),
            "when",
            "valid datetime",
        ),
        (
            lambda: ship_order.payload(**{**everything(), "lines": [{"sku": "a"}]}),
            "lines[0]",
            "",
        ),
        (lambda: ship_order.payload(**{**everything(), "color": "red"}), "color", ""),
    ],
)
def test_bad_arguments_name_the_task_the_argument_and_what_is_expected(
    call: Any, argument: str, problem: str
) -> None:
    with pytest.raises(TaskArgumentError) as raised:
        call()
    error = raised.value
    assert isinstance(error, InvalidArgumentError)  # what every bad input raises
    assert error.argument == argument
    assert str(error).startswith(f"task '{error.task}', argument {argument}")
    assert problem in str(error)
    assert f"({error.task}(" in str(error)  # the task's signature, to compare with


def test_a_value_json_cannot_hold_is_refused_at_enqueue() -> None:
    registry = TaskRegistry()

    @registry.task
    def anything(value: Any) -> None: ...

    assert anything.payload({"a": [1, 2]}) == {"value": {"a": [1, 2]}}
    with pytest.raises(TaskArgumentError, match="not JSON-serialisable"):
        anything.payload(object())
    with pytest.raises(InvalidArgumentError, match="not JSON compliant"):
        anything.job(float("nan"))  # the payload check every job gets


def test_a_payload_that_cannot_be_the_arguments_is_refused_with_what_is_wrong() -> None:
    for payload, expected in [
        ([1, 2], "it must be a JSON object of arguments"),
        ({"order_id": "forty-two"}, "order_id: Input should be a valid integer"),
        ({"order_id": 1, "extra": True}, "extra: Extra inputs are not permitted"),
        ({}, "order_id: Field required"),
    ]:
        with pytest.raises(InvalidPayloadError) as raised:
            send_receipt.arguments.decode(payload)
        assert "cannot be the arguments of task 'send_receipt'" in str(raised.value)
        assert expected in str(raised.value)


def test_declaring_refuses_what_cannot_be_named_in_a_payload() -> None:
    registry = TaskRegistry()
    for function in (lambda *args: None, lambda **kwargs: None):
        with pytest.raises(InvalidArgumentError, match="positional-only or variadic"):
            registry.task(name=f"t{id(function)}")(function)

    def positional_only(a: int, /) -> None: ...

    with pytest.raises(InvalidArgumentError, match="positional-only"):
        registry.task(positional_only)

    @registry.task
    def twice(a: int) -> None: ...

    with pytest.raises(InvalidArgumentError, match="unique"):
        registry.task(name="twice")(lambda a: None)


def test_calling_the_task_calls_the_function() -> None:
    registry = TaskRegistry()

    @registry.task
    def double(n: int) -> int:
        return 2 * n

    assert double(21) == 42


# --- Enqueueing ---------------------------------------------------------------------------------


def test_job_enqueues_with_the_tasks_options_and_using_overrides_them(jobs_engine: Engine) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    with Session(jobs_engine) as session, session.begin():
        plain = session.execute(ship_order.job(**everything())).one()
        later = session.execute(
            ship_order.using(run_at=when, job_key="ship:1", priority=1).job(**everything())
        ).one()
    assert (plain.task_identifier, plain.queue_name, plain.priority, plain.max_attempts) == (
        "ship",
        "shipping",
        3,
        4,
    )
    assert plain.payload == ship_order.payload(**everything())
    assert (later.run_at, later.key, later.priority, later.queue_name) == (
        when,
        "ship:1",
        1,
        "shipping",
    )


def test_bad_arguments_enqueue_nothing(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        with pytest.raises(TaskArgumentError):
            connection.execute(send_receipt.job(order_id="42"))  # type: ignore[arg-type]
        with pytest.raises(TaskArgumentError):
            connection.execute(send_receipt.jobs([{"order_id": 1}, {"orderid": 2}]))
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 0


def test_bulk_jobs_and_specs_mixed_with_other_tasks(jobs_engine: Engine) -> None:
    with jobs_engine.begin() as connection:
        rows = connection.execute(
            send_receipt.jobs([{"order_id": 1}, {"order_id": 2, "note": "x"}])
        )
        assert [row.payload for row in rows] == [{"order_id": 1}, {"order_id": 2, "note": "x"}]
        mixed = connection.execute(
            add_jobs([send_receipt.spec(3), ship_order.spec(**everything())], returning=False)
        )
        assert mixed.scalar_one() == 2


@pytest.mark.asyncio
async def test_job_runs_on_an_async_session(database_url: URL) -> None:
    engine = create_async_engine(database_url.set(drivername="postgresql+psycopg"))
    engine = engine.execution_options(schema_translate_map={"app_jobs": SCHEMA})
    try:
        async with engine.begin() as connection:
            row = (await connection.execute(send_receipt.job(order_id=7))).one()
        assert (row.task_identifier, row.payload) == ("send_receipt", {"order_id": 7})
    finally:
        await engine.dispose()


# --- Running --------------------------------------------------------------------------------------


def test_a_worker_runs_typed_tasks_with_their_values_and_fails_bad_payloads_for_good(
    database_url: URL, jobs_engine: Engine
) -> None:
    """Sync and async typed tasks get their arguments as Python values and the job; a
    payload written by raw SQL that cannot be the arguments fails on its first attempt,
    for good, with what is wrong (no pointless retries)."""
    seen: list[tuple[str, Any]] = []
    registry = TaskRegistry()

    @registry.task(name="ship")
    async def ship(
        order_id: UUID,
        when: datetime,
        day: date,
        amount: Decimal,
        color: Color,
        lines: list[Line],
        to: Address,
        job: Job,
    ) -> None:
        await asyncio.sleep(0)
        seen.append(("ship", ({**locals()} | {"job": job.id})))

    @registry.task
    def receipt(order_id: int, note: str = "none") -> None:
        seen.append(("receipt", (order_id, note)))

    with jobs_engine.begin() as connection:
        shipped = connection.execute(ship.job(**everything())).one().id
        connection.execute(receipt.job(order_id=5))
        bad = connection.execute(add_job("receipt", {"order_id": "five"}, max_attempts=5)).one().id
    worker = Worker(database_url, registry, schema=SCHEMA, poll_interval=0.5)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        wait_for(lambda: _history(jobs_engine) >= 3)
    finally:
        worker.stop()
        thread.join(30)
    [(_, values)] = [entry for entry in seen if entry[0] == "ship"]
    assert {name: values[name] for name in everything()} == everything()
    assert values["job"] == shipped
    assert ("receipt", (5, "none")) in seen
    with jobs_engine.connect() as connection:
        [row] = connection.execute(select(jobs).where(jobs.c.id == bad)).all()
        [recorded] = connection.execute(
            select(job_history).where(job_history.c.job_id == bad)
        ).all()
    assert (row.attempts, row.max_attempts, row.locked_by) == (5, 5, None)  # failed for good
    assert row.last_error.startswith("InvalidPayloadError: the payload {'order_id': 'five'}")
    assert "order_id: Input should be a valid integer" in row.last_error
    assert recorded.outcome == "failed"


def _history(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(job_history)).scalar_one())


def test_run_jobs_runs_typed_tasks_and_fails_bad_payloads_for_good(jobs_engine: Engine) -> None:
    registry = TaskRegistry()
    got: list[int] = []

    @registry.task
    def count(n: int) -> None:
        got.append(n)

    with jobs_engine.begin() as connection:
        connection.execute(count.job(n=3))
        connection.execute(add_job("count", {"n": [1]}))
        report = run_jobs(connection, registry)
        assert got == [3]
        [(failed, error)] = report.failed
        assert "cannot be the arguments of task 'count'" in error
        attempts = connection.execute(
            select(jobs.c.attempts, jobs.c.max_attempts).where(jobs.c.id == failed.id)
        ).one()
        assert attempts.attempts == attempts.max_attempts


# --- Static typing ------------------------------------------------------------------------------


def test_mypy_reports_a_wrong_argument_type_and_accepts_the_right_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            from sqla_pgjobs import TaskRegistry

            tasks = TaskRegistry()

            @tasks.task
            def send_receipt(order_id: int, note: str = "") -> None: ...

            @tasks.task(queue_name="mail")
            async def resend(order_id: int) -> None: ...

            good = send_receipt.job(order_id=42, note="thanks")
            also_good = resend.using(priority=1).job(7)
            bad = send_receipt.job(order_id="x")
            missing = resend.job()
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(sample)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["14", "15"], result.stdout
    assert 'Argument "order_id" to "job" of "TypedTask" has incompatible type "str"' in errors[0]
    assert 'Missing positional argument "order_id"' in errors[1]


# --- Per-task policy ------------------------------------------------------------------------------


def test_key_and_queue_templates_are_filled_with_the_arguments(jobs_engine: Engine) -> None:
    registry = TaskRegistry()

    @registry.task(key="receipt:{order_id}", queue_name="mail:{tenant}")
    def receipt(order_id: int, tenant: str = "main", note: str = "") -> None: ...

    with jobs_engine.begin() as connection:
        first = connection.execute(receipt.job(42, note="first")).one()
        again = connection.execute(receipt.job(42, note="second")).one()
        other = connection.execute(receipt.using(job_key="r:{order_id}:{note}").job(7, "b")).one()
    assert (first.key, first.queue_name) == ("receipt:42", "mail:main")
    # A duplicate key replaces the waiting job: one job, with the newer arguments.
    assert again.id == first.id and again.payload == {"order_id": 42, "note": "second"}
    assert (other.key, other.queue_name) == ("r:7:", "mail:b")
    assert registry["receipt"].queue_name is None  # the template is filled per job


def test_templates_naming_no_argument_are_refused_at_declaration() -> None:
    registry = TaskRegistry()
    with pytest.raises(InvalidArgumentError, match=r"\{orderid\} names no argument"):

        @registry.task(key="receipt:{orderid}")
        def receipt(order_id: int) -> None: ...

    with pytest.raises(InvalidArgumentError) as raised:
        registry.task("payloads", key="k:{x}")
    assert raised.value.argument == "key"
    with pytest.raises(InvalidArgumentError) as raised:
        registry.task(backoff=5)  # type: ignore[call-overload]
    assert raised.value.argument == "backoff"


def test_handlers_choose_how_they_fail(database_url: URL, jobs_engine: Engine) -> None:
    """Snooze: later, the attempt refunded; RetryAt: later, the attempt counted; FailForGood:
    no retry; a task's own backoff: its delay; a typed task without one: jittered
    exponential (e^1 s times 0.5-1 after a first failure)."""
    registry = TaskRegistry()
    later = datetime.now(UTC) + timedelta(hours=2)

    @registry.task
    def snoozing(n: int) -> None:
        raise Snooze(timedelta(hours=1))

    @registry.task
    def retrying(n: int) -> None:
        raise RetryAt(later)

    @registry.task
    def giving_up(n: int) -> None:
        raise FailForGood("the order was deleted")

    @registry.task(backoff=lambda attempt: timedelta(minutes=10 * attempt))
    def own_backoff(n: int) -> None:
        raise ValueError("no")

    @registry.task
    def jittered(n: int) -> None:
        raise ValueError("no")

    @registry.task("payload_snooze")
    def payload_snooze(payload: dict[str, Any]) -> None:
        raise Snooze(delay=60)

    names = ["snoozing", "retrying", "giving_up", "own_backoff", "jittered"]
    with jobs_engine.begin() as connection:
        ids = {name: connection.execute(registry[name].job({"n": 1})).one().id for name in names}
        ids["payload_snooze"] = connection.execute(add_job("payload_snooze", {})).one().id
    started = datetime.now(UTC)
    Worker(database_url, registry, schema=SCHEMA, prune_interval=None).run(
        drain=True, install_signal_handlers=False
    )
    with jobs_engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(select(jobs))}
        finished = {row.job_id: row.outcome for row in connection.execute(select(job_history))}
    snoozed, retried, gave_up = rows[ids["snoozing"]], rows[ids["retrying"]], rows[ids["giving_up"]]
    assert (snoozed.attempts, snoozed.locked_by) == (0, None)
    assert timedelta(minutes=59) < snoozed.run_at - started < timedelta(minutes=61)
    assert snoozed.last_error.startswith("Snooze: snoozed until")
    assert (retried.attempts, retried.run_at) == (1, later)
    assert (gave_up.attempts, gave_up.max_attempts) == (25, 25)
    assert gave_up.last_error.startswith("FailForGood: the order was deleted")
    assert finished == {ids["giving_up"]: "failed"}
    own = rows[ids["own_backoff"]]
    assert timedelta(minutes=9) < own.run_at - started < timedelta(minutes=11)
    delay = rows[ids["jittered"]].run_at - started
    assert timedelta(seconds=1.3) < delay < timedelta(seconds=2.8 + 5)
    assert rows[ids["payload_snooze"]].attempts == 0


def test_exponential_backoff_grows_and_spreads() -> None:
    delays = [exponential_backoff(3).total_seconds() for _ in range(200)]
    assert 20.08 * 0.5 <= min(delays) < max(delays) <= 20.09
    assert exponential_backoff(50) <= timedelta(seconds=22027)  # capped at e^10


def test_bad_snooze_and_retry_times_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        Snooze()
    with pytest.raises(InvalidArgumentError):
        Snooze(-1)
    with pytest.raises(InvalidArgumentError):
        RetryAt(datetime(2030, 1, 1))  # naive
    with pytest.raises(InvalidArgumentError):
        RetryAt(datetime.now(UTC), delay=5)
