"""The documentation site as a reader sees it: built by MkDocs, then read as HTML.

The ``test`` extra installs the ``docs`` extra for them, so they run wherever the
suite runs.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_TOC = re.compile(r'<nav class="md-nav md-nav--secondary".*?</nav>\s*</div>', re.DOTALL)
_TOC_ENTRY = re.compile(r'<span class="md-ellipsis">\s*(.*?)\s*</span>', re.DOTALL)
_RAW_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const|ref):")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as CI builds it (strict: a broken link or reference fails)."""
    directory = tmp_path_factory.mktemp("site")
    result = subprocess.run(  # noqa: S603 - our own interpreter and mkdocs
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return directory


def page_text(site: Path, page: str) -> str:
    """What a reader can see of ``page``'s HTML: the markup and comments taken out."""
    html = (site / page).read_text(encoding="utf-8")
    return _TAG.sub(" ", _COMMENT.sub("", html))


def test_no_page_shows_a_raw_sphinx_role(site: Path) -> None:
    shown = {
        str(page.relative_to(site)): roles
        for page in sorted(site.rglob("*.html"))
        if (roles := _RAW_ROLE.findall(page_text(site, str(page.relative_to(site)))))
    }
    assert shown == {}


def test_the_api_reference_links_the_names_its_docstrings_mention(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    # Transport's docstring names its send_many method, which no signature mentions.
    target = "#notifymail.transport.base.Transport.send_many"
    assert re.search(f'<a class="autorefs autorefs-internal"[^>]* href="{target}"', html)


def test_no_code_block_shows_the_needs_smtp_test_marker(site: Path) -> None:
    assert "needs-smtp" in (site / "quickstart" / "index.html").read_text(encoding="utf-8")
    shown = [
        str(page.relative_to(site))
        for page in site.rglob("*.html")
        if "needs-smtp" in page_text(site, str(page.relative_to(site)))
    ]
    assert shown == []


def test_the_api_contents_never_repeat_a_heading(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    toc = _TOC.findall(html)[-1]  # Material renders it twice: the sidebar's is the last
    entries = [_TAG.sub("", entry).strip() for entry in _TOC_ENTRY.findall(toc)]

    assert {"Settings", "SmtpSettings", "Transports", "Errors"} <= set(entries)
    repeated = [
        (first, second)
        for first, second in itertools.pairwise(entries)
        if first.lower() == second.lower()
    ]
    assert repeated == []
