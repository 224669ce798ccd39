"""Request-context app binding: resolver, blueprint, default; fail closed; teardown; threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Blueprint, Flask, abort, request
from flask_apps import AppFactory, http, serve, write_manifest

from flask_mdb import (
    MDB,
    AppNotBoundError,
    app_bound,
    current_app_slug,
    db,
    get_current_app_slug,
)
from mdb_sync import ConfigurationError


@pytest.fixture
def factory(mongo_uri, db_name, recorder):
    made = AppFactory(mongo_uri, db_name, recorder)
    yield made
    made.close()


def header_resolver(req):
    return req.headers.get("X-App")


def _who(app: Flask) -> None:
    @app.get("/who")
    def who():
        return {"slug": str(current_app_slug), "db": db.name}


@pytest.fixture
def tenants(tmp_path):
    """A manifest directory with two active apps and an inactive one."""
    write_manifest(tmp_path, "acme")
    write_manifest(tmp_path, "globex")
    write_manifest(tmp_path, "dormant", status="inactive")
    return str(tmp_path)


def test_the_resolver_binds_each_request(factory, tenants):
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver)
    _who(app)
    client = app.test_client()
    assert client.get("/who", headers={"X-App": "acme"}).json == {"slug": "acme", "db": "acme"}
    assert client.get("/who", headers={"X-App": "globex"}).json["slug"] == "globex"


def test_resolvers_by_subdomain_and_path_prefix(factory, tenants):
    by_host = factory(
        name="by_host",
        MDB_MANIFESTS=tenants,
        MDB_APP_RESOLVER=lambda req: req.host.split(".")[0] if req.host.count(".") == 2 else None,
    )
    _who(by_host)
    client = by_host.test_client()
    assert client.get("/who", base_url="http://globex.example.com").json["slug"] == "globex"
    assert client.get("/who", base_url="http://evil.example.com").status_code == 404

    by_path = factory(
        name="by_path", MDB_MANIFESTS=tenants, MDB_APP_RESOLVER="flask_apps:path_prefix_resolver"
    )

    @by_path.get("/<tenant>/who")
    def tenant_who(tenant):
        return {"slug": get_current_app_slug()}

    client = by_path.test_client()
    assert client.get("/acme/who").json == {"slug": "acme"}
    assert client.get("/dormant/who").status_code == 404


@pytest.mark.parametrize("slug", ["nobody", "dormant", "Not-A-Slug", "x" * 100, "system"])
def test_a_resolver_naming_no_active_app_is_404(factory, tenants, raw_db, slug):
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver)
    _who(app)
    response = app.test_client().get("/who", headers={"X-App": slug})
    assert response.status_code == 404
    assert raw_db["apps_config"].count_documents({"_id": slug}) == (slug == "dormant")


def test_resolver_slugs_are_never_registered_implicitly(factory, raw_db):
    app = factory(MDB_APP_RESOLVER=header_resolver, MDB_IMPLICIT_APPS=True)
    _who(app)
    assert app.test_client().get("/who", headers={"X-App": "invented"}).status_code == 404
    assert raw_db["apps_config"].count_documents({"_id": "invented"}) == 0


def test_blueprint_binding_and_precedence(factory, tenants):
    mdb = MDB()
    shop = Blueprint("shop", __name__, url_prefix="/shop")
    admin = Blueprint("admin", __name__, url_prefix="/admin")
    inner = Blueprint("inner", __name__, url_prefix="/inner")

    @shop.get("/who")
    def shop_who():
        return {"slug": get_current_app_slug()}

    @inner.get("/who")
    def inner_who():
        return {"slug": get_current_app_slug()}

    admin.register_blueprint(inner)
    mdb.bind_blueprint(shop, "acme")
    mdb.bind_blueprint("admin", "globex")  # by name; nested blueprints inherit it
    app = factory(mdb, MDB_MANIFESTS=tenants, MDB_APP_SLUG="acme", MDB_APP_RESOLVER=header_resolver)
    app.register_blueprint(shop)
    app.register_blueprint(admin)
    _who(app)
    client = app.test_client()
    assert client.get("/shop/who").json == {"slug": "acme"}
    assert client.get("/admin/inner/who").json == {"slug": "globex"}
    assert client.get("/who").json["slug"] == "acme"  # the default
    # the resolver comes first; returning None falls through to blueprint, then default
    assert client.get("/shop/who", headers={"X-App": "globex"}).json == {"slug": "globex"}


def test_bind_blueprint_validates_the_slug():
    with pytest.raises(ConfigurationError, match="bind_blueprint"):
        MDB().bind_blueprint("bp", "Bad Slug")


def test_no_resolvable_app_fails_closed(factory, recorder):
    app = factory()  # no default, no resolver, no blueprint binding

    @app.get("/peek")
    def peek():
        assert get_current_app_slug() is None
        return {"count": db.tasks.count_documents({})}

    @app.get("/slug")
    def slug():
        return {"slug": str(current_app_slug)}

    app.config["PROPAGATE_EXCEPTIONS"] = True  # the library's own error is answered anyway
    client = app.test_client()
    recorder.clear()
    for path in ("/peek", "/slug"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json["error"]["type"] == "AppNotBoundError"
        assert f"no app is bound to this request (GET {path})" in response.json["error"]["message"]
    touched = [c for c in recorder.commands("count", "aggregate", "find") if "tasks" in str(c)]
    assert touched == []


def test_db_outside_a_request_fails_closed(factory):
    app = factory(MDB_APP_SLUG="acme")
    with pytest.raises(AppNotBoundError, match="outside a request"):
        db.tasks.find_one()
    with app.app_context(), pytest.raises(AppNotBoundError):
        db.tasks.find_one()
    assert get_current_app_slug() is None


def test_teardown_resets_the_binding_even_after_errors(factory):
    app = factory(MDB_APP_SLUG="acme")
    seen = []

    @app.get("/boom")
    def boom():
        seen.append(get_current_app_slug())
        raise RuntimeError("boom")

    @app.get("/gone")
    def gone():
        seen.append(get_current_app_slug())
        abort(410)

    client = app.test_client()  # runs the app in this thread, like a reused server thread
    with pytest.raises(RuntimeError, match="boom"):  # TESTING propagates the exception
        client.get("/boom")
    assert get_current_app_slug() is None
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.get("/boom").status_code == 500
    assert get_current_app_slug() is None
    assert client.get("/gone").status_code == 410
    assert get_current_app_slug() is None
    assert seen == ["acme", "acme", "acme"]
    with pytest.raises(AppNotBoundError):
        db.tasks.find_one()


def test_sequential_requests_in_one_app_context_never_share_a_binding(factory, tenants):
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver)
    _who(app)

    @app.get("/maybe")
    def maybe():
        return {"slug": get_current_app_slug()}

    client = app.test_client()
    with app.app_context():  # one g for every request below
        assert client.get("/who", headers={"X-App": "acme"}).json["slug"] == "acme"
        assert client.get("/maybe").json == {"slug": None}
        assert client.get("/who", headers={"X-App": "globex"}).json["slug"] == "globex"
        assert get_current_app_slug() is None


def test_app_bound_signal(factory, tenants):
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver, MDB_APP_SLUG="acme")
    _who(app)
    received = []

    def listener(sender, slug, source):
        received.append((sender, slug, source))

    with app_bound.connected_to(listener):
        app.test_client().get("/who", headers={"X-App": "globex"})
        app.test_client().get("/who")
    assert received == [(app, "globex", "resolver"), (app, "acme", "default")]


def test_concurrent_requests_for_different_apps_never_see_each_others_binding(
    factory, tenants, raw_db
):
    """A real threaded server; requests for two apps meet at a barrier while bound, so every
    request is in flight at the same time as requests for the other app."""
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver)
    per_app, rounds = 8, 3
    barrier = threading.Barrier(2 * per_app, timeout=30)

    @app.post("/work")
    def work():
        before = get_current_app_slug()
        marker = request.json["marker"]
        db.items.insert_one({"marker": marker})
        barrier.wait()
        after = get_current_app_slug()
        markers = sorted(d["marker"] for d in db.items.find({}, {"marker": 1}))
        return {"before": before, "after": after, "db": db.name, "markers": markers}

    with serve(app) as base:
        for round_no in range(rounds):
            jobs = [
                (slug, f"{slug}-{round_no}-{i}")
                for i in range(per_app)
                for slug in ("acme", "globex")
            ]
            with ThreadPoolExecutor(len(jobs)) as pool:
                results = list(
                    pool.map(
                        lambda job: (
                            job,
                            http(
                                f"{base}/work",
                                "POST",
                                {"marker": job[1]},
                                headers={"X-App": job[0]},
                            ),
                        ),
                        jobs,
                    )
                )
            for (slug, marker), (status, _, body) in results:
                assert status == 200, body
                assert body["before"] == body["after"] == body["db"] == slug
                assert marker in body["markers"]
                assert all(m.startswith(slug + "-") for m in body["markers"])
    for slug in ("acme", "globex"):
        stored = list(raw_db[f"{slug}_items"].find())
        assert len(stored) == per_app * rounds
        assert {d["app_id"] for d in stored} == {slug}


def test_core_signals_are_re_exported_and_fire_on_first_use(factory, tenants):
    import mdb_sync.signals
    from flask_mdb import signals

    assert signals.app_registered is mdb_sync.signals.app_registered
    assert signals.security_violation is mdb_sync.signals.security_violation
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_SLUG="acme")
    engine = app.extensions["mdb"].engine
    registered = []

    def on_registered(sender, slug, manifest, result):
        registered.append((sender, slug))

    with signals.app_registered.connected_to(on_registered):
        _who(app)
        app.test_client().get("/who")
        app.test_client().get("/who")
    assert sorted(registered) == [(engine, "acme"), (engine, "dormant"), (engine, "globex")]


def test_streamed_responses_keep_their_binding_until_done(factory):
    from flask import stream_with_context

    app = factory(MDB_APP_SLUG="streamer")

    @app.get("/stream")
    def stream():
        db.lines.insert_many([{"n": i} for i in range(3)])

        def rows():
            for doc in db.lines.find({}, {"_id": 0, "n": 1}).sort("n", 1):
                yield f"{get_current_app_slug()}:{doc['n']}\n"

        return stream_with_context(rows())

    response = app.test_client().get("/stream")
    assert response.get_data(as_text=True) == "streamer:0\nstreamer:1\nstreamer:2\n"
    assert get_current_app_slug() is None
