"""Fixtures of the attack tests."""

from __future__ import annotations

import pytest
from flask_apps import AppFactory


@pytest.fixture
def factory(mongo_uri, db_name):
    """Flask apps with ``MDB`` on the test database (each closed at the end)."""
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()
