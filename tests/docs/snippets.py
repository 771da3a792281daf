"""Find the code blocks of README.md and docs/, and run a page's blocks in order.

How a block is treated (tests/docs/test_snippets.py runs every page; docs/index.md tells
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
- ``<!-- output: COMMAND -->`` on the line before a ```text block makes it a **sample**:
  what the ```sh block right above it prints (stdout and stderr as a terminal shows them),
  compared when the page runs. COMMAND repeats that block's last line (without its
  ``# comment``), so that the pair stays together. Every ```text or ```console block is a
  checked sample or opts out with ``snippet: skip (reason)``. Before comparing, both texts
  are normalised by :func:`normalise` (times, durations, worker ids, the database URL);
- ``<!-- snippets: empty database -->`` anywhere on a page gives it a database without the
  job schema (the page installs it); otherwise the schema is installed under ``app_jobs``.

Each page gets a fresh database. The URLs ``postgresql://localhost/app`` and
``postgresql+psycopg://localhost/app`` in any block stand for it and are replaced.

Run as a script (``python tests/docs/snippets.py PLAN.json``), it executes one page's plan:
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

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER_URL = "postgresql://localhost/app"
PLACEHOLDER_SQLALCHEMY_URL = "postgresql+psycopg://localhost/app"
EMPTY_DATABASE_MARK = "<!-- snippets: empty database -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_SKIP = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
_OUTPUT = re.compile(r"^\s*<!--\s*output:\s*(?P<command>.*?)\s*-->\s*$")
_TITLE = re.compile(r"""title=["'](?P<title>[^"']+)["']""")

RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "sql": "sql"}
# Blocks that show what a command prints: each is a checked sample or opts out.
SAMPLE_LANGUAGES = {"text", "console"}


@dataclasses.dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the first line of code (1-based)
    language: str
    title: str | None
    code: str
    skip_reason: str | None
    output_of: str | None = None  # the command named by <!-- output: ... -->

    @property
    def kind(self) -> str:
        """``file``, ``python``, ``sh``, ``sql``, ``output`` (a checked sample), ``skip`` or
        ``text`` (not a program)."""
        if self.skip_reason is not None:
            return "skip"
        if self.output_of is not None:
            return "output"
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
        output = _OUTPUT.match(lines[previous]) if previous >= 0 else None
        title = _TITLE.search(info)
        found.append(
            Block(
                page=page,
                line=start + 1,
                language=(info.split() or [""])[0].lower(),
                title=title["title"] if title else None,
                code="\n".join(body) + "\n",
                skip_reason=skip["reason"].strip() if skip else None,
                output_of=output["command"] if output else None,
            )
        )
        index = end + 1
    return found


def last_command(code: str) -> str:
    """A shell block's last line without its trailing ``# comment`` (as .ci/run reads the
    README's commands)."""
    lines = [line for line in code.splitlines() if line.strip()]
    return re.sub(r"\s+#.*$", "", lines[-1]).strip() if lines else ""


def sample_problems(found: list[Block]) -> list[str]:
    """What is wrong with the samples of one page's blocks (empty when all is well)."""
    problems = []
    for index, block in enumerate(found):
        if block.language in SAMPLE_LANGUAGES and block.kind not in ("output", "skip"):
            problems.append(
                f"{block.where}: a ```{block.language} block is a sample of what a command "
                "prints: put <!-- output: COMMAND --> above it (COMMAND: the last line of the "
                "```sh block above), or <!-- snippet: skip (why it cannot be checked) -->"
            )
        if block.output_of is None:
            continue
        above = found[index - 1] if index else None
        if block.language not in SAMPLE_LANGUAGES:
            problems.append(f"{block.where}: a sample is a ```text block, not ```{block.language}")
        if above is None or above.kind != "sh":
            problems.append(f"{block.where}: a sample follows the ```sh block that prints it")
        elif last_command(above.code) != block.output_of:
            problems.append(
                f"{block.where}: <!-- output: {block.output_of} --> names another command than "
                f"the last line of the block above ({above.where}): {last_command(above.code)}"
            )
    return problems


def wants_empty_database(path: Path) -> bool:
    return EMPTY_DATABASE_MARK in path.read_text(encoding="utf-8")


def substitute(code: str, url: str) -> str:
    """Point the placeholder URLs at the page's database (``url`` has no driver)."""
    driverless = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with_driver = driverless.replace("postgresql://", "postgresql+psycopg://", 1)
    return code.replace(PLACEHOLDER_SQLALCHEMY_URL, with_driver).replace(
        PLACEHOLDER_URL, driverless
    )


# --- Comparing a sample with what was printed -------------------------------------------------

# What genuinely varies from one run to the next, in the order it is replaced. Nothing else
# is: job ids, counts, messages, column headers and widths are compared as they are.
VARYING = (
    # 2026-11-29 19:00:33,353 (log lines), 2026-11-29T19:00:33.353000+00:00 (isoformat),
    # 2026-11-29 19:00:33.353+00 (PostgreSQL)
    (
        "time",
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    ),
    # A worker's or scheduler's default id: [scheduler-]host-pid-random (service.default_id)
    ("worker-id", r"\b[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?-\d+-[0-9a-f]{6}\b"),
    # The traceback a failed job's last_error ends with, inside a JSON string (its file
    # paths and line numbers are the machine's and the code's of the day).
    ("traceback", r"Traceback \(most recent call last\):(?:\\.|[^\"\\])*"),
    # "completed in 0.4 ms", "done in 3.0 s", "last heartbeat 2 s ago" (not "timeout 30 s")
    ("duration", r"(?<= in )\d+(?:\.\d+)? ?(?:ms|s)\b|\b\d+(?:\.\d+)? ?(?:ms|s)(?= ago\b)"),
)
# `pgjobs demo` reports its progress while it runs (every 0.25 s, when it changed): how many
# such lines, and their counts, depend on timing. Only the last (all done) is compared.
PROGRESS = re.compile(r" +\d+/\d+ jobs done +\d+ waiting to retry, \d+ delayed")
_VARYING = [(name, re.compile(rf"(?:{pattern})(?P<padding> {{2,}})?")) for name, pattern in VARYING]


def normalise_url(text: str, url: str) -> str:
    """The page's database URL (``url``, as :func:`substitute` put it in) back to the
    placeholder the page shows."""
    driverless = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with_driver = driverless.replace("postgresql://", "postgresql+psycopg://", 1)
    return text.replace(with_driver, PLACEHOLDER_SQLALCHEMY_URL).replace(
        driverless, PLACEHOLDER_URL
    )


def normalise(text: str, url: str | None = None) -> str:
    """``text`` with what varies between runs replaced by ``<time>``, ``<worker-id>``,
    ``<traceback>``, ``<duration>``, the page's database URL by the placeholder URL; of the
    demo's progress lines, only the last is kept.

    A varying value followed by two spaces or more is a column of a table, padded to a
    width: ``<time:34>`` keeps the width of the value and its padding, so that the column
    widths are still compared while the value's own width may vary. Trailing spaces and
    trailing blank lines do not count (editors strip them from the Markdown).
    """
    if url is not None:
        text = normalise_url(text, url)
    lines = []
    for line in text.splitlines():
        line = line.rstrip()
        for name, pattern in _VARYING:
            line = pattern.sub(
                lambda m, name=name: f"<{name}:{len(m[0])}>" if m["padding"] else f"<{name}>",
                line,
            )
        if lines and PROGRESS.fullmatch(line) and PROGRESS.fullmatch(lines[-1]):
            lines.pop()  # a progress line with another after it
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


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
    # Python's output unbuffered, as in a terminal: a sample shows a handler's print()
    # between the worker's log lines, where a terminal shows it.
    env["PYTHONUNBUFFERED"] = "1"
    blocks: list[dict[str, str]] = plan["blocks"]  # type: ignore[assignment]
    printed: str | None = None  # by the last ```sh block, when a sample follows it
    for index, block in enumerate(blocks):
        where, kind, code = block["where"], block["kind"], substitute(block["code"], url)
        sampled = index + 1 < len(blocks) and blocks[index + 1]["kind"] == "output"
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
                ran = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", code],
                    cwd=workdir,
                    env=env,
                    check=False,
                    timeout=120,
                    # One stream, in the order a terminal shows it, when a sample follows.
                    stdout=subprocess.PIPE if sampled else None,
                    stderr=subprocess.STDOUT if sampled else None,
                    text=True,
                )
                if sampled:
                    printed = ran.stdout
                    print(printed, end="", flush=True)
                ran.check_returncode()
            elif kind == "output":
                if printed is None:
                    raise ValueError("a sample follows the ```sh block that prints it")
                if normalise(printed, url) != normalise(code):
                    print(_differs(block, printed, code, url))
                    return 1
                printed = None
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


def _differs(block: dict[str, str], printed: str, sample: str, url: str) -> str:
    """Both texts in full and where they part, for whoever changed the docs or the CLI."""
    import difflib

    diff = difflib.unified_diff(
        normalise(sample).splitlines(),
        normalise(printed, url).splitlines(),
        f"{block['where']} (the page)",
        f"{block['output_of']} (the command)",
        lineterm="",
    )
    rule = "-" * 88
    return "\n".join(
        [
            f"FAILED {block['where']}: the sample is not what `{block['output_of']}` prints.",
            "Fix the page, or the command if its output changed by mistake. Compared after",
            "normalising times, durations, worker ids and the URL (tests/docs/snippets.py).",
            f"{rule}\nthe page shows:\n{sample.rstrip()}",
            f"{rule}\nthe command printed:\n{normalise_url(printed, url).rstrip()}",
            f"{rule}\ndiff of the normalised texts (- page, + command):",
            *diff,
        ]
    )


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    sys.exit(_run(plan))
