"""Every code block in README.md and docs/ runs, against a real PostgreSQL, and every sample
of a command's output (<!-- output: COMMAND --> above a ```text block) is what it prints.

The rules (files, shared namespace per page, placeholders, samples, opt-outs) are in
tests/docs/snippets.py. A quickstart that breaks is a bug; so is a sample that lies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from typing import TYPE_CHECKING

import pytest

from tests.docs import snippets
from tests.docs.snippets import (
    ROOT,
    Block,
    blocks,
    normalise,
    pages,
    sample_problems,
    wants_empty_database,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy.engine import URL

# Raise only with a reason a reviewer accepts: each opt-out is a snippet nobody checks.
MAX_SKIPPED = 12

PAGES = pages()


def _readme_ci_block(block: Block) -> bool:
    """README.md's first ```sh block: .ci/run executes its two commands exactly as written."""
    readme = [b for b in blocks(ROOT / "README.md") if b.language == "sh"]
    return block.page == "README.md" and bool(readme) and block == readme[0]


def _plan(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.kind != "text" and not _readme_ci_block(b)]


# Pages without a runnable block (all prose, or only opted-out blocks) are not collected.
RUNNABLE = [page for page in PAGES if any(b.kind != "skip" for b in _plan(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_page_runs(
    page: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    new_database: Callable[..., URL],
) -> None:
    plan = [b for b in _plan(page) if b.kind != "skip"]
    if wants_empty_database(page):
        url: URL = new_database()
    else:
        # The plugin's database: the job schema under its default name, app_jobs, as the
        # docs assume (whatever PGJOBS_TEST_SCHEMA says for the rest of the suite).
        url = request.getfixturevalue("pgjobs_database_url")
    server = request.getfixturevalue("pgjobs_server_url")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                # Unquoted: a socket path stays /tmp/..., not %2Ftmp%2F... (alembic.ini
                # would read the % signs as interpolation).
                "url": urllib.parse.unquote(url.render_as_string(hide_password=False)),
                "blocks": [
                    {
                        "page": b.page,
                        "line": b.line,
                        "where": b.where,
                        "kind": b.kind,
                        "title": b.title,
                        "code": b.code,
                        "output_of": b.output_of,
                    }
                    for b in plan
                ],
            }
        )
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = dict(os.environ)
    # Tests a page writes and runs (docs/testing.md) use the same server.
    env["PGJOBS_TEST_DATABASE_URL"] = server.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, snippets.__file__, str(plan_file)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_opt_outs_are_few_and_explained() -> None:
    skipped = [b for page in PAGES for b in blocks(page) if b.kind == "skip"]
    listing = "\n".join(f"{b.where}: {b.skip_reason}" for b in skipped)
    assert len(skipped) <= MAX_SKIPPED, f"{len(skipped)} blocks opted out:\n{listing}"
    for block in skipped:
        assert len(block.skip_reason or "") >= 10, f"{block.where}: say why it cannot run"
        if block.language in ("python", "py"):
            compile(block.code, block.where, "exec")  # an excerpt, but valid Python


def test_runnable_languages_are_run() -> None:
    """A typo in a fence's language would silently turn a program into text."""
    known = {*snippets.RUNNABLE, *snippets.SAMPLE_LANGUAGES}
    known |= {"ini", "yaml", "toml", "mermaid", "json"}
    for page in PAGES:
        for block in blocks(page):
            assert block.language in known, f"{block.where}: unknown language {block.language!r}"


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").rglob("*.md"):
        assert page.relative_to(ROOT / "docs").as_posix() in nav, page


# --- Samples: what a command prints, shown under it (<!-- output: COMMAND -->) ---------------


def test_samples_are_marked_and_follow_their_command() -> None:
    """Each ```text block is a checked sample, right under the ```sh block that prints it,
    or says why it cannot be checked; test_page_runs compares the checked ones."""
    problems = [problem for page in PAGES for problem in sample_problems(blocks(page))]
    assert not problems, "\n".join(problems)
    assert sum(b.kind == "output" for page in PAGES for b in blocks(page)) >= 8


def test_sample_checks_catch_a_misplaced_or_unmarked_sample(tmp_path: Path) -> None:
    text = (
        "```sh\npgjobs status\n```\n\n<!-- output: pgjobs status -->\n```text\njobs: 0\n```\n"
        "```sh\npgjobs schedules  # a comment\n```\n<!-- output: pgjobs status -->\n"
        "```text\nNo scheduled jobs.\n```\n"
        "```python\nprint(1)\n```\n<!-- output: print(1) -->\n```text\n1\n```\n"
        "```text\nunmarked\n```\n"
    )
    found = _blocks_of(text, tmp_path)
    assert [b.kind for b in found] == ["sh", "output", "sh", "output", "python", "output", "text"]
    problems = sample_problems(found)
    assert len(problems) == 3, problems
    assert "names another command than the last line" in problems[0]
    assert "pgjobs schedules" in problems[0]
    assert "follows the ```sh block" in problems[1]
    assert "put <!-- output: COMMAND -->" in problems[2]


def _blocks_of(text: str, tmp_path: Path) -> list[Block]:
    """blocks() of a Markdown text (written under ROOT's layout in a temporary copy)."""
    from unittest import mock

    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    with mock.patch.object(snippets, "ROOT", tmp_path):
        return snippets.blocks(path)


WORKER_LOG = """\
2026-11-29 19:00:33,353 INFO    worker host-10792-4eaddb started: 1 task(s), concurrency 10
2026-11-29 19:00:33,365 INFO    job 1 (send_welcome_email) completed in 0.4 ms
"""


def test_normalise_replaces_only_what_varies() -> None:
    other_run = """\
2027-01-02 03:04:05,006 INFO    worker ci-runner.example-7-0f0f0f started: 1 task(s), concurrency 10
2027-01-02 03:04:05,100 INFO    job 1 (send_welcome_email) completed in 12.25 ms   \n\n
"""
    assert normalise(WORKER_LOG) == normalise(other_run)
    assert normalise(WORKER_LOG).splitlines()[1] == (
        "<time> INFO    job 1 (send_welcome_email) completed in <duration>"
    )
    # Everything else counts: another job id, count or level is a difference.
    assert normalise(WORKER_LOG) != normalise(WORKER_LOG.replace("job 1", "job 2"))
    assert normalise(WORKER_LOG) != normalise(WORKER_LOG.replace("concurrency 10", "concurrency 8"))
    assert normalise(WORKER_LOG) != normalise(WORKER_LOG.replace("INFO    job", "INFO job"))
    # A timeout is configuration, not a measurement.
    assert "30 s" in normalise("timeout 30 s, last heartbeat 2 s ago")
    assert normalise("last heartbeat 2 s ago") == "last heartbeat <duration> ago\n"


def test_normalise_keeps_column_widths() -> None:
    """A padded column of times may hold a shorter time, not a narrower column."""
    header = f"{'id':>8}  {'run at':<33} last error"
    row = f"{1:>8}  {'2026-11-29T19:00:33.353000+00:00':<33} boom"
    short_time = f"{1:>8}  {'2026-12-07T09:00:00+00:00':<33} boom"
    wider_column = f"{1:>8}  {'2026-12-07T09:00:00+00:00':<40} boom"
    assert normalise(f"{header}\n{row}") == normalise(f"{header}\n{short_time}")
    assert normalise(f"{header}\n{row}") != normalise(f"{header}\n{wider_column}")


def test_normalise_keeps_only_the_last_progress_line_of_the_demo() -> None:
    def demo(*done: int) -> str:
        progress = [f"  {n:>5}/59 jobs done   0 waiting to retry, 3 delayed" for n in done]
        return "\n".join(["Enqueued 59 jobs.", *progress, "", "task  runs"])

    assert normalise(demo(0, 54, 59)) == normalise(demo(12, 59)) == normalise(demo(59))
    assert normalise(demo(0, 54, 59)) != normalise(demo(0, 54))


def test_normalise_puts_the_placeholder_url_back() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/pgjobs_test_1234"
    printed = (
        f"connecting to {url} and postgresql+psycopg://postgres@127.0.0.1:5432/pgjobs_test_1234"
    )
    assert normalise(printed, url) == (
        "connecting to postgresql://localhost/app and postgresql+psycopg://localhost/app\n"
    )


def test_a_wrong_sample_fails_with_both_texts(tmp_path: Path) -> None:
    """What whoever changes the CLI's output sees: the page's text, the command's, a diff."""
    url = "postgresql://nobody@127.0.0.1:1/nothing"  # not used: the block only echoes
    sample = "      id  task\n       1  send_email\n"
    printed = "echo '      id  task'; echo '       1  send_mail'"
    plan = {
        "url": url,
        "blocks": [
            {"page": "docs/x.md", "line": 2, "where": "docs/x.md:2", "kind": "sh",
             "title": None, "code": printed + "\n", "output_of": None},
            {"page": "docs/x.md", "line": 6, "where": "docs/x.md:6", "kind": "output",
             "title": None, "code": sample, "output_of": printed},
        ],
    }  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, snippets.__file__, str(tmp_path / "plan.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = result.stdout[result.stdout.index("FAILED docs/x.md:6") :]
    assert "the page shows:\n      id  task\n       1  send_email\n" in report
    assert "the command printed:\n      id  task\n       1  send_mail\n" in report
    assert "-       1  send_email\n+       1  send_mail" in report
