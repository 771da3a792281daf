"""The history and queue commands as a user runs them: ``pgjobs jobs history``, ``jobs
show`` of a finished job, ``pgjobs prune`` and ``pgjobs queues``, each a subprocess
against a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from sqla_pgjobs import add_job
from sqla_pgjobs.database import on_schema
from sqla_pgjobs.functions import complete_jobs, fail_job, get_jobs, heartbeat
from sqla_pgjobs.tables import job_history
from tests.cli.test_operator_commands import cli, cli_all, json_lines, ok
from tests.helpers import SCHEMA, sql

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

TENANT = "0b6a4b8e-7c43-4b8a-9d4f-3f5f1b2f6a01"


def finished_jobs(engine: Engine) -> dict[str, int]:
    """Three finished jobs (two completed, one failed for good) and one live one."""
    jobs = on_schema(engine, SCHEMA)
    ids: dict[str, int] = {}
    with jobs.begin() as connection:
        for name, payload, options in [
            ("receipt_42", {"order_id": 42, "lines": [1, 2]}, {"job_key": "receipt:42"}),
            ("receipt_7", {"order_id": 7}, {"db_id": TENANT, "queue_name": "mail"}),
            ("export", {"format": "csv"}, {"max_attempts": 1}),
            ("live", {"order_id": 42}, {}),
        ]:
            task = name.split("_")[0]
            ids[name] = connection.execute(add_job(task, payload, **options)).one().id
        connection.execute(complete_jobs([ids["receipt_42"], ids["receipt_7"]]))
        [taken] = connection.execute(get_jobs("worker-1", ["export"])).all()
        connection.execute(fail_job("worker-1", taken.id, "ValueError: no such format\n\ntb"))
    return ids


def test_history_lists_finished_jobs_newest_first_with_filters(
    database_url: URL, engine: Engine
) -> None:
    ids = finished_jobs(engine)
    everything, by_payload, by_outcome, by_tenant, by_key, since = cli_all(
        database_url,
        ["jobs", "history", "--json"],
        ["jobs", "history", "--json", "--payload", '{"order_id": 42}'],
        ["jobs", "history", "--json", "--outcome", "failed"],
        ["jobs", "history", "--json", "--tenant", TENANT],
        ["jobs", "history", "--json", "--key", "receipt:42"],
        ["jobs", "history", "--json", "--since", "1h", "--until", "2999-01-01T00:00"],
    )
    rows = json_lines(everything)
    assert [row["job_id"] for row in rows] == [ids["export"], ids["receipt_7"], ids["receipt_42"]]
    assert [row["job_id"] for row in json_lines(by_payload)] == [ids["receipt_42"]]
    [failed] = json_lines(by_outcome)
    assert (failed["job_id"], failed["outcome"], failed["worker_id"]) == (
        ids["export"],
        "failed",
        "worker-1",
    )
    assert failed["last_error"].startswith("ValueError: no such format")
    assert failed["duration"] >= 0
    assert [row["job_id"] for row in json_lines(by_tenant)] == [ids["receipt_7"]]
    assert [row["job_id"] for row in json_lines(by_key)] == [ids["receipt_42"]]
    assert len(json_lines(since)) == 3


def test_history_table_pages_with_before(database_url: URL, engine: Engine) -> None:
    finished_jobs(engine)
    first = ok(cli(database_url, "jobs", "history", "--limit", "2")).splitlines()
    assert first[0].split()[:4] == ["id", "job", "task", "outcome"]
    assert len(first) == 4 and first[-1].startswith("(more: --before ")
    before = first[-1].removeprefix("(more: --before ").rstrip(")")
    rest = ok(cli(database_url, "jobs", "history", "--limit", "2", "--before", before))
    assert len(rest.splitlines()) == 2  # the header and the last finish: no "more"
    assert "completed" in rest
    failed_line = next(line for line in first if "failed" in line)
    assert failed_line.endswith("ValueError: no such format")


def test_history_refuses_bad_filters_and_says_what_is_allowed(database_url: URL) -> None:
    cases = {
        ("--since", "yesterday"): "is neither an ISO 8601 time",
        ("--payload", "{order_id: 42}"): "is not JSON",
        (
            "--outcome",
            "done",
        ): "'done' is not one of 'completed', 'failed', 'cancelled', 'discarded'",
        ("--tenant", "acme"): "tenant 'acme' is not allowed: it must be a UUID",
    }
    results = cli_all(database_url, *(["jobs", "history", *args] for args in cases))
    for (option, value), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (option, result.stdout, result.stderr)
        assert cases[option, value] in result.stderr, result.stderr


def test_show_covers_a_finished_job_and_a_live_one_with_its_past(
    database_url: URL, engine: Engine
) -> None:
    ids = finished_jobs(engine)
    finished, failed, missing = cli_all(
        database_url,
        ["jobs", "show", str(ids["receipt_42"])],
        ["jobs", "show", str(ids["export"])],
        ["jobs", "show", "987654321"],
    )
    shown = json.loads(ok(finished))
    assert (shown["id"], shown["state"]) == (ids["receipt_42"], "completed")
    [run] = shown["history"]
    assert (run["outcome"], run["payload"], run["key"]) == (
        "completed",
        {"order_id": 42, "lines": [1, 2]},
        "receipt:42",
    )
    # A job failed for good is still in the queue (visibly failed) and has its finish.
    still = json.loads(ok(failed))
    assert (still["state"], [r["outcome"] for r in still["history"]]) == ("failed", ["failed"])
    assert missing.returncode == 1
    assert (
        "no job 987654321: not in the queue, and no finish of it in the history" in missing.stderr
    )


def test_prune_deletes_expired_rows_and_reports_the_batches(
    database_url: URL, engine: Engine
) -> None:
    finished_jobs(engine)
    jobs = on_schema(engine, SCHEMA)
    with jobs.begin() as connection:
        connection.execute(
            sql(
                "UPDATE app_jobs.job_history SET expires_at = now() - interval '1 second'"
                " WHERE outcome = 'completed'"
            )
        )
    out = ok(cli(database_url, "prune", "--batch", "100", "--pause", "0"))
    assert out.startswith("Deleted 2 history rows in 1 batch (longest ")
    with jobs.begin() as connection:
        left = connection.execute(select(job_history.c.outcome)).scalars().all()
    assert left == ["failed"]
    aged = ok(cli(database_url, "prune", "--older-than", "1s"))  # the failed one is older
    assert aged.startswith("Deleted ") and "history rows" in aged
    bad = cli(database_url, "prune", "--older-than", "forever")
    assert bad.returncode == 2 and "'forever' is not a duration" in bad.stderr


def test_queues_list_pause_and_resume_as_an_operator_sees_them(
    database_url: URL, engine: Engine
) -> None:
    jobs = on_schema(engine, SCHEMA)
    with jobs.begin() as connection:
        for queue in ("mail", "mail", None, "sms"):
            connection.execute(add_job("send", queue_name=queue))
    assert ok(cli(database_url, "queues", "pause", "mail", "later")).splitlines() == [
        "queue mail: paused",
        "queue later: paused",
    ]
    assert ok(cli(database_url, "queues", "pause", "mail")) == "queue mail: already paused\n"
    assert ok(cli(database_url, "queues", "pause", "--task", "send")) == "task send: paused\n"
    table, as_json = cli_all(database_url, ["queues", "list"], ["queues", "list", "--json"])
    lines = ok(table).splitlines()
    assert lines[0].split() == ["queue", "state", "due", "delayed", "running", "failed"]
    assert [line.split() for line in lines[1:5]] == [
        ["(none)", "-", "1", "0", "0", "0"],
        ["later", "PAUSED", "0", "0", "0", "0"],
        ["mail", "PAUSED", "2", "0", "0", "0"],
        ["sms", "-", "1", "0", "0", "0"],
    ]
    assert lines[-1] == "paused tasks: send"
    rows = json_lines(as_json)
    assert [(r["name"], r["paused"], r["due"]) for r in rows] == [
        (None, False, 1),
        ("later", True, 0),
        ("mail", True, 2),
        ("sms", False, 1),
    ]
    resumed = ok(cli(database_url, "queues", "resume", "mail", "sms"))
    assert resumed.splitlines() == ["queue mail: resumed", "queue sms: already resumed"]
    # A bad name is refused before anything changes, even beside good ones.
    bad = cli(database_url, "queues", "resume", "later", "x" * 127)
    assert bad.returncode == 2 and "it must be a text of 1 to 126 characters" in bad.stderr
    with jobs.begin() as connection:
        paused = connection.execute(sql("SELECT kind, name FROM app_jobs.pauses ORDER BY 1, 2"))
        assert [tuple(row) for row in paused] == [("queue", "later"), ("task", "send")]


# --- pgjobs jobs cancel, and retry from the history -----------------------------------------


def test_cancel_by_ids_reports_each_and_exits_1_for_those_it_could_not_cancel(
    database_url: URL, engine: Engine
) -> None:
    ids = finished_jobs(engine)
    jobs = on_schema(engine, SCHEMA)
    with jobs.begin() as connection:
        connection.execute(heartbeat("worker-1")).scalar_one()
        running = connection.execute(add_job("long")).one().id
        connection.execute(get_jobs("worker-1", ["long"])).one()
    result = cli(
        database_url,
        "jobs",
        "cancel",
        str(ids["live"]),
        str(running),
        str(ids["receipt_42"]),
        str(ids["export"]),
        "999999",
    )
    assert result.returncode == 1, result
    assert result.stdout.splitlines() == [
        f"cancelled: {ids['live']}",
        f"cancel requested: {running} (running: the workers that run them stop them)",
    ]
    assert result.stderr.strip() == (
        f"not cancelled: {ids['receipt_42']} (finished already), "
        f"{ids['export']} (failed for good already), 999999 (no such job)"
    )
    with jobs.begin() as connection:
        outcome = connection.execute(
            select(job_history.c.outcome).where(job_history.c.job_id == ids["live"])
        ).scalar_one()
    assert outcome == "cancelled"
    # The running job shows its request until its worker stops it; a job without one, null.
    requested, other = cli_all(
        database_url, ["jobs", "show", str(running)], ["jobs", "show", str(ids["export"])]
    )
    shown = json.loads(ok(requested))
    assert (shown["state"], shown["locked_by"]) == ("running", "worker-1")
    assert datetime.fromisoformat(shown["cancel_requested_at"]).tzinfo is not None
    assert json.loads(ok(other))["cancel_requested_at"] is None


def test_cancel_by_filters_takes_only_jobs_that_may_still_run(
    database_url: URL, engine: Engine
) -> None:
    ids = finished_jobs(engine)
    jobs = on_schema(engine, SCHEMA)
    with jobs.begin() as connection:
        other = connection.execute(add_job("live", {"order_id": 43})).one().id
    by_payload = cli(database_url, "jobs", "cancel", "--json", "--payload", '{"order_id": 42}')
    again, by_task = cli_all(
        database_url,
        ["jobs", "cancel", "--payload", '{"order_id": 42}'],
        ["jobs", "cancel", "--task", "export"],  # failed for good: not a job that may run
    )
    assert json_lines(by_payload) == [{"job_id": ids["live"], "result": "cancelled"}]
    assert (
        ok(again).strip()
        == ok(by_task).strip()
        == ("cancelled: none (no job that may still run matches)")
    )
    with jobs.begin() as connection:
        left = set(connection.execute(sql("SELECT id FROM app_jobs.jobs")).scalars())
    assert left == {other, ids["export"]}


def test_cancel_refuses_bad_use_before_touching_anything(database_url: URL, engine: Engine) -> None:
    ids = finished_jobs(engine)
    results = cli_all(
        database_url,
        ["jobs", "cancel"],
        ["jobs", "cancel", str(ids["live"]), "--task", "live"],
        ["jobs", "cancel", "--payload", "{bad"],
        ["jobs", "cancel", "--tenant", "not-a-uuid"],
        ["jobs", "cancel", "--task", "x" * 127],
    )
    for result, expected in zip(
        results,
        [
            "give job ids, or filters",
            "give job ids, or filters",
            "'{bad' is not JSON",
            "tenant 'not-a-uuid' is not allowed: it must be a UUID",
            "task 'xxxxxxxxx",
        ],
        strict=True,
    ):
        assert result.returncode == 2, result
        assert expected in result.stderr, result.stderr
    with on_schema(engine, SCHEMA).begin() as connection:
        assert (
            connection.execute(
                sql("SELECT count(*) FROM app_jobs.jobs WHERE id = :id"), {"id": ids["live"]}
            ).scalar_one()
            == 1
        )


def test_retry_enqueues_a_cancelled_or_failed_job_again_from_its_history(
    database_url: URL, engine: Engine
) -> None:
    ids = finished_jobs(engine)
    jobs = on_schema(engine, SCHEMA)
    with jobs.begin() as connection:
        keyed = (
            connection.execute(
                add_job(
                    "receipt", {"order_id": 9}, job_key="receipt:9", queue_name="mail", priority=4
                )
            )
            .one()
            .id
        )
    ok(cli(database_url, "jobs", "cancel", str(keyed)))
    result = cli(
        database_url, "jobs", "retry", str(keyed), str(ids["export"]), str(ids["receipt_7"])
    )
    # The failed job is still in the queue (failed for good): retried in place. The
    # cancelled one comes back from its history as a new job; a completed one does not.
    assert result.returncode == 1, result
    lines = result.stdout.splitlines()
    assert lines[0] == f"retry: {ids['export']}"
    assert lines[1].startswith(f"retry: {keyed} from the history, as new job ")
    new_id = int(lines[1].rsplit(" ", 1)[1])
    assert f"not retry: {ids['receipt_7']}" in result.stderr
    with jobs.begin() as connection:
        row = connection.execute(
            sql("SELECT * FROM app_jobs.jobs WHERE id = :id"), {"id": new_id}
        ).one()
    assert (row.task_identifier, row.payload, row.key, row.queue_name, row.priority) == (
        "receipt",
        {"order_id": 9},
        "receipt:9",
        "mail",
        4,
    )
    assert (row.attempts, row.max_attempts) == (0, 25)
