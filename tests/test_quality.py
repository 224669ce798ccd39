"""Project hygiene that CI enforces: the code is ruff-clean, type-checks under ``mypy --strict``
and keeps its layers (the import-linter contract in setup.cfg)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = _tool("ruff")
    result = subprocess.run(
        [
            ruff,
            "check",
            "mdb_sync",
            "flask_mdb",
            "tests",
            "examples",
            "benchmarks",
            "docs",
            "conftest.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is part of the test extra"
    return found


def test_mypy_strict_is_clean():
    """Both packages ship py.typed: their types are checked strictly (settings in setup.cfg)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "mdb_sync", "flask_mdb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_are_kept():
    """The layering contract ([importlinter] in setup.cfg): no module imports from a layer
    above its own (ignored imports are listed there, each with what removes it)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
