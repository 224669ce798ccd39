"""Runs the examples of every page of the documentation (``sybil_support``); the servers
they use are stopped by the repository's root ``conftest.py`` when the session ends."""

from pathlib import Path

from sybil_support import make_sybil

pytest_collect_file = make_sybil(
    path=str(Path(__file__).resolve().parent), patterns=["*.rst"], excludes=["_build/*"]
).pytest()
