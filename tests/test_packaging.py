"""What a user gets with the package besides the code: the license, the project links,
and a README that starts with the commands to run."""

from __future__ import annotations

from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_is_the_full_mit_text_with_a_copyright_line() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")

    assert text.startswith("MIT License\n\nCopyright (c) 2026 the notifymail developers\n")
    assert "Permission is hereby granted, free of charge, to any person" in text
    assert "The above copyright notice and this permission notice shall be included" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_the_distribution_ships_the_license_and_links_the_project_pages() -> None:
    info = metadata("notifymail")
    urls = dict(entry.split(", ", 1) for entry in info.get_all("Project-URL") or [])

    assert info.get_all("License-File") == ["LICENSE"]
    assert sorted(urls) == ["Changelog", "Documentation", "Homepage", "Issues"]
    assert all(url.startswith("https://") for url in urls.values()), urls


def test_the_readme_opens_with_the_install_and_test_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()

    assert lines[:6] == [
        "# notifymail",
        "",
        "```sh",
        "python -m pip install . && notifymail send-test --to you@example.com",
        "python -m pip install -e '.[test]' && python -m pytest",
        "```",
    ]


def test_the_readme_says_how_to_build_and_serve_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert "python -m pip install -e '.[docs]'" in readme
    assert "\nmkdocs serve" in readme
    assert "\nmkdocs build --strict" in readme
