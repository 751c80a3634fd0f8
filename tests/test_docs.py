"""Every ```python block in the docs and the README runs, so no example rots.

The runner, in full:

- Each page's ``python`` blocks run in order in one namespace (a module of its own), so
  a page can build on its earlier blocks. A traceback names the page and its line.
- A block right after a ``<!-- needs-smtp -->`` line runs with ``MB_EMAIL_SMTP_HOST``,
  ``MB_EMAIL_SMTP_PORT`` and ``MB_EMAIL_FROM_ADDRESS`` pointing at a local aiosmtpd
  server, and must deliver at least one message to it: it is run for real, never
  skipped. The marker is an HTML comment, so the reader does not see it (a fence title
  would show as a caption).
- Blocks titled as pytest files (``conftest.py``, ``test_*.py``) are written to a
  temporary directory, joined by title, and run by pytest; every test must pass.
- Blocks in other languages (``text``, ``sh``, ...) are not run. A fence without a
  language, or one that spells Python another way (``py``, ``pycon``), is refused, so
  no example escapes the runner.
- Every page runs with no ``MB_*`` variable set but its own.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import notifymail
from smtp_servers import SmtpServer, start_smtp_server

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NEEDS_SMTP = "<!-- needs-smtp -->"
PYTEST_FILE = re.compile(r"(conftest|test_\w+)\.py")
NOT_RUN = frozenset({"text", "sh", "console", "toml", "yaml", "ini", "json", "http"})

_FENCE = re.compile(r"(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]*)"')
_TEST_FUNCTION = re.compile(r"^def test_", re.MULTILINE)
_SPHINX_ROLE = re.compile(r":(?:py:)?[a-z]+:`[^`]*`")


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int  # the line of the first line of code, 1-based
    language: str
    title: str
    source: str
    needs_smtp: bool  # marked by a NEEDS_SMTP line right before the fence


def pages() -> list[Path]:
    found = sorted(DOCS.glob("*.md"))
    readme = ROOT / "README.md"
    return [*found, readme] if readme.exists() else found


def code_blocks(path: Path) -> list[CodeBlock]:
    """The fenced code blocks of a Markdown page, indented ones (in lists, admonitions)
    included, each dedented."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.fullmatch(lines[index])
        index += 1
        if opening is None:
            continue
        fence = opening["fence"]
        info = opening["info"].strip()
        start = index
        while index < len(lines):
            closing = _FENCE.fullmatch(lines[index])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            index += 1
        else:
            raise AssertionError(f"{path.name}:{start}: unclosed code fence")
        title = _TITLE.search(info)
        if title and title["title"] == "needs-smtp":
            raise AssertionError(
                f"{path.name}:{start}: mark a block for the SMTP server with a {NEEDS_SMTP} "
                "line before its fence; a title shows as a caption"
            )
        blocks.append(
            CodeBlock(
                path=path,
                line=start + 1,
                language=info.split()[0] if info else "",
                title=title["title"] if title else "",
                source=textwrap.dedent("\n".join(lines[start:index])) + "\n",
                needs_smtp=start >= 2 and lines[start - 2].strip() == NEEDS_SMTP,
            )
        )
        index += 1
    return blocks


def python_pages() -> list[Path]:
    return [
        path for path in pages() if any(block.language == "python" for block in code_blocks(path))
    ]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("MB_"):
            monkeypatch.delenv(name)
    return monkeypatch


def run_block(block: CodeBlock, namespace: dict[str, object]) -> None:
    # Blank lines in front, so a traceback's line number is the page's.
    code = compile("\n" * (block.line - 1) + block.source, str(block.path), "exec")
    exec(code, namespace)  # noqa: S102 - running the docs' own examples is the point


@pytest.fixture
def page_module() -> Iterator[types.ModuleType]:
    """A module for a page's namespace, registered while it runs (dataclasses need it).

    Every name notifymail exports is imported first: ``pytester`` takes the modules
    imported during a test out of ``sys.modules`` again, and a module a page imported
    first would then be imported twice, its classes no longer those ``notifymail`` holds.
    """
    for name in notifymail.__all__:
        getattr(notifymail, name)
    module = types.ModuleType("notifymail_docs_page")
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


@pytest.fixture
def page_server() -> Iterator[list[SmtpServer]]:
    """The page's local SMTP server, started by its first ``needs-smtp`` block."""
    servers: list[SmtpServer] = []
    yield servers
    for server in servers:
        server.stop()


def run_against_local_server(
    block: CodeBlock,
    namespace: dict[str, object],
    servers: list[SmtpServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run ``block`` with the ``MB_*`` variables set for the page's server, and check
    that it delivered something there."""
    if not servers:
        servers.append(start_smtp_server())
    [server] = servers
    received = len(server.handler.messages)
    with monkeypatch.context() as patch:
        patch.setenv("MB_EMAIL_SMTP_HOST", "127.0.0.1")
        patch.setenv("MB_EMAIL_SMTP_PORT", str(server.port))
        patch.setenv("MB_EMAIL_FROM_ADDRESS", "notifications@example.com")
        run_block(block, namespace)
    assert len(server.handler.messages) > received, (
        f"{block.path.name}:{block.line}: a needs-smtp block sent nothing"
    )


def run_pytest_files(blocks: list[CodeBlock], pytester: pytest.Pytester) -> None:
    files: dict[str, list[str]] = {}
    for block in blocks:
        files.setdefault(block.title, []).append(block.source)
    for name, sources in files.items():
        pytester.path.joinpath(name).write_text("\n\n".join(sources), encoding="utf-8")
    tests = sum(
        len(_TEST_FUNCTION.findall(source)) for sources in files.values() for source in sources
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=tests)


@pytest.mark.parametrize("page", python_pages(), ids=lambda path: path.name)
def test_page_examples_run(
    page: Path,
    clean_environment: pytest.MonkeyPatch,
    page_module: types.ModuleType,
    page_server: list[SmtpServer],
    pytester: pytest.Pytester,
) -> None:
    namespace = page_module.__dict__
    pytest_files = []
    for block in code_blocks(page):
        if block.language != "python":
            continue
        if PYTEST_FILE.fullmatch(block.title):
            pytest_files.append(block)
        elif block.needs_smtp:
            run_against_local_server(block, namespace, page_server, clean_environment)
        else:
            run_block(block, namespace)
    if pytest_files:
        run_pytest_files(pytest_files, pytester)


def test_every_fence_names_a_language_the_runner_knows() -> None:
    unknown = [
        f"{block.path.name}:{block.line - 1}: {block.language or '(no language)'}"
        for path in pages()
        for block in code_blocks(path)
        if block.language != "python" and block.language not in NOT_RUN
    ]
    assert unknown == []


def test_the_docs_have_python_examples_to_run() -> None:
    names = {path.name for path in python_pages()}
    assert {"quickstart.md", "testing.md", "custom-transport.md", "policy.md"} <= names


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert sorted(nav) == sorted(path.name for path in DOCS.glob("*.md"))


def test_a_failing_block_names_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n- a list item:\n\n    ```python\n    x = 1\n    y = x / 0\n    ```\n"
    )
    [block] = code_blocks(page)
    assert (block.line, block.language, block.source) == (6, "python", "x = 1\ny = x / 0\n")
    with pytest.raises(ZeroDivisionError) as raised:
        run_block(block, {})
    frame = raised.traceback[-1]
    assert (Path(frame.path), frame.lineno + 1) == (page, 7)


def test_a_comment_marks_blocks_for_a_server_and_a_title_for_pytest(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        f"{NEEDS_SMTP}\n```python\nsend()\n```\n\n"
        '```python title="test_alerts.py"\ndef test_x(): pass\n```\n\n'
        "```python\nnot_for_the_server()\n```\n\n"
        "```text\nnot run\n```\n"
    )
    marks = [(block.language, block.title, block.needs_smtp) for block in code_blocks(page)]
    assert marks == [
        ("python", "", True),
        ("python", "test_alerts.py", False),
        ("python", "", False),
        ("text", "", False),
    ]


def test_a_needs_smtp_title_is_refused_since_it_shows_as_a_caption(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('```python title="needs-smtp"\nsend()\n```\n')
    with pytest.raises(AssertionError, match="needs-smtp -->"):
        code_blocks(page)


def test_no_docstring_uses_a_sphinx_role() -> None:
    """mkdocstrings shows a Sphinx role (``:class:`Mailer```) as it is written; the API
    reference needs its cross-references (``[`Mailer`][notifymail.Mailer]``) or code."""
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {role}"
        for path in sorted((ROOT / "src" / "notifymail").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for role in _SPHINX_ROLE.findall(node.value.value)
    ]
    assert found == []
