"""The shop's behaviour, tested with sqla_pgjobs' testing helpers on a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from shop.models import Base, Order
from shop.services import pay, place_order
from shop.tasks import OUTBOX, tasks
from sqlalchemy.orm import Session

from sqla_pgjobs.testing import advance_time, assert_enqueued, enqueued, run_jobs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@pytest.fixture
def shop(pgjobs_engine: Engine) -> Engine:
    Base.metadata.create_all(pgjobs_engine)  # the tables, and the trigger on orders
    OUTBOX.clear()
    return pgjobs_engine


def test_placing_an_order_enqueues_its_receipt_in_the_same_transaction(shop: Engine) -> None:
    with Session(shop) as session, session.begin():
        order_id = place_order(session, "ada").id
    assert_enqueued(shop, "send_receipt", {"order_id": order_id, "customer": "ada"}, count=1)

    with Session(shop) as session:
        place_order(session, "bob")
        session.rollback()  # no order, no job
    assert_enqueued(shop, "send_receipt", {"customer": "ada"}, count=1)


def test_due_jobs_run_and_delayed_ones_wait_until_their_time(shop: Engine) -> None:
    with Session(shop) as session, session.begin():
        order_id = place_order(session, "ada").id
    report = run_jobs(shop, tasks)
    assert report.tasks == ["send_receipt"]
    assert [("receipt", order_id)] == OUTBOX
    assert_enqueued(shop, "remind_unpaid", {"order_id": order_id}, key=f"remind:{order_id}")

    advance_time(shop, timedelta(days=1))
    assert run_jobs(shop, tasks).tasks == ["remind_unpaid"]
    assert OUTBOX[-1] == ("reminder", order_id)
    assert enqueued(shop) == []


def test_paying_enqueues_shipping_through_the_table_trigger(shop: Engine) -> None:
    with Session(shop) as session, session.begin():
        order = place_order(session, "ada")
        pay(session, order)
        pay(session, order)  # paying twice ships once
        order_id = order.id
    assert_enqueued(shop, "ship_order", {"id": order_id}, key=f"ship:{order_id}", count=1)
    assert "shipped" not in [kind for kind, _ in OUTBOX]
    run_jobs(shop, tasks)
    assert ("shipped", order_id) in OUTBOX


def test_jobs_can_run_inside_the_tests_own_transaction(shop: Engine) -> None:
    with shop.connect() as connection:
        transaction = connection.begin()
        with Session(bind=connection) as session:
            order = place_order(session, "ada")
            connection.execute(Order.__table__.update().values(status="paid"))
        report = run_jobs(connection, tasks)
        assert sorted(report.tasks) == ["send_receipt", "ship_order"]
        transaction.rollback()
    assert enqueued(shop) == []
    assert order.id is not None


def test_a_failing_handler_fails_its_job_as_a_worker_would(shop: Engine) -> None:
    with Session(shop) as session, session.begin():
        session.execute(tasks["ship_order"].job({"no_id": True}))
    report = run_jobs(shop, tasks)
    [(_, error)] = report.failed
    assert error.startswith("KeyError")
    [left] = enqueued(shop, "ship_order")
    assert (left["attempts"], left["last_error"]) == (1, error)
    with pytest.raises(KeyError):
        advance_time(shop, timedelta(minutes=1))
        run_jobs(shop, tasks, raise_errors=True)


def test_assert_enqueued_says_what_is_there_when_it_fails(shop: Engine) -> None:
    with Session(shop) as session, session.begin():
        place_order(session, "ada")
    with pytest.raises(
        AssertionError, match="expected 1 job\\(s\\) of task 'send_receipt'"
    ) as info:
        assert_enqueued(shop, "send_receipt", {"customer": "zoe"}, count=1)
    assert "'customer': 'ada'" in str(info.value)
