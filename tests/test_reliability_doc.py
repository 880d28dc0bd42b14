"""docs/reliability.md cannot rot: every test it cites exists, and every bad-input test is cited."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
CITATION = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _test_functions_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def citations() -> set[tuple[str, str]]:
    return set(CITATION.findall(DOC.read_text()))


def test_every_test_the_reliability_doc_cites_exists() -> None:
    cited = citations()
    assert cited, "docs/reliability.md cites no tests"
    missing = sorted(
        f"{path}::{name}"
        for path, name in cited
        if not (ROOT / path).is_file() or name not in _test_functions_of(ROOT / path)
    )
    assert missing == []


def test_every_bad_input_and_chaos_test_is_cited_in_the_reliability_doc() -> None:
    cited = citations()
    files = [
        ROOT / "tests" / "test_bad_input.py",
        ROOT / "tests" / "test_hostile_rows.py",
        ROOT / "tests" / "contract" / "test_hostile_rows.py",
        *sorted((ROOT / "tests" / "chaos").glob("test_*.py")),
    ]
    uncited = sorted(
        f"{path.relative_to(ROOT)}::{name}"
        for path in files
        for name in _test_functions_of(path)
        if (str(path.relative_to(ROOT)), name) not in cited
    )
    assert uncited == []
