"""Find the code blocks of README.md and docs/, and run a page's blocks in order.

How a block is treated (tests/test_docs_snippets.py runs every page; docs/index.md tells
readers the same rules):

- a block with a title (```python title="myapp/tasks.py"```) is a file: it is written to
  that path, relative to the page's own empty working directory (an absolute title such as
  ``/etc/systemd/system/x.service`` lands there too, never in the real place);
- a ```python block runs; all Python blocks of a page share one namespace, top to bottom,
  like a REPL session;
- a ```sh block runs in bash (-e -u -o pipefail) with the virtual environment's ``bin``
  first on PATH and ``PGJOBS_DATABASE_URL`` set;
- a ```sql block runs against the page's database;
- blocks in any other language (ini, yaml, text, mermaid, ...) are not programs;
- ``<!-- snippet: skip (reason) -->`` on the line before a block keeps it from running; the
  test counts these, so they stay few and each says why;
- ``<!-- snippets: empty database -->`` anywhere on a page gives it a database without the
  job schema (the page installs it); otherwise the schema is installed under ``app_jobs``.

Each page gets a fresh database. The URLs ``postgresql://localhost/app`` and
``postgresql+psycopg://localhost/app`` in any block stand for it and are replaced.

Run as a script (``python tests/docs_snippets.py PLAN.json``), it executes one page's plan:
the test runs each page in a subprocess of its own, in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER_URL = "postgresql://localhost/app"
PLACEHOLDER_SQLALCHEMY_URL = "postgresql+psycopg://localhost/app"
EMPTY_DATABASE_MARK = "<!-- snippets: empty database -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_SKIP = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
_TITLE = re.compile(r"""title=["'](?P<title>[^"']+)["']""")

RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "sql": "sql"}


@dataclasses.dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the first line of code (1-based)
    language: str
    title: str | None
    code: str
    skip_reason: str | None

    @property
    def kind(self) -> str:
        """``file``, ``python``, ``sh``, ``sql``, ``skip`` or ``text`` (not a program)."""
        if self.skip_reason is not None:
            return "skip"
        if self.title is not None:
            return "file"
        return RUNNABLE.get(self.language, "text")

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start = index + 1
        end = start
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line for line in lines[start:end]
        ]
        previous = index - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        skip = _SKIP.match(lines[previous]) if previous >= 0 else None
        title = _TITLE.search(info)
        found.append(
            Block(
                page=page,
                line=start + 1,
                language=(info.split() or [""])[0].lower(),
                title=title["title"] if title else None,
                code="\n".join(body) + "\n",
                skip_reason=skip["reason"].strip() if skip else None,
            )
        )
        index = end + 1
    return found


def wants_empty_database(path: Path) -> bool:
    return EMPTY_DATABASE_MARK in path.read_text(encoding="utf-8")


def substitute(code: str, url: str) -> str:
    """Point the placeholder URLs at the page's database (``url`` has no driver)."""
    driverless = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with_driver = driverless.replace("postgresql://", "postgresql+psycopg://", 1)
    return code.replace(PLACEHOLDER_SQLALCHEMY_URL, with_driver).replace(
        PLACEHOLDER_URL, driverless
    )


# --- Running a page (in a subprocess of its own) ----------------------------------------------


def _run(plan: dict[str, object]) -> int:
    workdir = Path.cwd()
    url = str(plan["url"])
    sys.path.insert(0, str(workdir))
    # The blocks run as the __main__ module (a fresh one: the runner keeps its own), so that
    # code looking a class's module up in sys.modules (SQLAlchemy's annotations) finds them.
    main = types.ModuleType("__main__")
    runner, sys.modules["__main__"] = sys.modules["__main__"], main
    namespace = main.__dict__
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PGJOBS_DATABASE_URL"] = url
    env.pop("PGJOBS_TEST_SCHEMA", None)
    for block in plan["blocks"]:  # type: ignore[attr-defined]
        where, kind, code = block["where"], block["kind"], substitute(block["code"], url)
        started = time.monotonic()
        print(f"--- {where} ({kind}{': ' + block['title'] if block['title'] else ''})", flush=True)
        try:
            if kind == "file":
                # Always inside the page's directory, even for a title like /etc/...
                target = (workdir / block["title"].lstrip("/")).resolve()
                if not target.is_relative_to(workdir.resolve()):
                    raise ValueError(f"file title {block['title']!r} leaves the page directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(code, encoding="utf-8")
                if target.suffix == ".py":
                    compile(code, where, "exec")
            elif kind == "python":
                # Padding keeps tracebacks pointing at the page's own line numbers.
                source = "\n" * (block["line"] - 1) + code
                exec(compile(source, block["page"], "exec"), namespace)
            elif kind == "sh":
                print("$ " + code.strip().replace("\n", "\n$ "), flush=True)
                subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", code],
                    cwd=workdir,
                    env=env,
                    check=True,
                    timeout=120,
                )
            elif kind == "sql":
                import psycopg

                libpq_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
                with psycopg.connect(libpq_url, autocommit=True) as connection:
                    connection.execute(code)  # type: ignore[arg-type]
        except BaseException as exc:
            sys.stdout.flush()
            if isinstance(exc, subprocess.CalledProcessError):
                print(f"FAILED {where}: exit status {exc.returncode}: {shlex.quote(code)}")
            else:
                traceback.print_exc()
                print(f"FAILED {where}: {type(exc).__name__}: {exc}")
            return 1
        print(f"    ok in {time.monotonic() - started:.2f} s", flush=True)
    sys.modules["__main__"] = runner
    return 0


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    sys.exit(_run(plan))
