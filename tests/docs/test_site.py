"""The built documentation site loads nothing from another host, and draws its diagrams.

The site must work offline and behind a Content-Security-Policy that allows only its own
host: mermaid is vendored (docs/assets/vendor/mermaid/, tools/vendor_mermaid.py) and
tools/docs_hooks.py puts it on the pages with a diagram; ``theme.font: false`` keeps
material from loading Google Fonts. These tests build the site with ``mkdocs build
--strict`` once, read every page and stylesheet for a reference to another host, and open
the pages in Debian's chromium (Playwright) with every request to another host blocked.
"""

from __future__ import annotations

import functools
import hashlib
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest

from tests.docs.snippets import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MERMAID_DIR = ROOT / "docs" / "assets" / "vendor" / "mermaid"
# What the browser test serves the site with: only its own host, for everything.
# 'unsafe-inline': material's pages carry inline scripts and mermaid writes <style> into
# its SVGs; no 'unsafe-eval', no other host.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:"
)
# Attributes that make a browser fetch something (links to other sites, <a href>, do not).
FETCHING = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "use": ("href", "xlink:href"),
    "image": ("href", "xlink:href"),
}
# <link rel=...> that name another document without fetching it.
NOT_FETCHED_RELS = {"canonical", "alternate", "prev", "next", "author", "license"}
CSS_URL = re.compile(
    r"""url\(\s*(?P<quote>["']?)(?P<url>.*?)(?P=quote)\s*\)"""
    r"""|@import\s+["'](?P<import>[^"']+)["']""",
    re.S,
)


def _elsewhere(url: str) -> bool:
    """Whether fetching ``url`` from a page of the site would go to another host."""
    url = url.strip()
    return bool(re.match(r"(?i)([a-z][a-z0-9+.-]*:)?//", url)) and not url.lower().startswith(
        "data:"
    )


def _css_references(css: str) -> list[str]:
    found = []
    for match in CSS_URL.finditer(css):
        url = match["url"] if match["url"] is not None else match["import"]
        if not url.lower().startswith("data:"):
            found.append(url)
    return found


class _References(html.parser.HTMLParser):
    """The URLs a page makes the browser fetch: tags' attributes, styles, inline CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "link" and set(values.get("rel", "").lower().split()) <= NOT_FETCHED_RELS:
            return
        for name in FETCHING.get(tag, ()):
            if name in values:
                self.found += [part.split()[0] for part in values[name].split(",") if part.strip()]
        if "style" in values:
            self.found += _css_references(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += _css_references(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as CI builds it (mkdocs build --strict: any warning fails)."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


def test_no_page_or_stylesheet_loads_from_another_host(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10, pages
    elsewhere = []
    for page in pages:
        parser = _References()
        parser.feed(page.read_text(encoding="utf-8"))
        elsewhere += [f"{page.relative_to(site)}: {url}" for url in parser.found if _elsewhere(url)]
    for stylesheet in sorted(site.rglob("*.css")):
        text = stylesheet.read_text(encoding="utf-8")
        elsewhere += [
            f"{stylesheet.relative_to(site)}: {url}"
            for url in _css_references(text)
            if _elsewhere(url)
        ]
    assert not elsewhere, "the site loads from other hosts:\n" + "\n".join(elsewhere)


def test_the_check_sees_what_material_loads_by_default() -> None:
    """The parser above finds what material's own templates would load without our settings."""
    parser = _References()
    parser.feed(
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>'
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<link rel="next" href="https://example.org/next/">'
        '<script src="//unpkg.com/mermaid@11/dist/mermaid.min.js"></script>'
        '<a href="https://github.com/">not fetched</a>'
        "<style>@import 'https://example.org/a.css'; b { background: url(data:x) }</style>"
        '<img srcset="https://example.org/a.png 1x, b.png 2x" style="background: url(\'//x/y\')">'
    )
    assert [url for url in parser.found if _elsewhere(url)] == [
        "https://fonts.gstatic.com",
        "https://fonts.googleapis.com/css?family=Roboto",
        "//unpkg.com/mermaid@11/dist/mermaid.min.js",
        "https://example.org/a.css",
        "https://example.org/a.png",
        "//x/y",
    ]
    assert "b.png" in parser.found


def test_diagram_pages_load_the_vendored_mermaid(site: Path) -> None:
    lifecycle = (site / "lifecycle" / "index.html").read_text(encoding="utf-8")
    assert lifecycle.count('<pre class="mermaid">') == 2
    assert '<script src="../assets/vendor/mermaid/mermaid.min.js"></script>' in lifecycle
    assert "mermaid.min.js" not in (site / "index.html").read_text(encoding="utf-8")
    assert (site / "assets" / "vendor" / "mermaid" / "LICENSE").is_file()


def test_vendored_mermaid_is_the_recorded_version() -> None:
    """SOURCE.txt (written by tools/vendor_mermaid.py) names the version and the checksums."""
    source = (MERMAID_DIR / "SOURCE.txt").read_text(encoding="utf-8")
    assert re.search(r"^npm package mermaid@11\.\d+\.\d+,", source, re.M), source
    recorded = {
        match["name"]: match["digest"]
        for match in re.finditer(r"^(?P<digest>[0-9a-f]{64})  (?P<name>\S+)$", source, re.M)
    }
    assert sorted(recorded) == ["LICENSE", "mermaid.min.js"]
    for name, digest in recorded.items():
        assert hashlib.sha256((MERMAID_DIR / name).read_bytes()).hexdigest() == digest, name


# --- In a real browser --------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium: .ci/run installs it with apt-get")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found


class _Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on 127.0.0.1, with the CSP header."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


# Material draws each diagram into a closed shadow root; opened here so that the test can
# read the SVG. Every CSP violation is kept.
INIT_SCRIPT = """
const attachShadow = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
  return attachShadow.call(this, { ...init, mode: "open" });
};
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def test_pages_in_a_browser_offline_with_the_diagrams_drawn(
    site: Path, served: str, tmp_path: Path
) -> None:
    executable = _chromium()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    own = urllib.parse.urlsplit(served).netloc
    blocked: list[str] = []
    problems: list[str] = []

    def route(route: Any) -> None:
        if urllib.parse.urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", route)
            context.add_init_script(INIT_SCRIPT)
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"{page.url}: {error}"))
            page.on(
                "console",
                lambda message: (
                    message.type == "error"
                    and problems.append(f"{page.url}: console: {message.text}")
                ),
            )
            page.on(
                "response",
                lambda response: (
                    response.status >= 400
                    and problems.append(f"{response.url}: HTTP {response.status}")
                ),
            )
            for path in pages:
                page.goto(served + path.removesuffix("index.html"), wait_until="load")
                problems += [f"{path}: CSP: {v}" for v in page.evaluate("window.__violations")]

            page.goto(served + "lifecycle/", wait_until="load")
            diagrams = page.locator("div.mermaid svg")
            try:
                diagrams.nth(1).wait_for(state="visible", timeout=15_000)
            except PlaywrightTimeout:
                drawn = diagrams.count()
                pytest.fail(
                    f"lifecycle: {drawn} of 2 diagrams drawn after 15 s; requests blocked:\n"
                    + "\n".join(sorted(set(blocked)) or ["none"])
                    + "\n"
                    + "\n".join(problems)
                )
            assert diagrams.count() == 2
            texts = [diagrams.nth(i).text_content() or "" for i in range(2)]
            boxes = [diagrams.nth(i).bounding_box() for i in range(2)]
            # To look at (pytest keeps the last runs' tmp_path): the page and each diagram.
            page.screenshot(path=str(tmp_path / "lifecycle.png"), full_page=True)
            for i in range(2):
                diagrams.nth(i).screenshot(path=str(tmp_path / f"diagram-{i + 1}.png"))
            problems += [f"lifecycle: CSP: {v}" for v in page.evaluate("window.__violations")]
        finally:
            browser.close()

    assert not blocked, "pages asked other hosts for:\n" + "\n".join(sorted(set(blocked)))
    assert not problems, "\n".join(problems)
    # The states of the first diagram and the start of the worker loop, drawn as text in SVG
    # (a mermaid syntax error draws an SVG too, saying so).
    for word in ("due", "delayed", "running", "failed", "completed"):
        assert word in texts[0], texts[0]
    assert "worker starts" in texts[1], texts[1]
    assert not any("Syntax error" in text for text in texts)
    for box in boxes:
        assert box is not None and box["width"] > 200 and box["height"] > 100, boxes
