"""docs/compat.md stays true to the tree: every test it names exists, and every "docs/compat.md
§N" reference anywhere in the repository names one of its sections."""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPAT = REPO / "docs" / "compat.md"
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)`")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)
# A "§N" of a file that names docs/compat.md, unless it is a DICOM standard section (PS3.8 §9.3).
SECTION = re.compile(r"(?<!PS3\.\d )(?<!PS3\.\d\d )§(\d+(?:\.\d+)?)")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".8", ".5", ".1", ".txt", ".cfg"}


def repository_texts() -> Iterator[tuple[Path, str]]:
    """The repository's own text files (no virtualenvs, caches or build output)."""
    for directory, subdirectories, files in os.walk(REPO):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")
                             and d not in ("build", "__pycache__") and not d.endswith(".egg-info")]
        for name in files:
            path = Path(directory, name)
            if path.suffix in TEXT_SUFFIXES:
                yield path.relative_to(REPO), path.read_text(errors="replace")


@functools.cache
def defined_tests(path: Path) -> frozenset[str]:
    """``name`` and ``Class::name`` of every test function in a test module."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef) and item.name.startswith("test"))
    return frozenset(names)


def test_every_test_the_spec_names_exists() -> None:
    references = TEST_REFERENCE.findall(COMPAT.read_text())
    assert len(references) > 100, "the pattern no longer finds the references"
    missing = [f"{path}::{name}" for path, name in references
               if not (REPO / path).is_file() or name not in defined_tests(REPO / path)]
    assert missing == []


def test_every_section_reference_resolves() -> None:
    sections = set(HEADING.findall(COMPAT.read_text()))
    assert {"1", "4.6", "12.14"} <= sections
    unresolved = [f"{name}: §{number}" for name, text in repository_texts()
                  if "compat.md" in text
                  for number in SECTION.findall(text) if number not in sections]
    assert unresolved == []


def test_nothing_points_outside_the_repository() -> None:
    """The spec once lived in a file beside the repository; nothing may lead there."""
    outside = re.compile("|".join(("COMPAT" + r"\.md", "COMPAT" + " §", r"\.\./" + "shared")))
    assert [name for name, text in repository_texts() if outside.search(text)] == []
