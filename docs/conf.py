"""Sphinx configuration of the mdb-sync documentation.

Built with warnings as errors by ``tests/test_docs.py`` (``sphinx-build -W -b html docs
<dir>``); the examples of every page are run by ``docs/conftest.py`` (Sybil).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))

import mdb_sync  # noqa: E402

project = "mdb-sync"
author = "the mdb-sync authors"
copyright = "the mdb-sync authors"
release = mdb_sync.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx_click",
    "manifest_reference",
]
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
exclude_patterns = ["_build", "examples/**/README*", ".pytest_cache"]
nitpicky = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
default_role = "code"
highlight_language = "python"
pygments_style = "sphinx"

try:
    import furo  # noqa: F401
except ImportError:  # pragma: no cover - the docs extra brings it
    html_theme = "alabaster"
else:
    html_theme = "furo"
html_title = f"mdb-sync {release}"
html_static_path: list[str] = []
