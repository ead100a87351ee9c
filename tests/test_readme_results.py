"""Every number in the results tables of the README and the documentation pages is the number in
the results file its section links to (a suite's output under ``benchmarks/results/``).

A section (from one heading to the next) names its results files by links; each table row's
first cell names a model in backticks (its leaderboard label); every decimal in the row (a
percentage, derived from the others, aside) must appear on a line of a linked file that names
the same model. Rows without a model label (published numbers, per-pattern tables) must find
their decimals somewhere in the linked files."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?:\.\./)?(?:benchmarks/)?results/([\w./-]+\.md)\)")
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?: ± \d+\.\d+)?(?! ?%)")
SEPARATOR = re.compile(r"^\|[-:| ]+\|$")


def result_tables(page: Path):
    """(heading, linked files, rows) of each section of ``page`` that links a results file and has a table."""
    for section in re.split(r"(?m)^(?=#{1,4} )", page.read_text()):
        files = sorted(set(LINK.findall(section)))
        rows = [line for line in section.splitlines() if line.startswith("|") and not SEPARATOR.match(line)]
        if files and rows:
            yield section.splitlines()[0], files, rows[1:]  # rows[0]: the header


def mismatches(page: Path) -> list[str]:
    bad = []
    for heading, files, rows in result_tables(page):
        lines = [line for f in files for line in (RESULTS / f).read_text().splitlines()]
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            label = re.search(r"`([^`]+)`", cells[0])
            where = [line for line in lines if f"`{label.group(1)}`" in line] if label else lines
            for number in DECIMAL.findall(" | ".join(cells[1:])):
                if not any(number in line for line in where):
                    bad.append(f"{page.name} / {heading}: {cells[0]!r} shows {number}, not in {files}")
    return bad


def test_the_pages_have_results_tables_to_check():
    assert sum(len(rows) for page in PAGES for _, _, rows in result_tables(page)) >= 50


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_number_in_a_results_table_is_the_results_files(page):
    assert mismatches(page) == []


def test_a_number_that_differs_from_its_results_file_is_caught(tmp_path):
    page = tmp_path / "page.md"
    readme = (ROOT / "README.md").read_text()
    assert "| **12.49 ± 1.98** |" in readme
    page.write_text(readme.replace("| **12.49 ± 1.98** |", "| **12.39 ± 1.98** |"))
    assert len(mismatches(page)) == 1
