"""README.md's and docs/*.md's links to files of this repository reach a file that is in it,
and a ``#anchor`` reaches a heading of that page: the README once linked an architecture page
kept outside the repository, which a new user's first click found missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def prose(text: str) -> str:
    """The page without its fenced code blocks, whose brackets are code, not links."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(page.read_text()).splitlines()
            if line.startswith("#")}


def test_the_slugs_are_githubs() -> None:
    assert slug(" GGUF files") == "gguf-files"
    assert slug("Browser sessions") == "browser-sessions"
    assert slug("Serve a language model with an OpenAI-compatible API") == \
        "serve-a-language-model-with-an-openai-compatible-api"
    assert slug("Data, training, evaluation: one loop") == "data-training-evaluation-one-loop"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_local_link_reaches_a_file_and_heading_of_the_repository(page: Path) -> None:
    broken = []
    for link in LINK.finditer(prose(page.read_text())):
        target = link["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.is_relative_to(ROOT) or not destination.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_links_the_projects_own_architecture_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/architecture.md)" in readme
    assert "shared/docs" not in readme and "ARCHITECTURE.md" not in readme
