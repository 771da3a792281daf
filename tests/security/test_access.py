"""S6 privileges on a real server: what a role can and cannot do at each access level.

A role without a grant stands for PUBLIC and gets nothing. ``enqueue`` adds jobs and
schedules and builds enqueue triggers on its own tables; ``worker`` also takes, finishes and
releases jobs and runs schedules; ``operator`` also administers any job and reads the tables.
``read`` (version 2) reads the tables and nothing else; ``operator`` contains it. No level
may write the tables directly, change the schema, or raise its own level. Revoking a level
leaves the role exactly as it was. Roles are cluster-wide: every role made here has
a unique name and is dropped when its test ends.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sqla_pgjobs import InvalidArgumentError
from sqla_pgjobs import admin as admin_views
from sqla_pgjobs.alembic.ops import GrantPgjobsAccessOp, RevokePgjobsAccessOp
from sqla_pgjobs.functions import (
    JobSpec,
    add_job,
    add_jobs,
    add_scheduled_job,
    complete_job,
    complete_job_batch,
    complete_jobs,
    fail_job,
    fail_job_batch,
    get_job,
    get_jobs,
    get_scheduled_job,
    get_scheduled_jobs,
    grant_access,
    heartbeat,
    permanently_fail_jobs,
    release_jobs,
    release_scheduled_jobs,
    renew_scheduled_jobs,
    reschedule_jobs,
    revoke_access,
    run_scheduled_job,
)
from sqla_pgjobs.schema import LATEST_VERSION
from tests.helpers import SCHEMA, catalog, run_ops, sql
from tests.roles import Role, ident

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine
    from sqlalchemy.sql import Executable

TENANT = "5b720132-17d5-424d-9bcb-ee7b17c13d43"
WORKER = "worker-1"
LEVELS = ("read", "enqueue", "worker", "operator")

#: The functions each level may execute, by name (every overload of a name).
READ_FUNCTIONS = {"alive_until"}  # version 2: the read level tells live workers, no more
ENQUEUE_FUNCTIONS = {
    "add_job",
    "add_jobs",
    "add_scheduled_job",
    "tg_add_job_with_row_id",
    "tg_add_job_with_row",
    "tg_add_job_with_fields",
    "trigger_job_with_fields",
    "tg_add_job",
    "set_trace_contexts",  # version 2: the trace context of the enqueuing span (tracing)
}
WORKER_FUNCTIONS = ENQUEUE_FUNCTIONS | {
    "get_job",
    "get_jobs",
    "complete_job",
    "complete_job_batch",
    "fail_job",
    "fail_job_batch",
    "release_jobs",
    "heartbeat",
    "next_run_at",
    "recover_jobs",
    "worker_cycle",
    "get_scheduled_job",
    "get_scheduled_jobs",
    "renew_scheduled_jobs",
    "release_scheduled_jobs",
    "run_scheduled_job",
    "prune_job_history",  # version 2: workers prune the job history
    "claim_maintenance",  # ... one at a time
    "cancel_requested_jobs",  # version 2: workers read the requests to stop their jobs
    "fail_jobs_for_good",  # version 2: a payload that cannot be its typed task's arguments
    "retry_jobs_at",  # version 2: a task's own backoff, RetryAt and Snooze
    "trace_contexts",  # version 2: the trace contexts of the jobs taken (tracing)
}
OPERATOR_FUNCTIONS = (
    WORKER_FUNCTIONS
    | READ_FUNCTIONS
    | {
        "complete_jobs",
        "permanently_fail_jobs",
        "reschedule_jobs",
        "set_history_retention",  # version 2
        "discard_jobs",  # version 2
        "pause_queue",  # version 2
        "resume_queue",
        "pause_task",
        "resume_task",
        "cancel_jobs",  # version 2
    }
)
FUNCTIONS = {
    "read": READ_FUNCTIONS,
    "enqueue": ENQUEUE_FUNCTIONS,
    "worker": WORKER_FUNCTIONS,
    "operator": OPERATOR_FUNCTIONS,
}
TABLES = {"jobs", "scheduled_jobs", "job_queues", "migrations", "workers"} | {
    "job_history",  # version 2
    "history_retention",
    "job_first_starts",
    "maintenance",
    "pauses",
    "cancel_requests",
    "job_trace_contexts",
}

#: One call of every wrapper beyond enqueueing, with the lowest level allowed to make it.
CALLS: dict[str, tuple[str, Callable[[], Executable]]] = {
    "get_job": ("worker", lambda: get_job(WORKER)),
    "get_jobs": ("worker", lambda: get_jobs(WORKER, max_jobs=2)),
    "complete_job": ("worker", lambda: complete_job(WORKER, 1)),
    "complete_job_batch": ("worker", lambda: complete_job_batch(WORKER, [1])),
    "fail_job": ("worker", lambda: fail_job(WORKER, 1, "boom")),
    "fail_job_batch": ("worker", lambda: fail_job_batch(WORKER, [1])),
    "release_jobs": ("worker", lambda: release_jobs(WORKER)),
    "get_scheduled_job": ("worker", lambda: get_scheduled_job(WORKER)),
    "get_scheduled_jobs": ("worker", lambda: get_scheduled_jobs(WORKER)),
    "renew_scheduled_jobs": ("worker", lambda: renew_scheduled_jobs(WORKER)),
    "release_scheduled_jobs": ("worker", lambda: release_scheduled_jobs(WORKER)),
    "run_scheduled_job": ("worker", lambda: run_scheduled_job(1)),
    "complete_jobs": ("operator", lambda: complete_jobs([1])),
    "permanently_fail_jobs": ("operator", lambda: permanently_fail_jobs([1])),
    "reschedule_jobs": ("operator", lambda: reschedule_jobs([1], priority=1)),
}

#: Statements no level may run: direct writes, schema changes, raising one's own level.
FORBIDDEN_FOR_ALL = [
    "INSERT INTO app_jobs.jobs (task_identifier) VALUES ('sneaky')",
    "UPDATE app_jobs.jobs SET priority = -100",
    "DELETE FROM app_jobs.jobs",
    "TRUNCATE app_jobs.jobs",
    "UPDATE app_jobs.scheduled_jobs SET locked_by = NULL",
    "DELETE FROM app_jobs.job_queues",
    "INSERT INTO app_jobs.migrations (version) VALUES (99)",
    "DROP SCHEMA app_jobs CASCADE",
    "DROP TABLE app_jobs.jobs",
    "ALTER TABLE app_jobs.jobs ADD COLUMN note text",
    "ALTER FUNCTION app_jobs.release_jobs(text, bigint[]) SECURITY INVOKER",
    "CREATE TABLE app_jobs.mine (id integer)",
]
#: Reading the tables: the read and operator levels only.
READS = [f"SELECT count(*) FROM app_jobs.{table}" for table in sorted(TABLES)]

PRIVILEGES = """
SELECT 'schema', n.nspname::text, p.priv, has_schema_privilege(:role, n.oid, p.priv)
  FROM pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) AS p(priv)
 WHERE n.oid = :ns
UNION ALL
SELECT 'function', f.oid::regprocedure::text, 'EXECUTE',
       has_function_privilege(:role, f.oid, 'EXECUTE')
  FROM pg_proc f
 WHERE f.pronamespace = :ns
UNION ALL
SELECT 'table', c.oid::regclass::text, p.priv, has_table_privilege(:role, c.oid, p.priv)
  FROM pg_class c,
       unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',
                    'TRIGGER']) AS p(priv)
 WHERE c.relnamespace = :ns AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'column', c.oid::regclass::text, p.priv, has_any_column_privilege(:role, c.oid, p.priv)
  FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) AS p(priv)
 WHERE c.relnamespace = :ns AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'sequence', c.oid::regclass::text, p.priv, has_sequence_privilege(:role, c.oid, p.priv)
  FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p(priv)
 WHERE c.relnamespace = :ns AND c.relkind = 'S'
UNION ALL
SELECT 'type', t.oid::regtype::text, 'USAGE', has_type_privilege(:role, t.oid, 'USAGE')
  FROM pg_type t
 WHERE t.typnamespace = :ns
UNION ALL
SELECT 'member of', m.roleid::regrole::text, '', true
  FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
 WHERE r.rolname = :role
ORDER BY 1, 2, 3
"""


# --- Helpers --------------------------------------------------------------------------------


def sqlstate(error: BaseException) -> str | None:
    return getattr(getattr(error, "orig", None), "sqlstate", None)


def assert_refused(role: Role, statement: Executable | str, **params: Any) -> None:
    """``statement`` run as ``role`` fails with insufficient_privilege (42501)."""
    executable = sql(statement) if isinstance(statement, str) else statement
    with pytest.raises(DBAPIError) as info:
        with role.engine.begin() as connection:
            connection.execute(executable, params)
    assert sqlstate(info.value) == "42501", f"{statement}: {info.value}"


def assert_all_refused(role: Role, statements: list[str]) -> None:
    for statement in statements:
        assert_refused(role, statement)


def assert_calls_above_refused(role: Role, level: str | None) -> None:
    """Every wrapper call that needs more than ``level`` is refused with 42501."""
    rank = -1 if level is None else LEVELS.index(level)
    for needs, call in CALLS.values():
        if LEVELS.index(needs) > rank:
            assert_refused(role, call())


def privileges(admin: Engine, role_name: str) -> list[tuple[Any, ...]]:
    """What ``role_name`` may do with every object of the job schema."""
    with admin.connect() as connection:
        ns = connection.execute(
            text("SELECT oid FROM pg_namespace WHERE nspname = :name"), {"name": SCHEMA}
        ).scalar_one()
        rows = connection.execute(text(PRIVILEGES), {"role": role_name, "ns": ns}).all()
    return [tuple(row) for row in rows]


def executable_functions(admin: Engine, role_name: str) -> set[str]:
    with admin.connect() as connection:
        return set(
            connection.execute(
                sql(
                    "SELECT p.proname::text FROM pg_proc p"
                    " WHERE p.pronamespace = (SELECT t.typnamespace FROM pg_type t"
                    "                          WHERE t.oid = pg_typeof(NULL::app_jobs.jobs))"
                    "   AND has_function_privilege(:role, p.oid, 'EXECUTE')"
                ),
                {"role": role_name},
            ).scalars()
        )


def readable_tables(admin: Engine, role_name: str) -> set[str]:
    with admin.connect() as connection:
        return set(
            connection.execute(
                text(
                    "SELECT c.relname::text FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :schema AND c.relkind = 'r'"
                    "   AND has_table_privilege(:role, c.oid, 'SELECT')"
                ),
                {"schema": SCHEMA, "role": role_name},
            ).scalars()
        )


def grant(admin: Engine, role_name: str, level: str) -> None:
    with Session(admin) as session:
        session.execute(grant_access(role_name, level))
        session.commit()


def revoke(admin: Engine, role_name: str, level: str) -> None:
    with Session(admin) as session:
        session.execute(revoke_access(role_name, level))
        session.commit()


def job_rows(admin: Engine, where: str = "true", **params: Any) -> list[Any]:
    with admin.connect() as connection:
        return list(
            connection.execute(
                sql(
                    "SELECT id, database_id::text AS tenant, task_identifier, payload::text,"
                    " locked_by, attempts, max_attempts, priority, last_error"
                    f" FROM app_jobs.jobs WHERE {where} ORDER BY id"
                ),
                params,
            ).all()
        )


# --- Fixtures -------------------------------------------------------------------------------


def role_at(make_role: Callable[..., Role], admin: Engine, level: str) -> Role:
    role = make_role(f"pgjobs_{level[:3]}_")
    grant(admin, role.name, level)
    return role


# --- 1. No grant: PUBLIC gets nothing -------------------------------------------------------


def test_role_without_grant_cannot_use_the_schema_or_any_function(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = make_role("pgjobs_none_")
    assert_refused(role, add_job("sneaky"))
    assert_refused(role, "SELECT * FROM app_jobs.add_job(NULL, 'sneaky')")
    assert_refused(role, "SELECT * FROM app_jobs.jobs")
    assert_all_refused(role, FORBIDDEN_FOR_ALL)
    # Types keep PostgreSQL's default USAGE for PUBLIC; useless without USAGE on the schema.
    assert [row for row in privileges(admin, role.name) if row[3] and row[0] != "type"] == []
    assert job_rows(admin) == []


def test_public_has_no_execute_even_with_usage_on_the_schema(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = make_role("pgjobs_usage_")
    with admin.begin() as connection:
        connection.execute(sql(f"GRANT USAGE ON SCHEMA app_jobs TO {ident(role.name)}"))
    assert executable_functions(admin, role.name) == set()
    assert readable_tables(admin, role.name) == set()
    assert_refused(role, add_job("sneaky"))
    assert_refused(role, "SELECT app_jobs.grant_access(current_user, 'operator')")
    assert_calls_above_refused(role, None)
    assert_all_refused(role, READS)
    assert job_rows(admin) == []


# --- 2. enqueue -----------------------------------------------------------------------------


def test_enqueue_role_adds_jobs_and_schedules_through_wrappers_and_sql(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "enqueue")
    with role.engine.begin() as connection:
        one = connection.execute(add_job("send_email", {"to": "a@b.c"}, db_id=TENANT)).one()
        many = connection.execute(add_jobs([JobSpec("bulk_a", 1), JobSpec("bulk_b", 2)])).all()
        schedule = connection.execute(
            add_scheduled_job("tick", {"n": 1}, "0 3 * * *", job_key="nightly")
        ).one()
        raw_one = connection.execute(
            sql("SELECT id FROM app_jobs.add_job(NULL, 'raw_task', json_build_object('n', 1))")
        ).scalar_one()
        raw_many_ids = (
            connection.execute(sql("SELECT id FROM app_jobs.add_jobs(ARRAY['raw_a', 'raw_b'])"))
            .scalars()
            .all()
        )
        raw_schedule = connection.execute(
            sql("SELECT id FROM app_jobs.add_scheduled_job(NULL, 'raw_tick')")
        ).scalar_one()

    assert one.payload == {"to": "a@b.c"}
    jobs = {row.id: row for row in job_rows(admin)}
    assert [jobs[i].task_identifier for i in [one.id, *(j.id for j in many)]] == [
        "send_email",
        "bulk_a",
        "bulk_b",
    ]
    assert jobs[one.id].tenant == TENANT
    assert [jobs[i].task_identifier for i in [raw_one, *raw_many_ids]] == [
        "raw_task",
        "raw_a",
        "raw_b",
    ]
    assert jobs[raw_one].payload == '{"n" : 1}'
    with admin.connect() as connection:
        schedules = connection.execute(
            sql("SELECT id, task_identifier, key FROM app_jobs.scheduled_jobs ORDER BY id")
        ).all()
    assert [tuple(s) for s in schedules] == [
        (schedule.id, "tick", "nightly"),
        (raw_schedule, "raw_tick", None),
    ]


def test_enqueue_role_builds_enqueue_triggers_on_its_own_table(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "enqueue")
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA shop AUTHORIZATION {ident(role.name)}"))
    with role.engine.begin() as connection:
        connection.execute(text("CREATE TABLE shop.orders (id serial PRIMARY KEY, item text)"))
        for name, function, args in [
            ("a_ship", "tg_add_job_with_row_id", f"'{TENANT}', 'ship_order', 'id'"),
            ("b_bill", "tg_add_job_with_fields", f"'{TENANT}', 'bill_order', 'item'"),
            ("c_audit", "tg_add_job_with_row", "'audit_order'"),
            ("d_legacy", "trigger_job_with_fields", "'legacy_order', 'id'"),
        ]:
            connection.execute(
                sql(
                    f"CREATE TRIGGER {name} AFTER INSERT ON shop.orders FOR EACH ROW"
                    f" EXECUTE FUNCTION app_jobs.{function}({args})"
                )
            )
    with role.engine.begin() as connection:
        connection.execute(text("INSERT INTO shop.orders (item) VALUES ('book')"))
    assert [(r.tenant, r.task_identifier, r.payload) for r in job_rows(admin)] == [
        (TENANT, "ship_order", '{"id" : 1}'),
        (TENANT, "bill_order", '{ "item" : "book" }'),
        (None, "audit_order", '{"id":1,"item":"book"}'),
        (None, "legacy_order", '{ "id" : 1 }'),
    ]


def test_enqueue_role_cannot_take_finish_administer_read_write_or_change_the_schema(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "enqueue")
    with admin.begin() as connection:
        connection.execute(add_job("untouchable"))
    assert_refused(role, grant_access(role.name, "operator"))
    assert_refused(role, grant_access(role.name, "worker"))
    assert_refused(role, "SELECT app_jobs.access_functions('operator')")
    assert executable_functions(admin, role.name) == ENQUEUE_FUNCTIONS
    assert_calls_above_refused(role, "enqueue")
    assert_all_refused(role, READS)
    assert_all_refused(role, FORBIDDEN_FOR_ALL)
    (job,) = job_rows(admin)
    assert (job.task_identifier, job.locked_by, job.attempts) == ("untouchable", None, 0)


# --- 3. worker ------------------------------------------------------------------------------


def exercise_worker(role: Role, admin: Engine) -> None:
    """Everything a worker does, with its effects checked as the superuser."""
    with role.engine.begin() as connection:
        ids = [
            row.id
            for row in connection.execute(add_jobs([JobSpec(f"w{i}", {"i": i}) for i in range(4)]))
        ]
    with role.engine.begin() as connection:
        taken = connection.execute(get_jobs(WORKER, max_jobs=4)).all()
        assert sorted(row.id for row in taken) == sorted(ids)
        assert [row.id for row in connection.execute(complete_job_batch(WORKER, ids[:1]))] == [
            ids[0]
        ]
        failed = connection.execute(fail_job_batch(WORKER, ids[1:2], ["boom"])).one()
        assert failed.last_error == "boom"
        connection.execute(release_jobs(WORKER))
    rows = {row.id: row for row in job_rows(admin, "id = ANY(:ids)", ids=ids)}
    assert ids[0] not in rows
    assert (rows[ids[1]].locked_by, rows[ids[1]].attempts, rows[ids[1]].last_error) == (
        None,
        1,
        "boom",
    )
    assert [(rows[i].locked_by, rows[i].attempts) for i in ids[2:]] == [(None, 0), (None, 0)]

    with role.engine.begin() as connection:
        first = connection.execute(get_job(WORKER)).one()
        assert first.id == ids[2]
        assert connection.execute(complete_job(WORKER, first.id)).one().id == ids[2]
        second = connection.execute(
            sql("SELECT * FROM app_jobs.get_job(:worker, NULL::text[])"), {"worker": "node-w"}
        ).one()
        assert second.id == ids[3]
        assert connection.execute(fail_job("node-w", second.id, "oops")).one().id == ids[3]
    rows = {row.id: row for row in job_rows(admin, "id = ANY(:ids)", ids=ids)}
    assert sorted(rows) == [ids[1], ids[3]]
    assert (rows[ids[3]].locked_by, rows[ids[3]].last_error) == (None, "oops")

    with role.engine.begin() as connection:
        schedule = connection.execute(add_scheduled_job("tick", {"n": 1})).one()
        other = connection.execute(add_scheduled_job("tock")).one()
    with role.engine.begin() as connection:
        claimed = connection.execute(get_scheduled_job(WORKER, ["tick"])).one()
        assert (claimed.id, claimed.locked_by) == (schedule.id, WORKER)
        claimed_too = connection.execute(get_scheduled_jobs(WORKER, ["tock"], max_jobs=5)).all()
        assert [row.id for row in claimed_too] == [other.id]
        renewed = connection.execute(renew_scheduled_jobs(WORKER, [schedule.id])).all()
        assert [row.id for row in renewed] == [schedule.id]
        fired = connection.execute(run_scheduled_job(schedule.id)).one()
        assert (fired.task_identifier, fired.payload) == ("tick", {"n": 1})
        connection.execute(release_scheduled_jobs(WORKER))
    with admin.connect() as connection:
        holders = connection.execute(
            sql("SELECT locked_by, last_scheduled_id FROM app_jobs.scheduled_jobs ORDER BY id")
        ).all()
    assert [tuple(row) for row in holders] == [(None, fired.id), (None, None)]
    assert [row.task_identifier for row in job_rows(admin, "id = :id", id=fired.id)] == ["tick"]


def test_worker_role_adds_takes_completes_fails_releases_and_runs_schedules(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "worker")
    exercise_worker(role, admin)


def test_worker_role_cannot_administer_read_write_or_change_the_schema(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "worker")
    with admin.begin() as connection:
        job_id = connection.execute(add_job("untouchable")).one().id
    assert_refused(role, grant_access(role.name, "operator"))
    assert executable_functions(admin, role.name) == WORKER_FUNCTIONS
    assert readable_tables(admin, role.name) == set()
    assert_refused(role, complete_jobs([job_id]))
    assert_refused(role, permanently_fail_jobs([job_id], "no"))
    assert_refused(role, reschedule_jobs([job_id], priority=9))
    assert_calls_above_refused(role, "worker")
    assert_all_refused(role, READS)
    assert_all_refused(role, FORBIDDEN_FOR_ALL)
    (job,) = job_rows(admin)
    assert (job.id, job.priority, job.attempts, job.last_error) == (job_id, 0, 0, None)


# --- 4. operator ----------------------------------------------------------------------------


def test_operator_role_does_what_a_worker_does_and_administers_any_job(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "operator")
    exercise_worker(role, admin)
    with admin.begin() as connection:
        a, b, c = (connection.execute(add_job(f"admin_{n}")).one().id for n in "abc")
    with role.engine.begin() as connection:
        assert [row.id for row in connection.execute(complete_jobs([a]))] == [a]
        assert [row.id for row in connection.execute(permanently_fail_jobs([b], "no"))] == [b]
        assert [row.id for row in connection.execute(reschedule_jobs([c], priority=9))] == [c]
    rows = {row.id: row for row in job_rows(admin, "id = ANY(:ids)", ids=[a, b, c])}
    assert a not in rows
    assert (rows[b].attempts, rows[b].last_error) == (rows[b].max_attempts, "no")
    assert rows[c].priority == 9


@pytest.mark.parametrize("level", ["operator", "read", "worker"])
def test_the_operator_views_need_the_read_or_operator_level(
    admin: Engine, make_role: Callable[..., Role], level: str
) -> None:
    """pgjobs status, jobs list and schedules read as an operator or read role; a worker
    role may not read the tables."""
    role = role_at(make_role, admin, level)
    with admin.begin() as connection:
        connection.execute(add_job("seen"))
        connection.execute(heartbeat("worker-seen", timedelta(seconds=30)))
        connection.execute(add_scheduled_job("tick"))
    if level == "worker":
        with pytest.raises(DBAPIError) as info, role.engine.connect() as connection:
            admin_views.status(connection)
        assert sqlstate(info.value) == "42501"
        return
    with role.engine.connect() as connection:
        status = admin_views.status(connection)
        listed = admin_views.list_jobs(connection)
    assert status.totals["due"] == 1
    assert [(w.worker_id, w.alive) for w in status.workers] == [("worker-seen", True)]
    assert [s.task_identifier for s in status.schedules] == ["tick"]
    assert [job.task_identifier for job in listed] == ["seen"]


def test_operator_role_reads_every_table_but_cannot_write_or_change_the_schema(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = role_at(make_role, admin, "operator")
    with admin.begin() as connection:
        connection.execute(add_job("visible", queue_name="q1"))
        connection.execute(add_scheduled_job("visible_tick"))
    assert executable_functions(admin, role.name) == OPERATOR_FUNCTIONS
    assert readable_tables(admin, role.name) == TABLES
    with role.engine.connect() as connection:
        assert connection.execute(
            sql("SELECT task_identifier FROM app_jobs.jobs")
        ).scalars().all() == ["visible"]
        assert connection.execute(
            sql("SELECT task_identifier FROM app_jobs.scheduled_jobs")
        ).scalars().all() == ["visible_tick"]
        assert connection.execute(
            sql("SELECT queue_name, job_count FROM app_jobs.job_queues")
        ).all() == [("q1", 1)]
        assert connection.execute(
            sql("SELECT version FROM app_jobs.migrations ORDER BY 1")
        ).scalars().all() == list(range(1, LATEST_VERSION + 1))
    assert_refused(role, grant_access(role.name, "operator"))
    assert_all_refused(role, FORBIDDEN_FOR_ALL)
    assert [row.task_identifier for row in job_rows(admin)] == ["visible"]


# --- 5. read -------------------------------------------------------------------------------


def test_read_role_reads_every_table_and_tells_live_workers_but_changes_nothing(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    """The level of a dashboard or a metrics exporter: it sees what an operator sees and
    can neither enqueue, take nor administer a job."""
    role = role_at(make_role, admin, "read")
    with admin.begin() as connection:
        job = connection.execute(add_job("visible", queue_name="q1")).one().id
        connection.execute(heartbeat("worker-seen", timedelta(seconds=30)))
    assert executable_functions(admin, role.name) == READ_FUNCTIONS
    assert readable_tables(admin, role.name) == TABLES
    with role.engine.connect() as connection:
        for read in READS:
            connection.execute(sql(read))
        status = admin_views.status(connection)
        alive = connection.execute(
            sql("SELECT app_jobs.alive_until(now(), interval '30 seconds') > now()")
        ).scalar_one()
    assert alive is True
    assert [(w.worker_id, w.alive) for w in status.workers] == [("worker-seen", True)]
    assert status.totals["due"] == 1
    assert_refused(role, add_job("sneaky"))
    assert_refused(role, add_jobs([JobSpec("sneaky")]))
    assert_refused(role, add_scheduled_job("sneaky_tick"))
    assert_calls_above_refused(role, "read")
    assert_refused(role, grant_access(role.name, "operator"))
    assert_refused(role, "SELECT app_jobs.cancel_jobs(ARRAY[1]::bigint[], NULL)")
    assert_refused(role, "SELECT app_jobs.pause_queue('q1')")
    assert_all_refused(role, FORBIDDEN_FOR_ALL)
    assert [row.id for row in job_rows(admin)] == [job]


def test_operator_contains_read_and_read_contains_no_other_level(admin: Engine) -> None:
    """The levels as the database lists them: enqueue < worker < operator, and read inside
    operator only."""
    listed = {}
    with admin.connect() as connection:
        for level in LEVELS:
            listed[level] = set(
                connection.execute(
                    sql(
                        "SELECT p.proname::text FROM app_jobs.access_functions(:level) f"
                        " JOIN pg_proc p ON p.oid = f"
                    ),
                    {"level": level},
                ).scalars()
            )
    assert listed == FUNCTIONS
    assert listed["read"] <= listed["operator"]
    assert not listed["read"] & listed["worker"]


# --- 6. revoke undoes grant -----------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_revoke_after_grant_leaves_the_role_exactly_as_before(
    admin: Engine, make_role: Callable[..., Role], level: str
) -> None:
    role = make_role(f"pgjobs_{level[:3]}_")
    before = privileges(admin, role.name)
    grant(admin, role.name, level)
    grant(admin, role.name, level)  # granting twice is the same as once
    assert privileges(admin, role.name) != before
    assert executable_functions(admin, role.name) == FUNCTIONS[level]
    reads = level in ("read", "operator")
    assert readable_tables(admin, role.name) == (TABLES if reads else set())
    with (admin if level == "read" else role.engine).begin() as connection:
        connection.execute(add_job("granted"))
    revoke(admin, role.name, level)
    assert privileges(admin, role.name) == before
    assert_refused(role, add_job("revoked"))
    assert_all_refused(role, READS)
    assert [row.task_identifier for row in job_rows(admin)] == ["granted"]


# --- 7. Errors ------------------------------------------------------------------------------


def test_grant_to_a_missing_role_raises_invalid_argument_and_changes_nothing(
    admin: Engine,
) -> None:
    missing = f"pgjobs_missing_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        before = catalog(connection)
    for statement in (grant_access(missing, "worker"), revoke_access(missing, "worker")):
        with pytest.raises(InvalidArgumentError) as info:
            with Session(admin) as session:
                session.execute(statement)
                session.commit()
        assert info.value.argument == "role_name"
        assert sqlstate(info.value.__cause__ or info.value) == "42704"
    with admin.connect() as connection:
        assert catalog(connection) == before
        assert (
            connection.execute(
                text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": missing}
            ).scalar_one()
            == 0
        )


@pytest.mark.parametrize("name", ["", "r" * 64, "é" * 32, "ro\x00le"])
def test_role_names_postgresql_would_not_keep_as_given_are_refused_by_wrappers_and_ops(
    name: str,
) -> None:
    """One rule for the wrappers and the Alembic ops: a role name of 1 to 63 bytes (longer
    ones PostgreSQL truncates, so the grant would go to another role)."""
    calls = [
        lambda: grant_access(name, "worker"),
        lambda: revoke_access(name, "worker"),
        lambda: GrantPgjobsAccessOp(name, "worker", SCHEMA),
        lambda: RevokePgjobsAccessOp(name, "worker", SCHEMA),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert info.value.argument == "role_name"
    grant_access("r" * 63, "worker")
    GrantPgjobsAccessOp("é" * 31, "worker", SCHEMA)


def test_unknown_access_level_is_refused_before_sql_and_by_the_database(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    for wrapper in (grant_access, revoke_access):
        with pytest.raises(InvalidArgumentError) as info:
            wrapper("x", "admin")
        assert info.value.argument == "access"
    for op in (GrantPgjobsAccessOp, RevokePgjobsAccessOp):
        with pytest.raises(InvalidArgumentError) as info:
            op("x", "admin", SCHEMA)
        assert info.value.argument == "access"

    role = make_role("pgjobs_lvl_")
    before = privileges(admin, role.name)
    for function in ("grant_access", "revoke_access"):
        with pytest.raises(DBAPIError) as raised:
            with admin.begin() as connection:
                connection.execute(
                    sql(f"SELECT app_jobs.{function}(:role, 'admin')"), {"role": role.name}
                )
        assert sqlstate(raised.value) == "22023"
    assert privileges(admin, role.name) == before


def test_raw_sql_refuses_an_unknown_level_whatever_the_role(admin: Engine) -> None:
    for function in ("grant_access", "revoke_access"):
        with pytest.raises(DBAPIError) as raised:
            with admin.begin() as connection:
                connection.execute(sql(f"SELECT app_jobs.{function}('x', 'admin')"))
        assert sqlstate(raised.value) == "22023"


# --- 8. Alembic ops and awkward role names --------------------------------------------------


@pytest.mark.parametrize("prefix", ["pgjobs_op_", 'job "runner"\'s '], ids=["plain", "awkward"])
def test_grant_op_gives_worker_rights_and_its_reverse_takes_them_back(
    engine: Engine, admin: Engine, make_role: Callable[..., Role], prefix: str
) -> None:
    role = make_role(prefix)
    before = privileges(admin, role.name)
    with admin.begin() as connection:
        job_id = connection.execute(add_job("op_task")).one().id

    run_ops(engine, lambda op: op.grant_pgjobs_access(role.name, "worker", schema=SCHEMA))
    assert executable_functions(admin, role.name) == WORKER_FUNCTIONS
    with role.engine.begin() as connection:
        taken = connection.execute(get_job(WORKER)).one()
    assert taken.id == job_id
    assert [(r.locked_by, r.attempts) for r in job_rows(admin)] == [(WORKER, 1)]

    reverse = GrantPgjobsAccessOp(role.name, "worker", SCHEMA).reverse()
    assert isinstance(reverse, RevokePgjobsAccessOp)
    run_ops(engine, lambda op: op.invoke(reverse))
    assert privileges(admin, role.name) == before
    assert_refused(role, get_job(WORKER))
    assert_refused(role, add_job("after_revoke"))


def test_wrappers_grant_and_revoke_for_a_role_name_with_space_and_quotes(
    admin: Engine, make_role: Callable[..., Role]
) -> None:
    role = make_role('job "runner"\'s ')
    before = privileges(admin, role.name)
    grant(admin, role.name, "enqueue")
    with role.engine.begin() as connection:
        added = connection.execute(add_job("quoted_role_task")).one()
    assert [row.id for row in job_rows(admin)] == [added.id]
    assert_refused(role, get_job(WORKER))
    revoke(admin, role.name, "enqueue")
    assert privileges(admin, role.name) == before
    assert_refused(role, add_job("after_revoke"))
