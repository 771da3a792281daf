"""Vendor mermaid for the documentation site: ``python tools/vendor_mermaid.py 11.17.2``.

mkdocs-material draws ```mermaid fences with a global ``mermaid`` when the page already
has one, and otherwise loads ``https://unpkg.com/mermaid@11/dist/mermaid.min.js`` (see
``as()`` in material's ``bundle.*.min.js``). The site must work offline and behind a CSP
that allows only its own host, so tools/docs_hooks.py adds the copy made here to the pages
that have a diagram. Material asks for major version 11, so stay on 11.x until material
moves.

This takes the npm package with ``npm pack`` (npm's own registry client, no other
download), copies ``dist/mermaid.min.js`` (one self-contained file; its bundled
dependencies' licence notices are at its end) and the package's LICENSE into
docs/assets/vendor/mermaid/, and records the version and the checksums in SOURCE.txt,
which tests/docs/test_site.py compares with the files.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "assets" / "vendor" / "mermaid"
FILES = {"package/dist/mermaid.min.js": "mermaid.min.js", "package/LICENSE": "LICENSE"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_text(version: str, directory: Path) -> str:
    """SOURCE.txt: where the files come from, and their checksums."""
    lines = [
        f"npm package mermaid@{version}, MIT licence (LICENSE; the notices of the libraries",
        "it bundles are at the end of mermaid.min.js).",
        "Refresh with: python tools/vendor_mermaid.py VERSION (see that file for why).",
        "",
    ]
    lines += [f"{sha256(directory / name)}  {name}" for name in sorted(FILES.values())]
    return "\n".join(lines) + "\n"


def main(version: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            ["npm", "pack", f"mermaid@{version}", "--pack-destination", scratch, "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(scratch).glob("mermaid-*.tgz")
        TARGET.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as archive:
            for member, name in FILES.items():
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise SystemExit(f"{member} is missing from {tarball.name}")
                with extracted, (TARGET / name).open("wb") as out:
                    shutil.copyfileobj(extracted, out)
    (TARGET / "SOURCE.txt").write_text(source_text(version, TARGET), encoding="utf-8")
    print(f"mermaid {version} -> {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
