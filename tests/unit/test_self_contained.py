"""The test suite and the bot never reach outside the repository for data (a clone must stand alone)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The `shared` directory beside the repository, written as a relative string path up one level or joined
# with Path's `/` (up-then-shared, or shared-then-a-child): the directory that only the
# developers' machines and CI have.
OUTSIDE = re.compile(r"""\.\./shared|["']\.\.["']\s*/\s*["']shared["']|["']shared["']\s*/""")


def _offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    return found


def test_pattern_catches_the_ways_it_was_written() -> None:
    # The samples are assembled so that this file itself names no such path.
    name, up = "shared", ".."
    assert OUTSIDE.search(f'SHARED = Path(__file__).resolve().parents[2] / "{up}" / "{name}"')
    assert OUTSIDE.search(f'p = "{up}/{name}/data/klines"')
    assert OUTSIDE.search(f'    / "{name}"') is None  # split over lines: see test_no_multiline_path_to_it
    assert OUTSIDE.search(f'X = ROOT / "{name}" / "data"')


def test_no_test_reads_the_directory_beside_the_repository() -> None:
    offenders = [o for o in _offenders(REPO / "tests")]
    assert offenders == [], "tests must use data/sample (the sample_dir fixture) or build their data"


def test_bot_code_never_reads_it() -> None:
    assert _offenders(REPO / "futures_actor") == []


def test_no_multiline_path_to_it() -> None:
    """The Path join up-then-shared split over two lines (ruff formats long paths that way)."""
    for root in (REPO / "tests", REPO / "futures_actor"):
        for path in sorted(root.rglob("*.py")):
            if path.name == "test_self_contained.py":
                continue
            lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
            for a, b in itertools.pairwise(lines):
                assert not (a == '/ ".."' and b.startswith('/ "shared"')), f"{path.relative_to(REPO)}"
