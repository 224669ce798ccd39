"""The MDB extension object: init_app, config validation, factories, several apps, engines."""

from __future__ import annotations

import os

import pytest
from flask import Flask
from flask_apps import AppFactory, write_manifest

from flask_mdb import MDB, db
from mdb_sync import ConfigurationError, ManifestValidationError, MongoDBEngine, QueryLimits


@pytest.fixture
def factory(mongo_uri, db_name, recorder):
    made = AppFactory(mongo_uri, db_name, recorder)
    yield made
    made.close()


def _add_task_routes(app: Flask) -> None:
    @app.post("/tasks")
    def add():
        db.tasks.insert_one({"title": "t"})
        return {"count": db.tasks.count_documents({})}

    @app.get("/tasks")
    def count():
        return {"count": db.tasks.count_documents({}), "app": db.name}


def test_init_app_sets_every_default_and_keeps_state_in_extensions(factory):
    app = factory()
    state = app.extensions["mdb"]
    assert app.config["MDB_AUTO_INDEX"] is True
    assert app.config["MDB_APP_SLUG"] is None
    assert app.config["MDB_HEALTH_URL"] is None
    assert app.config["MDB_JSON_PROVIDER"] is False
    assert state.engine.db_name == factory.db_name
    assert state.owns_engine


def test_registering_twice_raises(factory):
    mdb = MDB()
    app = factory(mdb)
    with pytest.raises(RuntimeError, match="already registered"):
        mdb.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        MDB().init_app(app)


def test_accessors_before_init_app_say_so():
    mdb = MDB()
    app = Flask("bare")
    with app.app_context(), pytest.raises(RuntimeError, match=r"forget to call mdb\.init_app"):
        _ = mdb.engine
    with pytest.raises(RuntimeError, match=r"forget to call mdb\.init_app"):
        mdb.get_engine(app)


def test_init_app_does_no_database_io(factory, recorder, tmp_path):
    app = factory(MDB_MANIFESTS=str(write_manifest(tmp_path, "lazy")))
    engine = app.extensions["mdb"].engine
    assert not engine.is_initialized
    assert recorder.commands() == []
    _add_task_routes(app)
    assert app.test_client().post("/tasks").json == {"count": 1}
    assert engine.is_initialized
    assert recorder.commands("insert")


def test_factory_pattern_one_extension_serves_several_apps(factory):
    mdb = MDB()

    def create_app(slug: str) -> Flask:
        app = factory(mdb, name=slug, MDB_APP_SLUG=slug)
        _add_task_routes(app)
        return app

    first, second = create_app("first"), create_app("second")
    assert first.extensions["mdb"] is not second.extensions["mdb"]
    assert first.extensions["mdb"].engine is not second.extensions["mdb"].engine
    first.test_client().post("/tasks")
    first.test_client().post("/tasks")
    second.test_client().post("/tasks")
    assert first.test_client().get("/tasks").json == {"count": 2, "app": "first"}
    assert second.test_client().get("/tasks").json == {"count": 1, "app": "second"}
    with first.app_context():
        assert mdb.engine is first.extensions["mdb"].engine
    assert mdb.get_engine(second) is second.extensions["mdb"].engine


def test_two_apps_on_different_databases_in_one_process(factory, raw_client, db_name):
    other_db = f"{db_name}_other"
    try:
        one = factory(name="one", MDB_APP_SLUG="shop")
        two = factory(name="two", MDB_APP_SLUG="shop", MDB_DB_NAME=other_db)
        _add_task_routes(one)
        _add_task_routes(two)
        one.test_client().post("/tasks")
        assert two.test_client().get("/tasks").json["count"] == 0
        assert raw_client[db_name]["shop_tasks"].count_documents({}) == 1
        assert raw_client[other_db]["shop_tasks"].count_documents({}) == 0
    finally:
        factory.close()
        raw_client.drop_database(other_db)


def test_a_shared_engine_serves_every_app(factory, mongo_uri, db_name):
    engine = MongoDBEngine(mongo_uri, db_name)
    try:
        mdb = MDB(engine=engine)
        apps = []
        for slug in ("left", "right"):
            app = Flask(slug)
            app.config["MDB_APP_SLUG"] = slug
            mdb.init_app(app)
            _add_task_routes(app)
            apps.append(app)
        assert not engine.is_initialized  # initialized lazily, by the first request
        apps[0].test_client().post("/tasks")
        assert engine.is_initialized
        assert apps[1].test_client().get("/tasks").json == {"count": 0, "app": "right"}
        assert all(not a.extensions["mdb"].owns_engine for a in apps)
        mdb.shutdown(apps[0])
        assert engine.is_initialized  # a shared engine belongs to its owner
    finally:
        engine.shutdown()


def test_a_shared_engine_refuses_engine_config(mongo_uri, db_name):
    app = Flask("conflict")
    app.config["MDB_MONGO_URI"] = mongo_uri
    with pytest.raises(ConfigurationError, match=r"MDB_MONGO_URI.*given one"):
        MDB(app, engine=MongoDBEngine(mongo_uri, db_name))
    assert "mdb" not in app.extensions


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("MDB_APP_SLUG", "Not A Slug", "MDB_APP_SLUG is invalid"),
        ("MDB_APP_SLUG", "system", "MDB_APP_SLUG is invalid.*reserved"),
        ("MDB_AUTO_INDEX", "yes", "MDB_AUTO_INDEX must be True or False"),
        ("MDB_CORS", 1, "MDB_CORS must be True or False"),
        ("MDB_HEALTH_URL", "health", "MDB_HEALTH_URL must be a URL path"),
        ("MDB_METRICS_URL", "//evil.example/x", "MDB_METRICS_URL must be a URL path"),
        ("MDB_QUERY_LIMITS", {"max_result_docs": 0}, "MDB_QUERY_LIMITS is invalid"),
        ("MDB_QUERY_LIMITS", {"max_rows": 5}, "MDB_QUERY_LIMITS is invalid.*max_rows"),
        ("MDB_QUERY_LIMITS", [1], "MDB_QUERY_LIMITS must be a dict"),
        ("MDB_APP_RESOLVER", 42, "MDB_APP_RESOLVER must be a callable"),
        ("MDB_APP_RESOLVER", "no_such_module_xyz:fn", "MDB_APP_RESOLVER names nothing"),
        ("MDB_MANIFESTS", "/no/such/manifest.json", "MDB_MANIFESTS names '/no/such"),
        ("MDB_MANIFESTS", 42, "MDB_MANIFESTS must be a path"),
        ("MDB_CLIENT_OPTIONS", "maxPoolSize=5", "MDB_CLIENT_OPTIONS must be a dict"),
        ("MDB_MONGO_URI", 27017, "MDB_MONGO_URI must be a string"),
    ],
)
def test_bad_config_fails_in_init_app_naming_the_key(mongo_uri, key, value, match):
    app = Flask("bad")
    app.config.update({"MDB_MONGO_URI": mongo_uri, key: value})
    with pytest.raises(ValueError, match=match) as info:
        MDB(app)
    assert isinstance(info.value, ConfigurationError)
    assert info.value.context["option"] == key
    assert "mdb" not in app.extensions


def test_good_config_values_are_parsed(factory, tmp_path):
    app = factory(
        MDB_QUERY_LIMITS={"max_result_docs": 50},
        MDB_APP_RESOLVER="flask_apps:path_prefix_resolver",
        MDB_CLIENT_OPTIONS={"maxPoolSize": 7},
    )
    state = app.extensions["mdb"]
    assert state.engine.limits == QueryLimits(max_result_docs=50)
    assert state.config["MDB_APP_RESOLVER"].__name__ == "path_prefix_resolver"


def test_an_unknown_mdb_key_warns_with_a_suggestion(factory):
    with pytest.warns(RuntimeWarning, match="MDB_HEALTHURL; did you mean MDB_HEALTH_URL"):
        factory(MDB_HEALTHURL="/health")


def test_manifests_load_at_init_and_register_on_first_request(factory, tmp_path, recorder):
    index = {"type": "regular", "keys": {"n": 1}, "name": "n_idx"}
    write_manifest(tmp_path, "alpha", managed_indexes={"tasks": [index]})
    write_manifest(tmp_path, "beta")
    sub = tmp_path / "gamma"
    sub.mkdir()
    (sub / "manifest.json").write_text('{"slug": "gamma", "name": "Gamma"}', encoding="utf-8")
    app = factory(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG="beta")
    state = app.extensions["mdb"]
    assert [m["slug"] for m in state.manifests] == ["alpha", "beta", "gamma"]
    assert not state.engine.is_initialized
    _add_task_routes(app)
    assert app.test_client().get("/tasks").json == {"count": 0, "app": "beta"}
    assert set(state.registrations) == {"alpha", "beta", "gamma"}
    assert state.engine.get_app("alpha")["managed_indexes"]
    assert state.engine.wait_for_indexes(timeout=30)  # built off the first request
    assert recorder.commands("createIndexes")


def test_a_single_manifest_is_the_default_app(factory, tmp_path):
    app = factory(MDB_MANIFESTS=[str(write_manifest(tmp_path, "solo"))])
    _add_task_routes(app)
    assert app.test_client().get("/tasks").json["app"] == "solo"


def test_an_invalid_manifest_stops_init_app_naming_file_and_path(mongo_uri, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"slug": "Bad Slug"}', encoding="utf-8")
    app = Flask("x")
    app.config.update(MDB_MONGO_URI=mongo_uri, MDB_MANIFESTS=str(bad))
    with pytest.raises(ManifestValidationError, match=r"MDB_MANIFESTS: .*bad\.json.*slug") as info:
        MDB(app)
    assert "slug" in info.value.errors
    broken = tmp_path / "broken.json"
    broken.write_text('{"slug": "ok",\n  oops}', encoding="utf-8")
    app.config["MDB_MANIFESTS"] = str(broken)
    with pytest.raises(ManifestValidationError, match="line 2"):
        MDB(app)


def test_an_invalid_cors_block_stops_init_app(mongo_uri, tmp_path):
    path = write_manifest(tmp_path, "corsy", cors={"allow_origins": ["https://a.example/path"]})
    app = Flask("x")
    app.config.update(MDB_MONGO_URI=mongo_uri, MDB_MANIFESTS=str(path))
    with pytest.raises(ManifestValidationError, match=r"corsy\.json.*cors\.allow_origins\[0\]"):
        MDB(app)


def test_two_manifests_with_one_slug_are_refused(mongo_uri, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_manifest(tmp_path / "a", "twin")
    second = write_manifest(tmp_path / "b", "twin")
    app = Flask("x")
    app.config.update(MDB_MONGO_URI=mongo_uri, MDB_MANIFESTS=[str(first), str(second)])
    with pytest.raises(ConfigurationError, match="two manifests declare the app 'twin'"):
        MDB(app)


def test_get_db_and_bind_outside_requests(factory):
    mdb = MDB()
    app = factory(mdb, MDB_APP_SLUG="scripted")
    with app.app_context():
        mdb.get_db().notes.insert_one({"n": 1})
        assert mdb.get_db("other").notes.count_documents({}) == 0
        with mdb.bind("other") as other:
            other.notes.insert_one({"n": 2})
            assert db.notes.count_documents({}) == 1
            assert db.name == "other"
        assert mdb.get_db("scripted").notes.count_documents({}) == 1
    with mdb.bind("scripted", app=app):  # no app context needed with app=
        assert db.notes.count_documents({}) == 1


def test_shutdown_then_next_use_reconnects(factory):
    mdb = MDB()
    app = factory(mdb, MDB_APP_SLUG="again")
    _add_task_routes(app)
    app.test_client().post("/tasks")
    mdb.shutdown(app)
    assert not app.extensions["mdb"].engine.is_initialized
    assert app.test_client().get("/tasks").json["count"] == 1


def test_preloaded_app_serves_requests_in_a_forked_worker(factory):
    """gunicorn --preload: the app is created in the master, requests are served in forked
    workers; nothing may connect before the fork, and each worker gets its own client."""
    app = factory(MDB_APP_SLUG="preload")
    _add_task_routes(app)
    engine = app.extensions["mdb"].engine
    assert not engine.is_initialized
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            os.close(read_fd)
            response = app.test_client().post("/tasks")
            os.write(write_fd, str(response.json["count"]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 100)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert message == b"1"
    assert app.test_client().post("/tasks").json == {"count": 2}
