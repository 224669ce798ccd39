"""The examples are what users copy: they use the public API only — no ``obj._private``
attribute of the library's objects (``db._get_current_object()``, ``mdb._engine_pid``...)."""

from __future__ import annotations

import ast
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue  # the example's own classes
        found.append(f"{path.relative_to(EXAMPLES)}:{node.lineno}: .{name}")
    return found


def test_examples_use_no_private_attributes():
    files = sorted(EXAMPLES.rglob("*.py"))
    assert len(files) >= 5
    offenders = [use for path in files for use in _private_uses(path)]
    assert offenders == []
