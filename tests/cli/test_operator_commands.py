"""The operator commands as a user runs them: ``pgjobs sql``, ``migrate``, ``status`` and
``jobs list|show|retry|fail|reschedule|delete``, each a subprocess against a real
PostgreSQL, checked by what it prints and by what it did (or did not do) in the database.

Every invocation names this run's job schema (``--schema``), which CI sets to an awkward
name through PGJOBS_TEST_SCHEMA. Independent invocations run side by side (a subprocess
costs most of a second in imports).
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text

from sqla_pgjobs import (
    JobSpec,
    SchemaVersionError,
    add_job,
    add_jobs,
    add_scheduled_job,
    complete_job,
    fail_job,
    get_job,
    heartbeat,
)
from sqla_pgjobs.schema import LATEST_VERSION, install, installed_version, migrate
from tests.cli.test_cli import PGJOBS, pgjobs
from tests.helpers import SCHEMA, catalog, libpq_url, run_ops, sql, wait_for
from tests.migrations.test_alembic_ops import assert_same_catalog, psql

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from sqlalchemy.engine import URL, Connection, Engine

    Result = subprocess.CompletedProcess[str]

ODD_SCHEMA = 'Odd "Name"'
TENANT_A = "0b6a4b8e-7c43-4b8a-9d4f-3f5f1b2f6a01"
TENANT_B = "d1e0c7a2-5e2b-4f86-a3d1-8a77a0c4e902"
MISSING_ID = 987_654_321
LIVE = "worker-live"
SILENT = "worker-silent"
# Short, so that a server started for the tests is soon up for longer than that.
SILENT_TIMEOUT = timedelta(seconds=2)
# Clock slack between this process, the subprocess and the server (the same machine).
SLACK = timedelta(seconds=5)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def cli(url: URL, *args: str) -> Result:
    """``pgjobs ARGS --database-url URL --schema SCHEMA``."""
    return pgjobs(*args, "--database-url", libpq_url(url), "--schema", SCHEMA)


def cli_all(url: URL, *commands: Sequence[str]) -> list[Result]:
    """Several independent invocations at once; results in the order given."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: cli(url, *args), commands))


def ok(result: Result) -> str:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(result).splitlines()]


def ids_of(result: Result) -> list[int]:
    return [row["id"] for row in json_lines(result)]


def enqueue(connection: Connection, identifier: str, **options: Any) -> int:
    return int(connection.execute(add_job(identifier, {"task": identifier}, **options)).one().id)


def take(
    connection: Connection, worker: str, task: str, timeout: timedelta = timedelta(minutes=10)
) -> int:
    """``worker`` heartbeats and takes the due job of ``task``: the job is running."""
    connection.execute(heartbeat(worker, timeout)).scalar_one()
    return int(connection.execute(get_job(worker, [task])).one().id)


def make_failed(connection: Connection, identifier: str, worker: str = LIVE) -> int:
    """A job whose only attempt failed: failed for good. Its run_at is an hour ahead, so
    that "failed" must win over "delayed" whenever the command runs."""
    job_id = enqueue(connection, identifier, max_attempts=1)
    assert take(connection, worker, identifier) == job_id
    connection.execute(fail_job(worker, job_id, "boom")).one()
    connection.execute(
        sql("UPDATE app_jobs.jobs SET run_at = now() + interval '1 hour' WHERE id = :id"),
        {"id": job_id},
    )
    return job_id


def silence(connection: Connection, worker: str) -> None:
    """The worker's last heartbeat was 10 minutes ago: far beyond its timeout. A worker
    also counts as alive for its timeout after the server started (app_jobs.alive_until),
    so wait until the server has been up longer than the worker's timeout: a test's
    embedded server may have started a moment ago."""
    connection.execute(
        sql(
            "UPDATE app_jobs.workers SET last_heartbeat = now() - interval '10 minutes' "
            "WHERE worker_id = :w"
        ),
        {"w": worker},
    )
    up_longer_than_timeout = sql(
        "SELECT clock_timestamp() - pg_postmaster_start_time() > heartbeat_timeout "
        "FROM app_jobs.workers WHERE worker_id = :w"
    )
    wait_for(
        lambda: connection.execute(up_longer_than_timeout, {"w": worker}).scalar_one(),
        timeout=SILENT_TIMEOUT.total_seconds() + 5,
    )


def job(engine: Engine, job_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = (
            connection.execute(sql("SELECT * FROM app_jobs.jobs WHERE id = :id"), {"id": job_id})
            .mappings()
            .one_or_none()
        )
    return None if row is None else dict(row)


def queue_holder(engine: Engine, queue: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(
            sql("SELECT locked_by FROM app_jobs.job_queues WHERE queue_name = :q"), {"q": queue}
        ).scalar_one_or_none()


def schema_catalog(url: URL, schema: str = SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return catalog(connection, schema)
    finally:
        engine.dispose()


def has_namespace(url: URL, schema: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def alembic_install(url: URL, schema: str = SCHEMA, version: int = LATEST_VERSION) -> None:
    engine = create_engine(url)
    try:
        run_ops(engine, lambda op: op.create_pgjobs_schema(schema=schema, version=version))
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------
# pgjobs sql
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema", sorted({SCHEMA, ODD_SCHEMA}), ids=lambda s: "odd" if s == ODD_SCHEMA else "run"
)
def test_sql_replayed_by_psql_equals_the_alembic_install_and_drop_removes_it(
    schema: str, new_database: Callable[..., URL], tmp_path: Path
) -> None:
    install_sql = ok(pgjobs("sql", "--schema", schema))
    drop_sql = ok(pgjobs("sql", "--drop", "--schema", schema))
    assert install_sql.startswith("BEGIN;") and install_sql.rstrip().endswith("COMMIT;")
    assert "DROP SCHEMA" in drop_sql and "CREATE" not in drop_sql
    (tmp_path / "install.sql").write_text(install_sql, encoding="utf-8")
    (tmp_path / "drop.sql").write_text(drop_sql, encoding="utf-8")

    replayed, alembic = new_database(), new_database()
    psql(tmp_path / "install.sql", replayed)
    alembic_install(alembic, schema)
    assert_same_catalog(schema_catalog(replayed, schema), schema_catalog(alembic, schema))
    engine = create_engine(replayed)
    try:
        with engine.connect() as connection:
            assert installed_version(connection, schema) == LATEST_VERSION
    finally:
        engine.dispose()

    psql(tmp_path / "drop.sql", replayed)
    assert not has_namespace(replayed, schema)
    assert has_namespace(alembic, schema)


def test_sql_refuses_an_unknown_version_with_exit_2_naming_it() -> None:
    result = pgjobs("sql", "--version", "99", "--schema", SCHEMA)
    assert result.returncode == 2
    assert "version 99 is not a schema version this library knows" in result.stderr
    assert result.stdout == ""  # not even the BEGIN of a script


def test_sql_piped_into_a_reader_that_stops_early_is_not_a_failure() -> None:
    """``pgjobs sql | head`` under ``set -o pipefail``: the closed pipe is the reader's
    choice, so pgjobs exits 0 and prints no traceback."""
    script = f"set -o pipefail; {PGJOBS} sql --schema app_jobs | head -n 1"
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "BEGIN;\n", "")


# --------------------------------------------------------------------------------------
# pgjobs migrate
# --------------------------------------------------------------------------------------


def test_migrate_installs_then_says_already_current_and_refuses_an_unknown_target(
    empty_database_url: URL, empty_engine: Engine, new_database: Callable[..., URL]
) -> None:
    installed = cli(empty_database_url, "migrate")
    assert ok(installed).strip() == (
        f"Installed the job schema {SCHEMA!r} at version {LATEST_VERSION}."
    )
    reference = new_database()
    alembic_install(reference)
    first = schema_catalog(empty_database_url)
    assert_same_catalog(first, schema_catalog(reference))
    with empty_engine.connect() as connection:
        assert installed_version(connection, SCHEMA) == LATEST_VERSION
        recorded = connection.execute(sql("SELECT * FROM app_jobs.migrations")).all()
    assert [row.version for row in recorded] == list(range(1, LATEST_VERSION + 1))

    again = cli(empty_database_url, "migrate")
    assert ok(again).strip() == (
        f"The job schema {SCHEMA!r} is already at version {LATEST_VERSION}."
    )
    assert schema_catalog(empty_database_url) == first
    with empty_engine.connect() as connection:
        assert connection.execute(sql("SELECT * FROM app_jobs.migrations")).all() == recorded

    unknown = cli(empty_database_url, "migrate", "--to", "99")
    assert unknown.returncode == 1
    assert "to_version 99 is not a schema version this library knows" in unknown.stderr
    assert unknown.stdout == ""
    assert schema_catalog(empty_database_url) == first

    # On an empty database an unknown target installs nothing at all.
    empty = new_database()
    assert cli(empty, "migrate", "--to", "99").returncode == 1
    assert not has_namespace(empty, SCHEMA)


@pytest.mark.usefixtures("fake_version_3")
def test_migrate_upgrades_an_installed_schema_to_the_state_a_fresh_install_has(
    empty_engine: Engine, new_database: Callable[..., URL]
) -> None:
    with empty_engine.begin() as connection:
        install(connection, SCHEMA, 1)
    with empty_engine.begin() as connection:
        # Two steps: the real 1 -> 2, then the fixture's 2 -> 3.
        assert migrate(connection, SCHEMA, to_version=3) == (1, 3)
    with empty_engine.connect() as connection:
        assert installed_version(connection, SCHEMA) == 3
        versions = connection.execute(sql("SELECT version FROM app_jobs.migrations ORDER BY 1"))
        assert versions.scalars().all() == [1, 2, 3]
        upgraded = catalog(connection, SCHEMA)

    fresh_url = new_database()
    fresh = create_engine(fresh_url)
    try:
        with fresh.begin() as connection:
            install(connection, SCHEMA, version=3)
        with fresh.connect() as connection:
            assert_same_catalog(upgraded, catalog(connection, SCHEMA))
    finally:
        fresh.dispose()

    with empty_engine.begin() as connection:
        assert migrate(connection, SCHEMA, to_version=3) == (3, 3)
        with pytest.raises(SchemaVersionError, match="at version 3, newer than 2"):
            migrate(connection, SCHEMA, to_version=2)


# --------------------------------------------------------------------------------------
# pgjobs status
# --------------------------------------------------------------------------------------


def _next_2am_utc(after: datetime) -> datetime:
    candidate = after.replace(hour=2, minute=0, second=0, microsecond=0)
    return candidate if candidate > after else candidate + timedelta(days=1)


def _blocks(text_output: str) -> list[list[str]]:
    return [block.splitlines() for block in text_output.strip().split("\n\n")]


def test_status_counts_jobs_by_task_queue_and_state_and_shows_holders_workers_schedules(
    database_url: URL, jobs_engine: Engine
) -> None:
    with jobs_engine.begin() as connection:
        connection.execute(add_jobs([JobSpec("email"), JobSpec("email", {"n": 2})])).all()
        enqueue(connection, "email", run_at=datetime.now(UTC) + timedelta(hours=1))
        enqueue(connection, "report", queue_name="reports")
        take(connection, LIVE, "report")
        make_failed(connection, "flaky")
        enqueue(connection, "cleanup")
        take(connection, SILENT, "cleanup", SILENT_TIMEOUT)
        silence(connection, SILENT)
        nightly = connection.execute(add_scheduled_job("nightly", {}, "0 2 * * *")).one().id
        once = connection.execute(
            add_scheduled_job("launch", {}, "2099-06-01T12:00:00Z", queue_name="launches")
        ).one()
    expected_rows = [
        ["cleanup", "-", "running", "1"],
        ["email", "-", "delayed", "1"],
        ["email", "-", "due", "2"],
        ["flaky", "-", "failed", "1"],
        ["report", "reports", "running", "1"],
    ]
    totals = {"due": 2, "delayed": 1, "running": 2, "failed": 1}

    before = datetime.now(UTC)
    as_text, as_json = cli_all(database_url, ["status"], ["status", "--json"])
    after = datetime.now(UTC)
    nightly_next = {_next_2am_utc(before).isoformat(), _next_2am_utc(after).isoformat()}

    report = json.loads(ok(as_json))
    assert report["totals"] == totals
    assert [
        [r["task_identifier"], r["queue_name"] or "-", r["state"], str(r["jobs"])]
        for r in report["by_task"]
    ] == expected_rows
    assert [(h["locked_by"], h["jobs"]) for h in report["held"]] == [(LIVE, 1), (SILENT, 1)]
    workers = {w["worker_id"]: w for w in report["workers"]}
    assert set(workers) == {LIVE, SILENT}
    assert workers[LIVE]["alive"] is True
    assert workers[LIVE]["heartbeat_timeout"] == 600
    assert workers[SILENT]["alive"] is False
    assert 600 <= workers[SILENT]["seconds_since_heartbeat"] < 660
    assert workers[SILENT]["heartbeat_timeout"] == 2
    schedules = {s["id"]: s for s in report["schedules"]}
    assert set(schedules) == {nightly, once.id}
    assert schedules[nightly]["task_identifier"] == "nightly"
    assert schedules[nightly]["next_fire"] in nightly_next
    assert schedules[once.id]["next_fire"] == "2099-06-01T12:00:00+00:00"

    blocks = _blocks(ok(as_text))
    assert blocks[0] == ["jobs: 2 due, 1 delayed, 2 running, 1 failed"]
    header, *rows = blocks[1]
    assert header.split() == ["task", "queue", "state", "jobs"]
    assert [row.split() for row in rows] == expected_rows
    header, *held = blocks[2]
    assert header.split()[:3] == ["held", "by", "jobs"]
    assert [line.split()[:2] for line in held] == [[LIVE, "1"], [SILENT, "1"]]
    workers_block = blocks[3]
    assert workers_block[0] == "workers: 2"
    lines = {line.split()[0]: line.split() for line in workers_block[1:]}
    assert lines[LIVE][1] == "alive"
    assert lines[SILENT][1] == "SILENT"
    assert "(timeout 2 s)" in " ".join(lines[SILENT])
    schedules_block = blocks[4]
    assert schedules_block[0] == "scheduled jobs: 2"
    listed = {int(line.split()[0]): line for line in schedules_block[1:]}
    assert set(listed) == {nightly, once.id}
    assert listed[nightly].split()[1:3] == ["nightly", "next"]
    assert listed[nightly].split()[3] in nightly_next
    assert "next 2099-06-01T12:00:00+00:00" in listed[once.id]
    assert len(blocks) == 5


@pytest.mark.parametrize(
    "command",
    [["status"], ["schedules"], ["jobs", "list"], ["jobs", "show", "1"], ["jobs", "delete", "1"]],
)
def test_a_command_on_a_missing_job_schema_says_how_to_install_it(
    database_url: URL, command: list[str]
) -> None:
    result = pgjobs(*command, "--database-url", libpq_url(database_url), "--schema", "no_jobs")
    assert result.returncode == 1, result
    assert result.stderr.startswith(("Error: UndefinedTable: ", "Error: InvalidSchemaName: "))
    assert "Is the job schema installed as 'no_jobs', at the latest version?" in result.stderr
    assert "[SQL:" not in result.stderr  # the driver's message, not SQLAlchemy's dump


def test_status_of_an_empty_queue_says_zero_everywhere(database_url: URL) -> None:
    assert _blocks(ok(cli(database_url, "status"))) == [
        ["jobs: 0 due, 0 delayed, 0 running, 0 failed"],
        ["workers: 0"],
        ["scheduled jobs: 0"],
    ]


# --------------------------------------------------------------------------------------
# pgjobs jobs list / show
# --------------------------------------------------------------------------------------


def test_jobs_list_applies_each_filter_and_the_limit(
    database_url: URL, jobs_engine: Engine
) -> None:
    with jobs_engine.begin() as connection:
        a = enqueue(connection, "email", db_id=TENANT_A, job_key="key-a")
        b = enqueue(
            connection, "email", queue_name="mail", run_at=datetime.now(UTC) + timedelta(hours=1)
        )
        c = enqueue(connection, "report", queue_name="mail-2", db_id=TENANT_B)
        take(connection, LIVE, "report")
        d = make_failed(connection, "flaky")
        e = enqueue(connection, "email", priority=5)
        in_order = [
            int(job_id)
            for job_id in connection.execute(
                sql("SELECT id FROM app_jobs.jobs ORDER BY priority, run_at, id")
            ).scalars()
        ]
    assert sorted(in_order) == sorted([a, b, c, d, e])

    filters: dict[str, tuple[list[str], list[int]]] = {
        "all": ([], in_order),
        "task": (["--task", "email"], [j for j in in_order if j in (a, b, e)]),
        "queue": (["--queue", "mail"], [b]),
        "tenant": (["--tenant", TENANT_A], [a]),
        "due": (["--state", "due"], [j for j in in_order if j in (a, e)]),
        "delayed": (["--state", "delayed"], [b]),
        "running": (["--state", "running"], [c]),
        "failed": (["--state", "failed"], [d]),
        "key": (["--key", "key-a"], [a]),
        "task+state": (["--task", "email", "--state", "delayed"], [b]),
        "limit": (["--limit", "2"], in_order[:2]),
        "nothing": (["--task", "no-such-task"], []),
    }
    results = cli_all(
        database_url,
        *(["jobs", "list", "--json", *args] for args, _ in filters.values()),
        ["jobs", "list"],
        ["jobs", "list", "--state", "bogus"],
        ["jobs", "list", "--tenant", "x"],
    )
    for (name, (_, expected)), result in zip(filters.items(), results[: len(filters)], strict=True):
        assert (name, ids_of(result)) == (name, expected)

    rows = {row["id"]: row for row in json_lines(results[0])}
    assert rows[c]["state"] == "running" and rows[c]["locked_by"] == LIVE
    assert rows[a]["database_id"] == TENANT_A and rows[a]["key"] == "key-a"
    assert (rows[d]["attempts"], rows[d]["max_attempts"], rows[d]["last_error"]) == (1, 1, "boom")

    as_text, bad_state, bad_tenant = results[len(filters) :]
    header, *lines = ok(as_text).splitlines()
    assert header.split()[:5] == ["id", "task", "state", "attempts", "run"]
    listed = [line.split()[:4] for line in lines]
    assert [int(line[0]) for line in listed] == in_order
    assert [str(d), "flaky", "failed", "1/1"] in listed
    assert [str(c), "report", "running", "1/25"] in listed
    assert any(line.split()[0] == str(d) and line.endswith(" boom") for line in lines)

    assert bad_state.returncode == 2
    assert "'bogus' is not one of" in bad_state.stderr
    assert bad_tenant.returncode == 2
    assert "tenant 'x' is not allowed: it must be a UUID" in bad_tenant.stderr
    assert bad_tenant.stdout == ""


def test_jobs_show_prints_the_job_as_json_and_exits_1_for_a_missing_id(
    database_url: URL, jobs_engine: Engine
) -> None:
    with jobs_engine.begin() as connection:
        job_id = enqueue(connection, "email", queue_name="mail", job_key="welcome-1", priority=3)
    shown, missing = cli_all(
        database_url, ["jobs", "show", str(job_id)], ["jobs", "show", str(MISSING_ID)]
    )
    document = json.loads(ok(shown))
    assert document["id"] == job_id
    assert document["task_identifier"] == "email"
    assert document["payload"] == {"task": "email"}
    assert document["queue_name"] == "mail"
    assert (document["key"], document["priority"]) == ("welcome-1", 3)
    assert (document["attempts"], document["max_attempts"], document["state"]) == (0, 25, "due")
    assert document["locked_by"] is None
    stored = job(jobs_engine, job_id)
    assert stored is not None
    assert document["run_at"] == stored["run_at"].isoformat()

    assert missing.returncode == 1
    assert f"no job {MISSING_ID}" in missing.stderr
    assert missing.stdout == ""


# --------------------------------------------------------------------------------------
# pgjobs jobs retry / fail / reschedule / delete
# --------------------------------------------------------------------------------------


def test_actions_on_unlocked_jobs_retry_fail_reschedule_and_delete(
    database_url: URL, jobs_engine: Engine
) -> None:
    with jobs_engine.begin() as connection:
        failed = make_failed(connection, "flaky")
        to_fail = enqueue(connection, "email")
        to_delay = enqueue(connection, "email", priority=2)
        to_prioritize = enqueue(connection, "email", run_at=datetime.now(UTC) + timedelta(hours=2))
        to_delete = enqueue(connection, "email")
        untouched = enqueue(connection, "email")
    prioritize_before = job(jobs_engine, to_prioritize)
    untouched_before = job(jobs_engine, untouched)
    assert prioritize_before is not None and untouched_before is not None

    before = datetime.now(UTC)
    retry, fail, delay, prioritize, delete, no_option = cli_all(
        database_url,
        ["jobs", "retry", str(failed)],
        ["jobs", "fail", str(to_fail), "--message", "gave up by hand"],
        ["jobs", "reschedule", str(to_delay), "--in", "3600"],
        ["jobs", "reschedule", str(to_prioritize), "--priority", "7"],
        ["jobs", "delete", str(to_delete)],
        ["jobs", "reschedule", str(untouched)],
    )
    after = datetime.now(UTC)

    assert ok(retry).strip() == f"retry: {failed}"
    retried = job(jobs_engine, failed)
    assert retried is not None
    assert retried["attempts"] == 0
    assert before - SLACK <= retried["run_at"] <= after + SLACK
    assert retried["locked_at"] is None

    assert ok(fail).strip() == f"fail: {to_fail}"
    marked = job(jobs_engine, to_fail)
    assert marked is not None
    assert marked["attempts"] == marked["max_attempts"] == 25
    assert marked["last_error"] == "gave up by hand"

    assert ok(delay).strip() == f"reschedule: {to_delay}"
    delayed = job(jobs_engine, to_delay)
    assert delayed is not None
    hour = timedelta(hours=1)
    assert before + hour - SLACK <= delayed["run_at"] <= after + hour + SLACK
    assert (delayed["priority"], delayed["attempts"]) == (2, 0)

    assert ok(prioritize).strip() == f"reschedule: {to_prioritize}"
    prioritized = job(jobs_engine, to_prioritize)
    assert prioritized is not None
    assert prioritized["priority"] == 7
    assert prioritized["run_at"] == prioritize_before["run_at"]

    assert ok(delete).strip() == f"delete: {to_delete}"
    assert job(jobs_engine, to_delete) is None

    assert no_option.returncode == 2
    assert "reschedule needs run_at or priority" in no_option.stderr
    assert job(jobs_engine, untouched) == untouched_before


ACTIONS: dict[str, list[str]] = {
    "retry": [],
    "fail": ["--message", "stopped by an operator"],
    "reschedule": ["--in", "3600"],
    "delete": [],
}


def _check_acted_on(action: str, row: dict[str, Any] | None, before: dict[str, Any]) -> None:
    """The effect of ``action`` on a job that was running (attempts 1)."""
    if action == "delete":
        assert row is None
        return
    assert row is not None
    assert (row["locked_by"], row["locked_at"]) == (None, None)
    if action == "retry":
        assert row["attempts"] == 0
    elif action == "fail":
        assert row["attempts"] == row["max_attempts"]
        assert row["last_error"] == "stopped by an operator"
    else:
        assert row["run_at"] > before["run_at"] + timedelta(minutes=59)
        assert row["attempts"] == 1


@pytest.mark.parametrize(
    ("action", "foreign"),
    [
        ("retry", ["--message", "x"]),
        ("retry", ["--priority", "5"]),
        ("retry", ["--in", "60"]),
        ("fail", ["--priority", "5"]),
        ("fail", ["--in", "60"]),
        ("reschedule", ["--message", "x"]),
        ("delete", ["--priority", "5"]),
        ("delete", ["--message", "x"]),
        ("delete", ["--in", "60"]),
    ],
)
def test_each_action_refuses_the_options_of_the_others(
    database_url: URL, jobs_engine: Engine, action: str, foreign: list[str]
) -> None:
    """An option an action does not use is a usage error (exit 2), not silently ignored."""
    with jobs_engine.begin() as connection:
        job_id = enqueue(connection, "email")
    before = job(jobs_engine, job_id)
    result = cli(database_url, "jobs", action, str(job_id), *foreign)
    assert result.returncode == 2, result
    assert f"No such option '{foreign[0]}'" in result.stderr
    assert job(jobs_engine, job_id) == before


def test_actions_refuse_jobs_of_a_live_worker_unless_forced(
    database_url: URL, jobs_engine: Engine
) -> None:
    held: dict[str, int] = {}
    with jobs_engine.begin() as connection:
        for action in ACTIONS:
            enqueue(connection, f"held-{action}", queue_name=f"queue-{action}")
            held[action] = take(connection, LIVE, f"held-{action}")
    before = {action: job(jobs_engine, job_id) for action, job_id in held.items()}

    refused = cli_all(
        database_url,
        *(["jobs", action, str(held[action]), *options] for action, options in ACTIONS.items()),
    )
    for action, result in zip(ACTIONS, refused, strict=True):
        assert result.returncode == 1, (action, result.stdout, result.stderr)
        assert result.stdout == ""
        assert f"not {action}: {held[action]} (" in result.stderr
        assert "--force" in result.stderr
        assert job(jobs_engine, held[action]) == before[action]
        assert queue_holder(jobs_engine, f"queue-{action}") == LIVE

    forced = cli_all(
        database_url,
        *(
            ["jobs", action, str(held[action]), "--force", *options]
            for action, options in ACTIONS.items()
        ),
    )
    for action, result in zip(ACTIONS, forced, strict=True):
        assert ok(result).strip() == f"{action}: {held[action]}"
        old = before[action]
        assert old is not None
        _check_acted_on(action, job(jobs_engine, held[action]), old)
        assert queue_holder(jobs_engine, f"queue-{action}") is None

    # The worker that held them finishes late: its result no longer counts.
    with jobs_engine.begin() as connection:
        for action, job_id in held.items():
            assert connection.execute(complete_job(LIVE, job_id)).all() == []
            if action != "delete":
                assert connection.execute(fail_job(LIVE, job_id, "late")).all() == []
    for action, job_id in held.items():
        old = before[action]
        assert old is not None
        _check_acted_on(action, job(jobs_engine, job_id), old)


def test_actions_take_jobs_of_a_worker_silent_beyond_its_timeout_without_force(
    database_url: URL, jobs_engine: Engine
) -> None:
    held: dict[str, int] = {}
    with jobs_engine.begin() as connection:
        for action in ACTIONS:
            enqueue(connection, f"stale-{action}", queue_name=f"queue-{action}")
            held[action] = take(connection, SILENT, f"stale-{action}", SILENT_TIMEOUT)
        silence(connection, SILENT)
    before = {action: job(jobs_engine, job_id) for action, job_id in held.items()}

    results = cli_all(
        database_url,
        *(["jobs", action, str(held[action]), *options] for action, options in ACTIONS.items()),
    )
    for action, result in zip(ACTIONS, results, strict=True):
        assert ok(result).strip() == f"{action}: {held[action]}"
        old = before[action]
        assert old is not None
        _check_acted_on(action, job(jobs_engine, held[action]), old)
        assert queue_holder(jobs_engine, f"queue-{action}") is None


def test_mixed_ids_act_on_the_free_ones_and_exit_1_listing_the_refused(
    database_url: URL, jobs_engine: Engine
) -> None:
    with jobs_engine.begin() as connection:
        first = make_failed(connection, "flaky")
        running = enqueue(connection, "long")
        take(connection, LIVE, "long")
        last = make_failed(connection, "flaky")
    running_before = job(jobs_engine, running)

    ids = [str(last), str(running), str(MISSING_ID), str(first)]
    result = cli(database_url, "jobs", "retry", *ids)
    assert result.returncode == 1
    assert result.stdout.strip() == f"retry: {first} {last}"
    assert f"not retry: {running} {MISSING_ID} (no such job, or a live worker holds it" in (
        result.stderr
    )
    for job_id in (first, last):
        retried = job(jobs_engine, job_id)
        assert retried is not None and retried["attempts"] == 0  # committed despite exit 1
    assert job(jobs_engine, running) == running_before


def test_migrate_twice_under_a_schema_name_with_a_colon_says_already_current(
    empty_database_url: URL,
) -> None:
    schema = "Jobs (:v1)"
    args = ("migrate", "--database-url", libpq_url(empty_database_url), "--schema", schema)
    assert ok(pgjobs(*args)).strip() == (
        f"Installed the job schema {schema!r} at version {LATEST_VERSION}."
    )
    assert ok(pgjobs(*args)).strip() == (
        f"The job schema {schema!r} is already at version {LATEST_VERSION}."
    )
