"""The test suite's own rules: a test module never imports another test module (shared code goes
to tests/support/), and every test lives in a tier folder, so that its marker selects it."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "interop", "chaos", "fuzz")


def imported_modules(path: Path) -> set[str]:
    """Dotted names of everything ``path`` imports (``from a import b`` gives ``a`` and
    ``a.b``: b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): sorted(name for name in imported_modules(path)
                                             if name.split(".")[-1].startswith("test_"))
        for path in TESTS.rglob("test_*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_every_test_module_is_in_a_tier_folder() -> None:
    outside = [str(path.relative_to(TESTS)) for path in TESTS.rglob("test_*.py")
               if path.relative_to(TESTS).parts[0] not in TIERS]
    assert outside == []
