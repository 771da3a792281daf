"""The dashboard's actions through TestClient: each asks for confirmation first, then acts,
one job or every job of the current filter; pause and resume; and what refuses them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from starlette.exceptions import HTTPException

from tests.dashboard.conftest import csrf_token
from tests.helpers import sql
from tests.metrics.workload import execute

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine
    from starlette.requests import Request
    from starlette.testclient import TestClient

    from tests.dashboard.workload import Workload


def job(engine: Engine, job_id: int) -> Any:
    rows = execute(
        engine,
        sql(
            "SELECT id, attempts, max_attempts, run_at <= now() AS due, locked_at"
            " FROM app_jobs.jobs WHERE id = :id"
        ).bindparams(id=job_id),
    )
    return rows[0] if rows else None


def outcomes(engine: Engine, job_id: int) -> list[str]:
    return [
        row.outcome
        for row in execute(
            engine,
            sql(
                "SELECT outcome FROM app_jobs.job_history WHERE job_id = :id ORDER BY id"
            ).bindparams(id=job_id),
        )
    ]


def act(client: TestClient, action: str, page: str, **fields: str) -> str:
    """Press an action's button on ``page`` (a path), check the confirmation step did
    nothing yet, confirm, and return the result page."""
    token = csrf_token(client.get(page).text)
    form = {"csrf_token": token, **fields}
    confirm = client.post(f"/actions/{action}", data=form)
    assert confirm.status_code == 200, confirm.text
    assert 'id="confirm"' in confirm.text
    done = client.post(f"/actions/{action}", data={**form, "confirmed": "yes"})
    assert done.status_code == 200, done.text
    assert ": done</h1>" in done.text
    return done.text


def test_retry_makes_a_failed_job_pending(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    page = f"/jobs/{workload.failed_job}"
    assert 'data-action="retry"' in client.get(page).text
    token = csrf_token(client.get(page).text)
    confirm = client.post(
        "/actions/retry", data={"csrf_token": token, "scope": "job", "job_id": workload.failed_job}
    )
    assert "1 job (job " in confirm.text
    assert f'href="/jobs/{workload.failed_job}" class="reset" id="cancel-confirm"' in confirm.text
    before = job(jobs_engine, workload.failed_job)
    assert before.attempts == before.max_attempts  # the confirmation step did nothing
    act(client, "retry", page, scope="job", job_id=str(workload.failed_job))
    after = job(jobs_engine, workload.failed_job)
    assert after.attempts == 0 and after.due


def test_retry_of_a_finished_job_enqueues_it_again(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    [finished] = execute(
        jobs_engine,
        sql("SELECT job_id FROM app_jobs.job_history WHERE outcome = 'completed' LIMIT 1"),
    )
    page = f"/jobs/{finished.job_id}"
    assert 'data-action="retry"' not in client.get(page).text  # completed: nothing to retry
    execute(
        jobs_engine,
        sql("UPDATE app_jobs.job_history SET outcome = 'cancelled' WHERE job_id = :id").bindparams(
            id=finished.job_id
        ),
    )
    done = act(client, "retry", page, scope="job", job_id=str(finished.job_id))
    new_id = int(re.search(rf"{finished.job_id} → (\d+)", done)[1])  # type: ignore[index]
    assert job(jobs_engine, new_id).due


def test_cancel_delete_and_run_now(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    act(
        client,
        "cancel",
        f"/jobs/{workload.account_job}",
        scope="job",
        job_id=str(workload.account_job),
    )
    assert job(jobs_engine, workload.account_job) is None
    assert outcomes(jobs_engine, workload.account_job) == ["cancelled"]

    act(
        client,
        "delete",
        f"/jobs/{workload.traced_job}",
        scope="job",
        job_id=str(workload.traced_job),
    )
    assert job(jobs_engine, workload.traced_job) is None
    assert outcomes(jobs_engine, workload.traced_job) == ["discarded"]

    assert not job(jobs_engine, workload.delayed_job).due
    act(
        client,
        "run_now",
        f"/jobs/{workload.delayed_job}",
        scope="job",
        job_id=str(workload.delayed_job),
    )
    assert job(jobs_engine, workload.delayed_job).due


def test_bulk_actions_act_on_the_current_filter(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    listing = client.get("/jobs", params={"task": "mail", "state": "failed"}).text
    assert 'data-action="bulk-retry"' in listing
    filter_fields = {"scope": "filter", "task": "mail", "state": "failed"}
    token = csrf_token(listing)
    confirm = client.post("/actions/retry", data={"csrf_token": token, **filter_fields})
    assert "2 jobs (state = failed, task = mail)" in confirm.text
    act(client, "retry", "/jobs", **filter_fields)
    [row] = execute(
        jobs_engine,
        sql(
            "SELECT count(*) FILTER (WHERE attempts >= max_attempts) AS failed, count(*) AS jobs"
            " FROM app_jobs.jobs WHERE task_identifier = 'mail'"
        ),
    )
    assert (row.failed, row.jobs) == (0, 12)

    done = act(client, "cancel", "/jobs", scope="filter", queue="a")
    assert "cancelled: 9" in done
    [left] = execute(
        jobs_engine, sql("SELECT count(*) AS n FROM app_jobs.jobs WHERE queue_name = 'a'")
    )
    assert left.n == 0


def test_pause_and_resume_a_queue(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    queues = client.get("/queues").text
    assert 'data-action="pause"' in queues
    done = act(client, "pause", "/queues", queue="slow")
    assert "Queue slow paused." in done
    queues = client.get("/queues").text
    slow = queues.split('<tr data-queue="slow">', 1)[1].split("</tr>", 1)[0]
    assert "paused" in slow and 'data-action="resume"' in slow
    assert execute(jobs_engine, sql("SELECT name FROM app_jobs.pauses WHERE kind = 'queue'")) == [
        ("slow",)
    ]
    assert "Paused queues: slow" in client.get("/").text
    act(client, "resume", "/queues", queue="slow")
    assert execute(jobs_engine, sql("SELECT name FROM app_jobs.pauses")) == []


def test_actions_need_the_csrf_token(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    form = {"scope": "job", "job_id": str(workload.failed_job), "confirmed": "yes"}
    client.get("/")  # the cookie is set
    refused = client.post("/actions/retry", data=form)
    assert refused.status_code == 403
    assert "CSRF token is missing" in refused.text
    wrong = client.post("/actions/retry", data={**form, "csrf_token": "x.y"})
    assert wrong.status_code == 403
    # A token of another app (another secret) does not pass either.
    other = client.post("/actions/retry", data={**form, "csrf_token": "abc." + "0" * 64})
    assert other.status_code == 403
    client.cookies.clear()
    token = csrf_token(client.get(f"/jobs/{workload.failed_job}").text)
    client.cookies.clear()
    assert client.post("/actions/retry", data={**form, "csrf_token": token}).status_code == 403
    assert job(jobs_engine, workload.failed_job).attempts == 1  # nothing was retried
    assert client.get("/actions/retry").status_code == 405


def test_read_only_shows_no_action_and_refuses_them(
    make_client: Callable[..., TestClient], workload: Workload, jobs_engine: Engine
) -> None:
    client = make_client(read_only=True)
    for path in ("/", "/jobs", "/queues", f"/jobs/{workload.failed_job}", "/jobs?state=failed"):
        page = client.get(path).text
        assert "data-action" not in page and '<form method="post"' not in page, path
    assert 'id="read-only"' in client.get("/").text
    token = client.cookies.get("pgjobs_csrf")
    refused = client.post(
        "/actions/retry",
        data={
            "csrf_token": token,
            "scope": "job",
            "job_id": str(workload.failed_job),
            "confirmed": "yes",
        },
    )
    assert refused.status_code == 403 and "read-only" in refused.text
    assert client.post("/actions/pause", data={"queue": "slow"}).status_code == 403
    assert job(jobs_engine, workload.failed_job).attempts == 1


def test_authorize_decides_every_page_and_action(
    make_client: Callable[..., TestClient], workload: Workload
) -> None:
    asked: list[str] = []

    def authorize(request: Request, action: str) -> bool:
        asked.append(action)
        if request.headers.get("x-user") is None:
            raise HTTPException(401, "log in", headers={"WWW-Authenticate": 'Basic realm="jobs"'})
        return action != "delete" and request.headers["x-user"] != "nobody"

    client = make_client(authorize=authorize)
    anonymous = client.get("/")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="jobs"'
    assert client.get("/", headers={"x-user": "nobody"}).status_code == 403
    page = client.get(f"/jobs/{workload.traced_job}", headers={"x-user": "ann"}).text
    assert 'data-action="cancel"' in page and 'data-action="delete"' not in page
    token = csrf_token(page)
    refused = client.post(
        "/actions/delete",
        data={"csrf_token": token, "scope": "job", "job_id": str(workload.traced_job)},
        headers={"x-user": "ann"},
    )
    assert refused.status_code == 403
    assert {"view", "delete", "cancel"} <= set(asked)


def test_a_tenant_dashboard_sees_and_acts_on_its_tenant_only(
    make_client: Callable[..., TestClient], workload: Workload, jobs_engine: Engine
) -> None:
    tenant = "5f0c6b1e-1d7a-4a53-9b8e-3f1f5b0f6e21"
    [mine] = execute(
        jobs_engine,
        sql(
            "INSERT INTO app_jobs.jobs (task_identifier, database_id, queue_name, payload)"
            " VALUES ('tenant_task', CAST(:t AS uuid), 'slow', '{\"mine\": true}') RETURNING id"
        ).bindparams(t=tenant),
    )
    client = make_client(tenant=tenant)
    assert re.findall(r'<tr data-job-id="(\d+)">', client.get("/jobs").text) == [str(mine.id)]
    overview = client.get("/").text
    assert 'data-task="tenant_task"' in overview and 'data-task="mail"' not in overview
    assert client.get(f"/jobs/{workload.failed_job}").status_code == 404
    assert (
        client.get("/jobs", params={"tenant": "00000000-0000-0000-0000-000000000000"}).status_code
        == 400
    )
    token = csrf_token(client.get(f"/jobs/{mine.id}").text)
    other = client.post(
        "/actions/delete",
        data={
            "csrf_token": token,
            "scope": "job",
            "job_id": str(workload.failed_job),
            "confirmed": "yes",
        },
    )
    assert other.status_code == 404
    assert job(jobs_engine, workload.failed_job) is not None
    assert 'data-action="pause"' not in client.get("/queues").text
    paused = client.post(
        "/actions/pause", data={"csrf_token": token, "queue": "slow", "confirmed": "yes"}
    )
    assert paused.status_code == 403
    # A bulk action of the tenant's dashboard takes the tenant's jobs only.
    act(client, "delete", "/jobs", scope="filter", queue="slow")
    assert job(jobs_engine, mine.id) is None
    assert job(jobs_engine, workload.hostile_job) is not None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scope": "job", "job_id": "abc"}, "job_id &#39;abc&#39; is not allowed"),
        ({"scope": "everything"}, "scope &#39;everything&#39; is not allowed"),
        ({"scope": "filter", "state": "zombie"}, "state &#39;zombie&#39; is not allowed"),
    ],
)
def test_bad_action_input_is_a_400_naming_it(
    client: TestClient, workload: Workload, fields: dict[str, str], message: str
) -> None:
    token = csrf_token(client.get(f"/jobs/{workload.failed_job}").text)
    response = client.post("/actions/retry", data={"csrf_token": token, **fields})
    assert response.status_code == 400
    assert message in response.text
    assert client.post("/actions/explode", data={"csrf_token": token}).status_code == 404


def test_bulk_retry_of_finished_jobs_enqueues_them_again(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    execute(
        jobs_engine,
        sql("UPDATE app_jobs.job_history SET outcome = 'cancelled' WHERE task_identifier = 'ok'"),
        sql("DELETE FROM app_jobs.jobs WHERE task_identifier = 'boom'"),
    )
    listing = client.get("/history", params={"task": "ok"}).text
    assert 'data-action="bulk-retry"' in listing
    token = csrf_token(listing)
    confirm = client.post(
        "/actions/retry", data={"csrf_token": token, "scope": "history", "task": "ok"}
    )
    assert "4 jobs (finished, task = ok)" in confirm.text
    done = act(client, "retry", "/history?task=ok", scope="history", task="ok")
    assert done.count(" → ") == 4
    [row] = execute(
        jobs_engine, sql("SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'ok'")
    )
    assert row[0] == 4
    # Completed runs are not enqueued again; only retry applies to finished jobs.
    again = client.post(
        "/actions/retry",
        data={"csrf_token": token, "scope": "history", "outcome": "completed"},
    )
    assert "0 jobs" in again.text and 'id="confirm"' not in again.text
    refused = client.post(
        "/actions/delete", data={"csrf_token": token, "scope": "history", "task": "ok"}
    )
    assert refused.status_code == 400 and "finished jobs can only be retried" in refused.text
