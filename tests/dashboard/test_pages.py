"""Every page of the dashboard, through Starlette's TestClient, against a known workload:
what each shows matches the database."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import Mount

from sqla_pgjobs.dashboard import create_app, queries
from sqla_pgjobs.schema import create_indexes
from tests.dashboard.workload import direct_counts, finished_counts
from tests.helpers import SCHEMA, sql
from tests.metrics.workload import execute

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest
    from sqlalchemy.engine import Engine
    from starlette.testclient import TestClient

    from tests.dashboard.workload import Workload


def cells(page: str, table: str) -> dict[tuple[str, str], dict[str, int]]:
    """The overview's table by (task, queue): its numeric cells by data-state."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    found: dict[tuple[str, str], dict[str, int]] = {}
    for row in re.finditer(r'<tr data-task="([^"]*)" data-queue="([^"]*)">(.*?)</tr>', body, re.S):
        found[(row[1], row[2])] = {
            state: int(n.replace(",", ""))
            for state, n in re.findall(r'data-state="(\w+)">([\d,]+)<', row[3])
        }
    return found


def job_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-job-id="(\d+)">', page)]


def test_the_overview_shows_what_the_database_holds(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    response = client.get("/")
    assert response.status_code == 200
    shown = cells(response.text, "by-task")
    live = direct_counts(jobs_engine)
    finished = finished_counts(jobs_engine)
    for (task, queue, state), n in live.items():
        assert shown[(task, queue)][state] == n, (task, queue, state)
    for (task, queue, _outcome), _n in finished.items():
        runs = sum(n for (t, q, _), n in finished.items() if (t, q) == (task, queue))
        assert shown[(task, queue)]["finished_day"] == runs
        assert shown[(task, queue)]["finished_hour"] == runs
    assert shown[("boom", "fast")]["not_completed_day"] == 2
    totals = {
        state: sum(n for (_, _, s), n in live.items() if s == state)
        for state in ("due", "delayed", "running", "failed")
    }
    for state, n in totals.items():
        assert f'id="total-{state}">{n}<' in response.text
    assert f'id="finished-day">{sum(finished.values())}<' in response.text
    assert 'id="workers-alive">1/1<' in response.text
    # The charts are SVG drawn on the server: one bar group per hour with finishes.
    assert response.text.count('<svg class="chart"') == 3
    assert 'class="bar-wait"' in response.text  # the runs waited, a little
    assert "6 runs" in response.text or "4 completed, 2 not completed" in response.text


def test_the_overview_refreshes_itself_with_htmx(client: TestClient, workload: Workload) -> None:
    page = client.get("/").text
    assert 'hx-get="/" hx-trigger="every 5s"' in page
    partial = client.get("/", headers={"HX-Request": "true"})
    assert partial.text.lstrip().startswith('<div id="live"')
    assert "<html" not in partial.text


def test_jobs_filter_by_state_task_queue_and_payload(
    client: TestClient, workload: Workload
) -> None:
    failed = job_ids(client.get("/jobs", params={"state": "failed"}).text)
    assert len(failed) == 4 and workload.failed_job in failed
    mail_a = job_ids(client.get("/jobs", params={"task": "mail", "queue": "a"}).text)
    assert len(mail_a) == 9
    found = client.get("/jobs", params={"payload": '{"account_id": 42}'})
    assert job_ids(found.text) == [workload.account_job]
    assert "1 match." in found.text
    delayed = job_ids(client.get("/jobs", params={"state": "delayed", "task": "billing"}).text)
    assert delayed == [workload.delayed_job]
    later = client.get("/jobs", params={"since": "2999-01-01T00:00"})
    assert job_ids(later.text) == []


def test_jobs_are_paged_by_keyset_newest_first(client: TestClient, workload: Workload) -> None:
    everything = job_ids(client.get("/jobs", params={"limit": "500"}).text)
    assert everything == sorted(everything, reverse=True)
    seen: list[int] = []
    page = client.get("/jobs", params={"limit": "4"}).text
    while True:
        seen += job_ids(page)
        link = re.search(r'href="([^"]+)" rel="next"', page)
        if link is None:
            break
        assert "(the planner&#39;s estimate)" in page
        page = client.get(link[1].replace("&amp;", "&")).text
    assert seen == everything


def test_history_lists_finished_runs_by_outcome(client: TestClient, workload: Workload) -> None:
    page = client.get("/history", params={"outcome": "completed"}).text
    assert len(job_ids(page)) == 4
    failed = client.get("/history", params={"outcome": "failed", "task": "boom"}).text
    assert len(job_ids(failed)) == 2
    assert "boom: the traceback shows" in failed


def test_the_job_page_shows_payload_errors_timeline_and_trace(
    client: TestClient, workload: Workload
) -> None:
    failed = client.get(f"/jobs/{workload.failed_job}").text
    assert "RuntimeError: boom: the traceback shows in the dashboard" in failed
    assert "Traceback" in failed
    assert "failed after 1 attempt" in failed
    assert "enqueued" in failed
    traced = client.get(f"/jobs/{workload.traced_job}").text
    assert f"<code>{workload.trace_id}</code>" in traced
    account = client.get(f"/jobs/{workload.account_job}").text
    assert "&#34;account_id&#34;: 42" in account
    assert client.get("/jobs/999999999").status_code == 404
    assert client.get(f"/jobs/{2**70}").status_code == 404


def test_the_workers_schedules_and_queues_pages(client: TestClient, workload: Workload) -> None:
    workers = client.get("/workers").text
    assert "dashboard-test-worker" in workers and ">alive<" in workers
    assert "metrics-test-worker" in workers  # holds a job without having registered
    schedules = client.get("/schedules").text
    assert "tick" in schedules and "Europe/Paris" in schedules
    assert re.search(r"\+0[12]:00", schedules)  # the next fire, in Paris time
    queues = client.get("/queues").text
    for name in ("a", "b", "fast", "slow"):
        assert f'<tr data-queue="{name}">' in queues


def test_links_work_under_a_mount_prefix(engine: Engine, workload: Workload) -> None:
    from starlette.testclient import TestClient

    host = Starlette(routes=[Mount("/ops/jobs", app=create_app(engine, schema=SCHEMA))])
    with TestClient(host) as client:
        page = client.get("/ops/jobs/").text
        assert 'href="/ops/jobs/static/dashboard.css"' in page
        assert 'href="/ops/jobs/jobs?state=due"' in page
        assert client.get("/ops/jobs/static/htmx.min.js").status_code == 200
        jobs = client.get("/ops/jobs/jobs").text
        assert f'href="/ops/jobs/jobs/{workload.hostile_job}"' in jobs
        assert (
            'action="/ops/jobs/actions/retry"'
            in client.get(f"/ops/jobs/jobs/{workload.failed_job}").text
        )
        cookie = client.cookies.jar
        assert [c.path for c in cookie if c.name == "pgjobs_csrf"] == ["/ops/jobs"]


def test_an_empty_database_renders_every_page(client: TestClient) -> None:
    for path in ("/", "/jobs", "/history", "/workers", "/schedules", "/queues"):
        response = client.get(path)
        assert response.status_code == 200, path


def fill_bulk_jobs(jobs_engine: Engine) -> None:
    """60,000 jobs of task 'bulk' (payload {"n": i}), analyzed: a table above the exact
    counts' limit."""
    execute(
        jobs_engine,
        sql(
            "INSERT INTO app_jobs.jobs (task_identifier, payload)"
            " SELECT 'bulk', json_build_object('n', i) FROM generate_series(1, 60000) i"
        ),
        sql("ANALYZE app_jobs.jobs"),
    )


def test_a_large_jobs_table_is_estimated_not_scanned(
    make_client: Callable[..., TestClient], jobs_engine: Engine
) -> None:
    fill_bulk_jobs(jobs_engine)
    client = make_client()
    page = client.get("/").text
    assert "estimated from a sample" in page
    jobs = client.get("/jobs").text
    total = int(re.search(r"about ([\d,]+)", jobs)[1].replace(",", ""))  # type: ignore[index]
    assert 50_000 < total < 70_000


def test_a_filter_an_unbuilt_optional_index_would_serve_says_how_to_build_it(
    make_client: Callable[..., TestClient], jobs_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "INDEX_HINT_ROWS", 50_000)
    fill_bulk_jobs(jobs_engine)
    client = make_client()

    def hint(path: str) -> str | None:
        found = re.search(
            r'<p class="notice" id="index-hint">(.*?)</p>', client.get(path).text, re.S
        )
        return " ".join(found[1].split()) if found else None

    assert hint("/jobs") is None
    assert hint("/jobs?task=bulk") is None
    failed = hint("/jobs?state=failed")
    assert failed is not None
    assert "the optional index <code>failed</code> would serve it" in failed
    assert "<code>pgjobs migrate --index failed</code>" in failed
    both = hint("/jobs?state=failed&payload=%7B%22n%22%3A5%7D")
    assert both is not None
    assert '<code>op.create_pgjobs_indexes("failed", "payload")</code>' in both
    with jobs_engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        create_indexes(connection, ["payload"], SCHEMA)
    assert "<code>failed</code>" in (hint("/jobs?state=failed&payload=%7B%22n%22%3A5%7D") or "")
    assert hint("/jobs?payload=%7B%22n%22%3A5%7D") is None
    assert job_ids(client.get("/jobs?payload=%7B%22n%22%3A5%7D").text) != []


def test_the_last_day_counts_from_24_hours_ago_on_a_small_and_a_large_history(
    make_client: Callable[..., TestClient], jobs_engine: Engine
) -> None:
    """The day's finishes reach back 24 hours (into the hour before the charts' first
    bar); above 50,000 rows they are read from the first id of the day on (a binary search
    over the primary key), with the same result."""
    insert = (
        "INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,"
        " attempts, max_attempts, created_at, run_at, finished_at, outcome)"
        " SELECT g, 'old', '{}', 0, 1, 1, t, t, t, 'completed'"
        " FROM generate_series(1, :rows) g,"
        " LATERAL (SELECT now() - interval '72 hours' * (1 - g::float / :rows) AS t) times"
    )
    execute(
        jobs_engine,
        sql(insert).bindparams(rows=60),
        sql("ANALYZE app_jobs.job_history"),
    )
    client = make_client()

    def shown() -> int:
        page = client.get("/").text
        return int(re.search(r'id="finished-day">([\d,]+)<', page)[1].replace(",", ""))  # type: ignore[index]

    def direct() -> int:
        rows = execute(
            jobs_engine,
            sql(
                "SELECT count(*) FROM app_jobs.job_history"
                " WHERE finished_at >= now() - interval '24 hours'"
            ),
        )
        return int(rows[0][0])

    assert shown() == direct() == 20
    execute(
        jobs_engine,
        sql("TRUNCATE app_jobs.job_history"),
        sql(insert).bindparams(rows=60_000),
        sql("ANALYZE app_jobs.job_history"),
    )
    assert shown() == direct() == 20_000


def test_a_query_past_the_statement_timeout_is_a_503_saying_what_to_do(
    make_client: Callable[..., TestClient], jobs_engine: Engine
) -> None:
    from datetime import timedelta

    execute(
        jobs_engine,
        sql(
            "INSERT INTO app_jobs.jobs (task_identifier, payload)"
            " SELECT 'bulk', json_build_object('n', i) FROM generate_series(1, 200000) i"
        ),
    )
    client = make_client(statement_timeout=timedelta(milliseconds=5))
    response = client.get("/jobs", params={"payload": '{"n": -1}'})
    assert response.status_code == 503
    assert "statement timeout (5 ms)" in response.text and "narrow the filter" in response.text


def test_a_live_job_and_the_workers_refresh_in_place(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    job = client.get(f"/jobs/{workload.account_job}").text
    assert (
        f'hx-get="/jobs/{workload.account_job}" hx-trigger="every 5s" hx-select="#job-live"' in job
    )
    workers = client.get("/workers").text
    assert 'hx-get="/workers" hx-trigger="every 5s" hx-select="#workers-live"' in workers
    [finished] = execute(jobs_engine, sql("SELECT job_id FROM app_jobs.job_history LIMIT 1"))
    assert "hx-get" not in client.get(f"/jobs/{finished.job_id}").text  # it will not change
