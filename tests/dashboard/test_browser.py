"""The dashboard in a real browser: Debian's chromium driven by Playwright, the app served
by uvicorn on 127.0.0.1, under its own strict CSP (every violation fails the test).

Without a browser these tests skip, saying how to get one; with ``CI`` set they fail
instead (``.ci/run`` installs chromium). Each test saves screenshots in a temporary
directory (``PGJOBS_SCREENSHOTS=DIR`` saves them there too: docs/images/ is made so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sqla_pgjobs.dashboard import create_app
from tests.dashboard.workload import HOSTILE, direct_counts, finished_counts
from tests.helpers import SCHEMA, sql
from tests.metrics.workload import execute

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

    from tests.dashboard.workload import Workload

uvicorn = pytest.importorskip("uvicorn")

# Every CSP violation and page error is kept, to fail the test with.
INIT_SCRIPT = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def _chromium() -> str | None:
    """Debian's chromium, or None for Playwright's own download (``playwright install
    chromium``) when that is installed; otherwise skip (fail under CI)."""
    found = shutil.which("chromium")
    if found is not None:
        return found
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        if Path(playwright.chromium.executable_path).exists():
            return None
    message = (
        "no browser for the dashboard's browser tests: install Debian's chromium "
        "(apt-get install chromium), or run `playwright install chromium` where that "
        "download is reachable"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI needs chromium ({message}); .ci/run installs it with apt-get")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread; its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], None]:
    directory = tmp_path_factory.mktemp("dashboard-screenshots")
    extra = os.environ.get("PGJOBS_SCREENSHOTS")

    def save(page: Any, name: str) -> None:
        page.screenshot(path=str(directory / f"{name}.png"), full_page=True)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(extra) / f"{name}.png"), full_page=True)

    return save


@pytest.fixture
def open_page(browser: Any, engine: Engine) -> Iterator[Callable[..., tuple[Any, str]]]:
    """``open_page(**create_app options)``: a new browser page on a served dashboard, and
    the dashboard's base URL. Afterwards: no CSP violation, no page error."""
    stack = contextlib.ExitStack()
    pages: list[Any] = []
    problems: list[str] = []

    def open_(**options: Any) -> tuple[Any, str]:
        base = stack.enter_context(served(create_app(engine, schema=SCHEMA, **options)))
        context = browser.new_context(viewport={"width": 1280, "height": 600})
        context.add_init_script(INIT_SCRIPT)
        stack.callback(context.close)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        pages.append(page)
        return page, base

    with stack:
        yield open_
        for page in pages:
            if not page.is_closed():
                problems += [f"CSP: {v}" for v in page.evaluate("window.__violations")]
    assert not problems, problems


def _confirm(page: Any, button: str) -> None:
    """Press an action's button, then the confirmation page's."""
    page.click(f'[data-action="{button}"]')
    page.wait_for_selector("#confirm")
    page.click("#confirm")
    page.wait_for_selector("#summary")


def test_the_overview_shows_the_database_and_refreshes_itself(
    open_page: Callable[..., tuple[Any, str]],
    workload: Workload,
    jobs_engine: Engine,
    screenshots: Callable[[Any, str], None],
) -> None:
    # A day of finished runs, so that the charts have something to draw.
    execute(
        jobs_engine,
        sql(
            "INSERT INTO app_jobs.job_history (job_id, task_identifier, queue_name, payload,"
            " priority, attempts, max_attempts, created_at, run_at, started_at, finished_at,"
            " outcome)"
            " SELECT 100000 + g, 'ok', 'fast', '{}', 0, 1, 25, t, t - (g % 7) * interval '0.3 s',"
            " t - interval '0.05 s', t,"
            " CASE WHEN g % 9 = 0 OR (g BETWEEN 200 AND 230) THEN 'failed' ELSE 'completed' END"
            " FROM generate_series(1, 540) g,"
            " LATERAL (SELECT now() - g * interval '2.5 minutes' * (1 + sin(g / 40.0) / 3)) AS f(t)"
            " WHERE g * 2.5 * (1 + sin(g / 40.0) / 3) < 23 * 60"
        ),
    )
    page, base = open_page(refresh_seconds=1)
    page.goto(base + "/")
    live = direct_counts(jobs_engine)
    for (task, queue, state), n in live.items():
        cell = page.locator(
            f'tr[data-task="{task}"][data-queue="{queue}"] td[data-state="{state}"]'
        )
        assert cell.inner_text() == str(n), (task, queue, state)
    finished = finished_counts(jobs_engine)
    assert page.inner_text("#finished-day") == str(sum(finished.values()))
    due = sum(n for (_, _, state), n in live.items() if state == "due")
    assert page.inner_text("#total-due") == str(due)
    assert page.evaluate("typeof window.htmx") == "object"
    screenshots(page, "dashboard-overview")
    # htmx polls: a job enqueued now shows within a few seconds, without a reload.
    execute(jobs_engine, sql("INSERT INTO app_jobs.jobs (task_identifier) VALUES ('mail')"))
    # (Polled from here: wait_for_function evaluates a string, which the CSP forbids.)
    deadline = time.monotonic() + 10
    while page.inner_text("#total-due") != str(due + 1):
        assert time.monotonic() < deadline, "the overview did not refresh"
        page.wait_for_timeout(200)


def test_filtering_by_payload_finds_the_job(
    open_page: Callable[..., tuple[Any, str]],
    workload: Workload,
    screenshots: Callable[[Any, str], None],
) -> None:
    page, base = open_page()
    page.goto(base + "/jobs")
    page.fill('input[name="payload"]', '{"account_id": 42}')
    page.click('#filters button[type="submit"]')
    page.wait_for_url("**/jobs?*payload=*")
    rows = page.locator("tr[data-job-id]")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-job-id") == str(workload.account_job)
    screenshots(page, "dashboard-jobs")


def test_retrying_a_failed_job_makes_it_pending(
    open_page: Callable[..., tuple[Any, str]],
    workload: Workload,
    jobs_engine: Engine,
    screenshots: Callable[[Any, str], None],
) -> None:
    page, base = open_page()
    page.goto(f"{base}/jobs/{workload.failed_job}")
    assert "RuntimeError: boom" in page.inner_text("body")
    screenshots(page, "dashboard-job")
    page.click('[data-action="retry"]')
    page.wait_for_selector("#confirm")
    screenshots(page, "dashboard-confirm")
    page.click("#confirm")
    page.wait_for_selector("#summary")
    [row] = execute(
        jobs_engine,
        sql("SELECT attempts, run_at <= now() AS due FROM app_jobs.jobs WHERE id = :id").bindparams(
            id=workload.failed_job
        ),
    )
    assert (row.attempts, row.due) == (0, True)
    page.goto(f"{base}/jobs?state=due&task=boom")
    assert page.locator(f'tr[data-job-id="{workload.failed_job}"]').count() == 1


def test_cancel_and_pause_work(
    open_page: Callable[..., tuple[Any, str]],
    workload: Workload,
    jobs_engine: Engine,
    screenshots: Callable[[Any, str], None],
) -> None:
    page, base = open_page()
    page.goto(f"{base}/jobs/{workload.account_job}")
    _confirm(page, "cancel")
    [outcome] = execute(
        jobs_engine,
        sql("SELECT outcome FROM app_jobs.job_history WHERE job_id = :id").bindparams(
            id=workload.account_job
        ),
    )
    assert outcome == ("cancelled",)

    page.goto(f"{base}/queues")
    page.locator('tr[data-queue="slow"] [data-action="pause"]').click()
    page.wait_for_selector("#confirm")
    page.click("#confirm")
    page.wait_for_selector("#summary")
    assert execute(jobs_engine, sql("SELECT kind, name FROM app_jobs.pauses")) == [
        ("queue", "slow")
    ]
    page.goto(f"{base}/queues")
    assert page.locator('tr[data-queue="slow"] [data-action="resume"]').count() == 1
    screenshots(page, "dashboard-queues")


def test_read_only_mode_has_no_action_buttons(
    open_page: Callable[..., tuple[Any, str]],
    workload: Workload,
    screenshots: Callable[[Any, str], None],
) -> None:
    page, base = open_page(read_only=True)
    for path in ("/", "/jobs", "/history", "/queues", f"/jobs/{workload.failed_job}"):
        page.goto(base + path)
        assert page.locator("[data-action]").count() == 0, path
        assert page.locator('form[method="post"]').count() == 0, path
        assert page.is_visible("#read-only")
    for name in ("workers", "schedules", "history"):
        page.goto(f"{base}/{name}")
        screenshots(page, f"dashboard-{name}")


def test_a_post_without_the_csrf_token_is_refused(
    open_page: Callable[..., tuple[Any, str]], workload: Workload, jobs_engine: Engine
) -> None:
    page, base = open_page()
    page.goto(f"{base}/jobs/{workload.failed_job}")  # the browser has the CSRF cookie now
    status = page.evaluate(
        """async ([url, id]) => {
            const body = new URLSearchParams({scope: "job", job_id: id, confirmed: "yes"});
            const response = await fetch(url, {method: "POST", body});
            return response.status;
        }""",
        [f"{base}/actions/retry", str(workload.failed_job)],
    )
    assert status == 403
    [row] = execute(
        jobs_engine,
        sql("SELECT attempts FROM app_jobs.jobs WHERE id = :id").bindparams(id=workload.failed_job),
    )
    assert row.attempts == 1


def test_a_hostile_payload_does_not_execute(
    open_page: Callable[..., tuple[Any, str]], workload: Workload
) -> None:
    page, base = open_page()
    for path in ("/jobs", "/jobs?task=billing", f"/jobs/{workload.hostile_job}"):
        page.goto(base + path)
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.__pwned") == "undefined", path
        assert page.locator("img[src=x]").count() == 0
    text = page.inner_text("#payload")
    for value in HOSTILE.values():
        assert value in text.replace('\\"', '"')


def test_a_job_page_refreshes_itself(
    open_page: Callable[..., tuple[Any, str]], workload: Workload, jobs_engine: Engine
) -> None:
    page, base = open_page(refresh_seconds=1)
    page.goto(f"{base}/jobs/{workload.delayed_job}")
    assert page.inner_text("h1 .state") == "delayed"
    execute(
        jobs_engine,
        sql("UPDATE app_jobs.jobs SET run_at = now() WHERE id = :id").bindparams(
            id=workload.delayed_job
        ),
    )
    deadline = time.monotonic() + 10
    while page.inner_text("h1 .state") != "due":
        assert time.monotonic() < deadline, "the job page did not refresh"
        page.wait_for_timeout(200)
    assert page.locator("#job-live").count() == 1  # swapped in place, not nested
