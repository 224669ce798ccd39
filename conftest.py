"""Runs the examples of README.rst like those of the documentation (``docs/sybil_support.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "docs"))

from sybil_support import make_sybil, stop_servers

pytest_collect_file = make_sybil(
    path=str(Path(__file__).resolve().parent), patterns=["README.rst"], excludes=["*/README.rst"]
).pytest()


def pytest_sessionfinish(session, exitstatus):
    stop_servers()
