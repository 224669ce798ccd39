"""Deprecated public names keep working and say so (DeprecationWarning naming the new way)."""

from __future__ import annotations

import warnings

import pytest

from mdb_sync import exceptions


@pytest.mark.parametrize("name", ["IndexConflictError", "IndexNotSupportedError"])
def test_never_raised_index_errors_are_deprecated_but_importable(name):
    with pytest.warns(DeprecationWarning, match=f"{name} is deprecated and never raised"):
        cls = getattr(exceptions, name)
    assert cls.__name__ == name
    assert issubclass(cls, exceptions.IndexError_)
    assert name not in exceptions.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for live in exceptions.__all__:  # what `import *` reads: no warning
            getattr(exceptions, live)
    with pytest.raises(AttributeError):
        exceptions.NoSuchError  # noqa: B018


# --- one name for the app parameter: ``slug`` (old keywords warn) -------------------------------


def test_old_app_keywords_still_work_and_warn(engine):
    engine.register_app({"slug": "named"})
    with pytest.warns(DeprecationWarning, match=r"get_scoped_db\(\): the keyword app_slug= is"):
        db = engine.get_scoped_db(app_slug="named")
    assert db is engine.get_scoped_db(slug="named") is engine.get_scoped_db("named")
    with pytest.warns(DeprecationWarning, match="the keyword app= is deprecated; use slug="):
        engine.record_operation("report.build", 5.0, app="named")
    with (
        pytest.warns(DeprecationWarning, match="app="),
        engine.metrics.timed("report.build", app="named"),
    ):
        pass
    ops = engine.get_metrics()["apps"]["named"]["operations"]["report.build"]
    assert ops["count"] == 2
    with pytest.raises(TypeError, match="got both slug= and its old spelling app_slug="):
        engine.get_scoped_db(slug="named", app_slug="named")


def test_classmethods_keep_their_alias():
    from mdb_sync.ai.config import EmbeddingConfig, LLMConfig

    with (
        pytest.warns(DeprecationWarning, match="from_manifest"),
        pytest.raises(exceptions.ConfigurationError, match="of app 'x'"),
    ):
        LLMConfig.from_manifest({"temperature": 9}, app="x", environ={})
    with pytest.warns(DeprecationWarning):
        assert EmbeddingConfig.from_manifest({}, app="x") == EmbeddingConfig()


def test_public_signatures_say_slug():
    import inspect

    from flask_mdb.websockets import broadcast_to_app, get_websocket_manager
    from mdb_sync import MongoDBEngine
    from mdb_sync.realtime import EventBus
    from mdb_sync.scoping import ScopedDatabase

    for func in (
        MongoDBEngine.get_scoped_db,
        MongoDBEngine.record_operation,
        ScopedDatabase.__init__,
        EventBus.publish,
        EventBus.subscribe,
        broadcast_to_app,
        get_websocket_manager,
    ):
        params = inspect.signature(func).parameters
        assert "slug" in params and "app_slug" not in params, func
        if func in (broadcast_to_app, get_websocket_manager):
            assert "app" in params  # in flask_mdb, app is the Flask application


def test_the_library_itself_never_uses_the_old_spellings(engine):
    # Every internal call was moved to slug=: a whole app's life raises no DeprecationWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        engine.register_app({"slug": "clean", "managed_indexes": {"items": [{"keys": {"n": 1}}]}})
        db = engine.get_scoped_db("clean")
        db.items.insert_one({"n": 1})
        assert db.items.find_one({"n": 1})["n"] == 1
        engine.events.publish("clean", {"hello": 1})
        engine.record_operation("x", 1.0)
        engine.get_metrics()
        engine.get_health_status(timeout=5)
