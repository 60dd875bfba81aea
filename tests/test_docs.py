"""README.md and docs/: the generated CLI reference is current, every relative link leads to a
file, README stays short and keeps its two commands."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
PENDING: set[Path] = set()  # pages linked ahead of their writing (none)

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def links(page: Path) -> list[str]:
    """The targets of a page's markdown links, code blocks and code spans left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_cli_reference_is_current():
    expected = gen_cli().render()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == expected, "docs/cli.md is stale: run `python docs/gen_cli.py`"


def test_cli_reference_has_every_command():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for command in ("campflow apply", "campflow run", "campflow db upgrade", "campflow targets add",
                    "campflow orders approve", "campflow approvals review", "campflow schedules sync"):
        assert f"## `{command}`" in text
    assert "- `--dry-run`: " in text


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_lead_to_files(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or a heading of the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() and path not in PENDING:
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_link_check_sees_links_and_skips_code():
    page = "see [a](a.md) and [b](b.md#x \"title\") `[c](c.md)`\n```\n[d](d.md)\n```\n"
    text = CODE_SPAN.sub("", FENCE.sub("", page))
    assert LINK.findall(text) == ["a.md", "b.md#x"]


def test_every_docs_page_is_reachable_from_readme():
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen or not page.exists():
            continue
        seen.add(page)
        for target in links(page):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
                path = (page.parent / target.split("#", 1)[0]).resolve()
                if path.suffix == ".md":
                    todo.append(path)
    assert sorted(p.name for p in DOCS.glob("*.md") if p not in seen) == []


def test_readme_is_short():
    size = len((ROOT / "README.md").read_text(encoding="utf-8"))
    assert size < 10_000, f"README.md has {size} characters; move sections to docs/"


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"^```sh\n(.*?)^```", readme, re.S | re.M).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert "## Configuration" in readme and "CAMPFLOW_DATABASE_URL" in readme
