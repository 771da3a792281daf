"""Every code block in README.md and docs/ runs, against a real PostgreSQL.

The rules (files, shared namespace per page, placeholders, opt-outs) are in
tests/docs_snippets.py. A quickstart that breaks is a bug.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from typing import TYPE_CHECKING

import pytest

from tests import docs_snippets
from tests.docs_snippets import ROOT, Block, blocks, pages, wants_empty_database

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
        [sys.executable, docs_snippets.__file__, str(plan_file)],
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
    known = {*docs_snippets.RUNNABLE, "text", "ini", "yaml", "toml", "mermaid", "json", "console"}
    for page in PAGES:
        for block in blocks(page):
            assert block.language in known, f"{block.where}: unknown language {block.language!r}"


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").rglob("*.md"):
        assert page.relative_to(ROOT / "docs").as_posix() in nav, page
