"""The dashboard's security: everything escaped, a strict CSP and no inline script or
style, hostile filter values refused or bound (never SQL), bad input named in a 400, and
the database roles it works with: grant_access's read level (read-only mode) and its
operator level (actions)."""

from __future__ import annotations

import html.parser
from typing import TYPE_CHECKING

import pytest

from sqla_pgjobs import grant_access
from sqla_pgjobs.dashboard import create_app
from tests.dashboard.conftest import csrf_token
from tests.helpers import SCHEMA, sql
from tests.metrics.workload import execute

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine
    from starlette.testclient import TestClient

    from tests.dashboard.workload import Workload
    from tests.roles import Role


class _Tags(html.parser.HTMLParser):
    """What a page would run or style inline: scripts without src, <style>, style and
    on* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if (tag == "script" and "src" not in names) or tag == "style":
            self.inline.append(tag)
        self.inline += [
            f"{tag} {name}" for name in names if name == "style" or name.startswith("on")
        ]


PAGES = ("/", "/jobs", "/history", "/workers", "/schedules", "/queues")


def test_a_hostile_payload_is_shown_as_text(client: TestClient, workload: Workload) -> None:
    for path in ("/jobs", f"/jobs/{workload.hostile_job}", "/jobs?task=billing"):
        page = client.get(path).text
        assert "<script>window" not in page and "<img src=x" not in page, path
        assert "<svg onload" not in page, path
    detail = client.get(f"/jobs/{workload.hostile_job}").text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in detail
    assert "&lt;img src=x onerror=" in detail
    listing = client.get("/jobs").text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in listing
    # Reflected filter values are escaped too.
    echoed = client.get("/jobs", params={"task": '"><script>alert(1)</script>'}).text
    assert "<script>alert(1)" not in echoed


def test_every_page_sends_a_strict_csp_and_has_no_inline_script_or_style(
    client: TestClient, workload: Workload
) -> None:
    for path in (*PAGES, f"/jobs/{workload.failed_job}", "/static/dashboard.css", "/nowhere"):
        response = client.get(path)
        policy = response.headers["content-security-policy"]
        assert policy.startswith("default-src 'self'"), path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        page = response.text
        if path.endswith(".css"):
            continue
        tags = _Tags()
        tags.feed(page)
        assert not tags.inline, (path, tags.inline)
        assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', ""), path


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"state": "zombie"},
            "state &#39;zombie&#39; is not allowed: it must be one of due, delayed, running, "
            "failed",
        ),
        ({"payload": "{oops"}, "payload &#39;{oops&#39; is not allowed: it must be JSON"),
        ({"tenant": "acme"}, "tenant &#39;acme&#39; is not allowed: it must be a UUID"),
        (
            {"since": "yesterday"},
            "since &#39;yesterday&#39; is not allowed: it must be an ISO 8601 time",
        ),
        (
            {"limit": "0"},
            "limit &#39;0&#39; is not allowed: it must be a whole number from 1 to 500",
        ),
        ({"limit": "1e9"}, "limit &#39;1e9&#39; is not allowed"),
        ({"before": "-1"}, "before &#39;-1&#39; is not allowed"),
        ({"outcome": "completed"}, "live jobs are filtered by state, not outcome"),
        ({"task": "x" * 200}, "task &#39;"),
        ({"key": "k\x00"}, "key &#39;"),
    ],
)
def test_bad_filter_input_is_a_400_naming_it(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    response = client.get("/jobs", params=params)
    assert response.status_code == 400
    assert message in response.text


def test_filter_values_are_bound_not_sql(
    client: TestClient, workload: Workload, jobs_engine: Engine
) -> None:
    for task in ("x' OR '1'='1", "mail'; DROP TABLE app_jobs.jobs; --", "%", "_"):
        response = client.get("/jobs", params={"task": task, "queue": "a"})
        assert response.status_code == 200
        assert "No job matches." in response.text
    response = client.get("/jobs", params={"payload": '{"account_id": "42\' OR 1=1"}'})
    assert "No job matches." in response.text
    assert execute(jobs_engine, sql("SELECT count(*) FROM app_jobs.jobs"))[0][0] > 0
    history = client.get("/history", params={"outcome": "completed' OR true --"})
    assert history.status_code == 400


def _read_only_role(make_role: Callable[..., Role], jobs_engine: Engine) -> Role:
    """A role with grant_access's read level: USAGE on the schema, SELECT on its tables,
    and alive_until (which the views call to tell live workers)."""
    role = make_role("pgjobs_dash_ro_")
    execute(jobs_engine, grant_access(role.name, "read"))
    return role


def test_a_read_only_role_serves_every_page_in_read_only_mode(
    make_client: Callable[..., TestClient],
    make_role: Callable[..., Role],
    jobs_engine: Engine,
    workload: Workload,
) -> None:
    role = _read_only_role(make_role, jobs_engine)
    client = make_client(create_app(role.engine, schema=SCHEMA, read_only=True))
    for path in (
        *PAGES,
        f"/jobs/{workload.failed_job}",
        f"/jobs/{workload.traced_job}",
        "/jobs?payload=%7B%22account_id%22%3A42%7D",
        "/history?outcome=failed",
    ):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
    assert workload.trace_id in client.get(f"/jobs/{workload.traced_job}").text
    # The role could not act even if the app let it: its transaction is read-only.
    with role.engine.connect() as connection:
        with pytest.raises(Exception, match="permission denied"):
            connection.execute(sql("DELETE FROM app_jobs.jobs"))


def test_an_operator_role_acts(
    make_client: Callable[..., TestClient],
    make_role: Callable[..., Role],
    jobs_engine: Engine,
    workload: Workload,
) -> None:
    role = make_role("pgjobs_dash_op_")
    execute(jobs_engine, grant_access(role.name, "operator"))
    client = make_client(create_app(role.engine, schema=SCHEMA))
    for path in (*PAGES, f"/jobs/{workload.failed_job}"):
        assert client.get(path).status_code == 200, path
    token = csrf_token(client.get(f"/jobs/{workload.failed_job}").text)
    for action, fields in [
        ("retry", {"scope": "job", "job_id": str(workload.failed_job)}),
        ("run_now", {"scope": "job", "job_id": str(workload.delayed_job)}),
        ("cancel", {"scope": "job", "job_id": str(workload.account_job)}),
        ("delete", {"scope": "job", "job_id": str(workload.traced_job)}),
        ("retry", {"scope": "filter", "task": "mail", "state": "failed"}),
        ("pause", {"queue": "slow"}),
        ("resume", {"queue": "slow"}),
    ]:
        done = client.post(
            f"/actions/{action}", data={"csrf_token": token, "confirmed": "yes", **fields}
        )
        assert done.status_code == 200, (action, done.text[-800:])
    [row] = execute(
        jobs_engine,
        sql("SELECT count(*) FROM app_jobs.jobs WHERE attempts >= max_attempts"),
    )
    assert row[0] == 1  # the second boom job, not retried
