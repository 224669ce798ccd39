"""Registration costs the same whatever the size of the registry: every query it sends to
the registry is answered from an index (checked with the server's ``explain``), and the
commands it sends do not depend on how many apps exist. Times are measured in
``benchmarks/registration.py``, never asserted here.
"""

from __future__ import annotations

from typing import Any

import pytest

from mdb_sync.exceptions import AppConflictError
from mdb_sync.registry_claims import LOCKS_COLLECTION
from mdb_sync.scoping.names import APPS_COLLECTION

REGISTRY = (APPS_COLLECTION, LOCKS_COLLECTION)
FIND_OPTIONS = ("filter", "projection", "limit", "sort", "hint", "skip")


def _stages(plan: Any) -> list[str]:
    if isinstance(plan, dict):
        found = [plan["stage"]] if "stage" in plan else []
        for value in plan.values():
            found += _stages(value)
        return found
    if isinstance(plan, list):
        return [stage for item in plan for stage in _stages(item)]
    return []


def _registry_commands(recorder) -> list[dict[str, Any]]:
    return [
        c
        for c in recorder.commands("find", "update", "delete", "insert", "findAndModify", "count")
        if next(iter(c.values())) in REGISTRY
    ]


def _register_round(engine, unknown: str = "nobody") -> None:
    """A new app, its unchanged re-registration, two refused overlaps, look-ups."""
    engine.register_app({"slug": "fresh"})
    engine.register_app({"slug": "fresh"})
    with pytest.raises(AppConflictError):
        engine.register_app({"slug": "fresh_sub"})
    with pytest.raises(AppConflictError):
        engine.register_app({"slug": "tenant007_x"})
    assert engine.registry.get_record(unknown) is None
    engine.get_scoped_db("fresh")


def test_every_registry_query_of_a_registration_uses_an_index(engine, raw_db, recorder):
    for i in range(300):
        engine.register_app({"slug": f"tenant{i:03d}"})
    recorder.clear()
    _register_round(engine)
    commands = _registry_commands(recorder)
    finds = [c for c in commands if "find" in c]
    assert len(finds) >= 8
    assert {c["find"] for c in finds} == set(REGISTRY)
    for command in finds:
        body = {"find": command["find"], **{k: command[k] for k in FIND_OPTIONS if k in command}}
        explained = raw_db.command("explain", body, verbosity="executionStats")
        assert explained["executionStats"]["totalDocsExamined"] <= 11, body
        if command["find"] == LOCKS_COLLECTION:
            # Only registrations in flight have a lock document (none now): by _id anyway.
            assert isinstance(command["filter"]["_id"], str)
            continue
        stages = _stages(explained["queryPlanner"]["winningPlan"])
        assert "COLLSCAN" not in stages, (body, stages)
        assert any("IXSCAN" in s or s in ("IDHACK", "EXPRESS") for s in stages), (body, stages)
    # Writes address one record by _id (the server's write explain is not informative on
    # every server, so the filter is checked instead).
    for command in commands:
        for statement in command.get("updates", []) + command.get("deletes", []):
            assert isinstance(statement["q"].get("_id"), str), command


def test_a_registration_sends_the_same_commands_with_10_or_300_apps(engine, recorder):
    def commands_of_a_round(unknown: str) -> list[str]:
        recorder.clear()
        _register_round(engine, unknown)
        names = [next(iter(c)) for c in _registry_commands(recorder)]
        engine.unregister_app("fresh")
        return names

    for i in range(10):
        engine.register_app({"slug": f"tenant{i:03d}"})
    small = commands_of_a_round("nobody1")
    for i in range(10, 300):
        engine.register_app({"slug": f"tenant{i:03d}"})
    assert commands_of_a_round("nobody2") == small
