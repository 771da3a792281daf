"""MkDocs hooks (see mkdocs.yml).

- ``<!-- pgjobs-help -->`` in a page becomes the ``--help`` text of every ``pgjobs``
  command, so the command-line reference cannot drift from the CLI.
- A page with a diagram (a ```mermaid fence) loads the vendored mermaid
  (docs/assets/vendor/mermaid/, see tools/vendor_mermaid.py): mkdocs-material uses a
  global ``mermaid`` that is already there instead of fetching one from a CDN, so the site
  works offline and behind a CSP that allows only its own host.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- pgjobs-help -->"
MERMAID = "assets/vendor/mermaid/mermaid.min.js"
# What pymdownx.superfences makes of a ```mermaid fence (mkdocs.yml: custom_fences).
DIAGRAM = '<pre class="mermaid">'


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


def on_config(config: Any, **kwargs: Any) -> Any:
    # With instant navigation a page's own scripts do not run when it is reached from
    # another page, so a diagram page reached that way would fetch mermaid from the CDN.
    if "navigation.instant" in config["theme"].get("features", []):
        raise ValueError(
            "navigation.instant: load the vendored mermaid on every page (extra_javascript) "
            "instead of per page in tools/docs_hooks.py"
        )
    return config


def on_post_page(output: str, page: Any, config: Any, **kwargs: Any) -> str:
    """Load mermaid before material's own scripts run (they start at DOMContentLoaded,
    after every script of the body), on the pages that draw a diagram only: it is 3.5 MB."""
    if DIAGRAM not in output:
        return output
    from mkdocs.utils import get_relative_url

    src = get_relative_url(MERMAID, page.url)
    head, body_end, tail = output.rpartition("</body>")
    if not body_end:
        raise ValueError(f"{page.file.src_path}: no </body> to put mermaid before")
    return f'{head}<script src="{src}"></script>\n{body_end}{tail}'
