"""The front page stays a front page: the README opens with the two commands (install and
run the demo; run the tests) and stays short, and everything longer lives in the
documentation site, whose every page is in its navigation (CI builds it with --strict)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200


def test_the_readme_is_short_and_opens_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    commands = [line for line in lines[:8] if line.startswith("bash deploy/install.sh")]
    assert [c.split("#")[0].split("&&")[-1].strip() for c in commands] == [
        ".venv/bin/facegallery demo",
        ".venv/bin/python -m pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/facegallery demo" in ci and ".venv/bin/python -m pytest" in ci


def _nav_pages(nav: list[object]) -> set[str]:
    pages: set[str] = set()
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages |= _nav_pages(value) if isinstance(value, list) else {str(value)}
    return pages


def test_every_page_of_the_site_is_in_its_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = ROOT / config["docs_dir"]
    pages = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    assert pages == _nav_pages(config["nav"])
