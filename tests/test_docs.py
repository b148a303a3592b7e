"""The docs tell the truth about the repository: the README is one screen and maps every page of docs/, every
relative link (and its #anchor) leads somewhere, and every repository path the docs name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lambdas import routes

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS, *sorted(REPO.glob("*/README.md")), *sorted(REPO.glob("molecule/*/README.md")),
         *sorted(REPO.glob("roles/*/README.md"))]  # fmt: skip
TOP = ("roles", "playbooks", "lambdas", "node_agent", "jobqueue", "devstack", "tlcli", "tests", "bench", "scripts",
       "molecule", "inventory", "docs", "postman", ".github", ".ci")  # fmt: skip
README_LINES = 60  # one screen
PAGE_LINES = 260


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def test_the_readme_is_one_screen_and_maps_every_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    assert linked == {p.name for p in DOCS}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_each_page_is_short_and_leads_back(page: Path) -> None:
    text = page.read_text()
    assert len(text.splitlines()) <= PAGE_LINES, f"{page.name}: split it"
    assert text.startswith("# ") and "](../README.md)" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_leads_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # a web address
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.relative_to(REPO)}: {link} leads nowhere"
        if anchor:
            assert anchor in anchors(path), f"{page.relative_to(REPO)}: no heading #{anchor} in {target or 'itself'}"


def exists(named: str, folder: Path) -> bool:
    """A path from the repository's root or the page's folder; ``module.function`` names the module."""
    module = re.sub(r"^([\w/]+)\.[a-z_]+$", r"\1.py", named)
    return any((base / n.rstrip("/")).exists() for base in (REPO, folder) for n in (named, module))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_named_exists(page: Path) -> None:
    named = set(re.findall(r"`([\w.-]+/[\w./-]*)`", page.read_text()))
    missing = sorted(n for n in named if n.split("/", 1)[0] in TOP and not exists(n, page.parent))
    assert not missing, f"{page.relative_to(REPO)} names paths that do not exist: {missing}"


def test_the_api_pages_route_table_is_the_route_table() -> None:
    text = (REPO / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `(GET|POST) ([^`?]+)[^`]*` \| (\w+) \| ([^|]+) \|", text, re.MULTILINE)
    documented = {(method, path, function, not auth.startswith("no")) for method, path, function, auth in rows}
    assert documented == {(r.method, r.path, r.function, r.auth) for r in routes.ROUTES}
