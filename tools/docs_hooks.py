"""MkDocs hooks (see mkdocs.yml): pages generated from the source at build time.

``<!-- pgjobs-help -->`` in a page becomes the ``--help`` text of every ``pgjobs`` command,
so the command-line reference cannot drift from the CLI.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- pgjobs-help -->"


def _commands(group: Any, prefix: list[str]) -> list[list[str]]:
    import click

    found = [prefix]
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            found += _commands(group.commands[name], [*prefix, name])
    return found


def _help() -> str:
    from click.testing import CliRunner

    from sqla_pgjobs.cli import main

    sections = []
    for command in _commands(main, []):
        result = CliRunner().invoke(main, [*command, "--help"], terminal_width=88)
        if result.exit_code != 0:
            raise RuntimeError(f"pgjobs {' '.join(command)} --help failed: {result.output}")
        title = " ".join(["pgjobs", *command])
        sections.append(f"## `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, _help())
    return markdown
