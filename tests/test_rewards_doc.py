"""docs/rewards.md and the reward registry cannot drift: one table, one row per registered reward, and
the links between the docs resolve (a renamed or deleted doc fails here, not in a reader's browser)."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mmgrpo.components import REWARDS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "rewards.md"
COLUMNS = ["name", "what it measures", "checkpoint", "license (upstream)", "range", "typical memory"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def reward_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table whose first header cell is `name`, as rows of cells (header and rule dropped)."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and cells(line)[0] == "name" and (i == 0 or not lines[i - 1].startswith("|")):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            tables.append([cells(line)] + rows)
    return tables


def row_name(row: list[str]) -> str:
    m = re.fullmatch(r"`([a-z0-9_]+)`", row[0])
    assert m, f"docs/rewards.md: first cell {row[0]!r} should be one registry name in backticks"
    return m.group(1)


def shipped_rewards() -> set[str]:
    """REWARDS.names() less rewards that another installed package registers (a plugin documents itself)."""
    foreign = {ep.name for ep in entry_points(group=REWARDS.group)
               if ep.dist is not None and ep.dist.name.lower() != "mmgrpo"}
    return set(REWARDS.names()) - foreign


def test_parser_reads_only_the_first_cell_of_the_name_table():
    text = "| name | what |\n|---|---|\n| `a` | uses `b` |\n| `c` | x |\n\n| flag | default |\n|---|---|\n| `d` | 1 |\n"
    (table,) = reward_tables(text)
    assert [row_name(r) for r in table[1:]] == ["a", "c"]


def test_one_table_with_a_row_for_every_registered_reward_and_no_other():
    tables = reward_tables(DOC.read_text())
    assert len(tables) == 1, f"docs/rewards.md should hold ONE reward table, found {len(tables)}"
    header, *rows = tables[0]
    assert header == COLUMNS
    for row in rows:
        assert len(row) == len(COLUMNS) and all(row), f"docs/rewards.md row {row[0]}: {len(row)} cells, some empty"
    names = [row_name(r) for r in rows]
    assert len(names) == len(set(names)), f"rows named twice: {sorted({n for n in names if names.count(n) > 1})}"
    registered = shipped_rewards()
    missing, unknown = sorted(registered - set(names)), sorted(set(names) - set(REWARDS.names()))
    assert not missing, f"registered rewards without a row in docs/rewards.md: {missing}"
    assert not unknown, f"docs/rewards.md rows that name no registered reward: {unknown}"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # '# comments' in code blocks are no headings
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, frag = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif frag and dest.suffix == ".md" and frag not in headings(dest):
            broken.append(f"{target} (no heading #{frag} in {dest.name})")
    assert not broken, f"{path.name}: broken links: {broken}"
