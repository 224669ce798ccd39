"""What a Flask-PyMongo developer expects on day one, through real apps: errors that say what
to do (init_app, SECRET_KEY, MDB_MANIFESTS, the lazy engine), the request's scoped database
through a public API, ``find_one_or_404``, and GridFS files sent and saved over real HTTP
(a live server: streaming, ETag, conditional and range requests)."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import threading
import uuid

import pytest
from flask import Flask, request
from flask_apps import AppFactory, write_manifest

import flask_mdb
from flask_mdb import (
    MDB,
    AppNotBoundError,
    broadcast_to_app,
    db,
    find_one_or_404,
    get_current_db,
    save_file,
    send_file,
)
from flask_mdb.testing import LiveServer
from mdb_sync import ConfigurationError, ScopedDatabase
from mdb_sync.exceptions import RealtimeError


@pytest.fixture
def factory(mongo_uri, db_name, recorder):
    made = AppFactory(mongo_uri, db_name, recorder)
    yield made
    made.close()


# --- errors that say what to do -----------------------------------------------------------------


def test_db_without_init_app_asks_for_init_app():
    app = Flask("forgotten")

    @app.get("/")
    def index():
        return {"n": db.tasks.count_documents({})}

    with app.test_request_context("/"), pytest.raises(AppNotBoundError) as raised:
        db.tasks  # noqa: B018
    assert "did you forget `mdb.init_app(app)`" in str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    app.testing = False
    response = app.test_client().get("/")
    assert response.status_code == 500


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (12345, "not int"),
        (b"short", "5 bytes"),
        ("dev", "3 bytes"),
        ("x" * 31, "31 bytes"),
        ("", "0 bytes"),
    ],
)
def test_a_weak_secret_key_is_refused_at_init_app(factory, key, message):
    with pytest.raises(ConfigurationError, match="SECRET_KEY") as refused:
        factory(SECRET_KEY=key)
    assert message in str(refused.value)
    assert "secrets.token_hex" in str(refused.value)


def test_a_strong_secret_key_passes(factory):
    factory(SECRET_KEY="k" * 32)
    factory(SECRET_KEY=os.urandom(32))
    factory()  # unset: left to the features that need one


def test_manifest_paths_resolve_against_the_app_root(factory, tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "manifests").mkdir(parents=True)
    write_manifest(root / "manifests", "rooted")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    app = Flask("rooted", root_path=str(root))
    app.config.update(factory.config(MDB_MANIFESTS="manifests/rooted.json"))
    mdb = MDB(app)
    try:
        assert app.extensions["mdb"].manifests[0]["slug"] == "rooted"
    finally:
        mdb.shutdown(app)

    write_manifest(elsewhere, "cwd_only")
    app = Flask("cwd", root_path=str(root))
    app.config.update(factory.config(MDB_MANIFESTS="cwd_only.json"))
    with pytest.raises(ConfigurationError, match="MDB_MANIFESTS") as refused:
        MDB(app)
    text = str(refused.value)
    assert f"root_path {str(root)!r}" in text
    assert "exists in the working directory" in text and "absolute path" in text


def test_broadcast_before_the_first_request_explains_the_lazy_engine(factory):
    factory(MDB_APP_SLUG="lazy_app")
    with pytest.raises(RealtimeError, match="lazily") as refused:
        broadcast_to_app("lazy_app", {"type": "hello"})
    assert "app=" in str(refused.value) and "app_context" in str(refused.value)


def test_broadcast_with_app_starts_the_engine(factory):
    app = factory(MDB_APP_SLUG="lazy_app")
    event = broadcast_to_app("lazy_app", {"type": "hello"}, app=app)
    assert event.app_id == "lazy_app"


# --- the request's database through a public API ------------------------------------------------


def test_get_current_db_is_the_requests_real_scoped_database(factory):
    app = factory(MDB_APP_SLUG="helper_app")
    kept: dict[str, ScopedDatabase] = {}

    def add_later(database: ScopedDatabase, title: str) -> None:
        database.tasks.insert_one({"title": title})

    @app.post("/tasks")
    def add():
        kept["db"] = get_current_db()
        worker = threading.Thread(target=add_later, args=(kept["db"], "from a thread"))
        worker.start()
        worker.join(30)
        return {"n": db.tasks.count_documents({})}

    assert app.test_client().post("/tasks").json == {"n": 1}
    assert type(kept["db"]) is ScopedDatabase and kept["db"].app_slug == "helper_app"
    # Usable after the request, unlike the proxy:
    assert kept["db"].tasks.count_documents({}) == 1
    with pytest.raises(AppNotBoundError):
        get_current_db()
    mdb = app.extensions["mdb"].extension
    with mdb.bind("helper_app", app=app) as bound:
        assert get_current_db() == bound == kept["db"]


def test_message_error_and_connection_import_from_flask_mdb():
    from flask_mdb.websockets import Connection, MessageError

    assert flask_mdb.MessageError is MessageError
    assert flask_mdb.Connection is Connection
    assert {"MessageError", "Connection", "get_current_db", "find_one_or_404"} <= set(
        flask_mdb.__all__
    )


# --- find_one_or_404 ----------------------------------------------------------------------------


def test_find_one_or_404(factory):
    app = factory(MDB_APP_RESOLVER=lambda req: req.headers.get("X-App"))

    @app.get("/users/<name>")
    def user(name):
        found = find_one_or_404(db.users, {"name": name}, {"_id": 0}, description="no such user")
        return found

    with app.app_context():
        engine = app.extensions["mdb"].ensure_ready()
        engine.register_app({"slug": "app_a"})
        engine.register_app({"slug": "app_b"})
        engine.get_scoped_db("app_a").users.insert_one({"name": "ada", "role": "admin"})
    client = app.test_client()
    ok = client.get("/users/ada", headers={"X-App": "app_a"})
    assert ok.status_code == 200
    assert (ok.json["name"], ok.json["role"], ok.json["app_id"]) == ("ada", "admin", "app_a")
    missing = client.get("/users/bob", headers={"X-App": "app_a"})
    assert missing.status_code == 404 and b"no such user" in missing.data
    other_app = client.get("/users/ada", headers={"X-App": "app_b"})
    assert other_app.status_code == 404, "another app's document is a 404 like a missing one"
    with app.test_request_context(), pytest.raises(TypeError, match="scoped collection"):
        find_one_or_404({"name": "ada"})


# --- GridFS over real HTTP ----------------------------------------------------------------------


def _files_app(factory) -> Flask:
    app = factory(MDB_APP_RESOLVER=lambda req: req.headers.get("X-App"), MAX_CONTENT_LENGTH=8 << 20)

    @app.post("/files")
    def upload():
        stored = request.files["file"]
        file_id = save_file(stored.filename, stored, owner=request.form.get("owner"))
        return {"id": str(file_id)}, 201

    @app.get("/files/<path:filename>")
    def download(filename):
        return send_file(filename, as_attachment=request.args.get("dl") == "1")

    with app.app_context():
        engine = app.extensions["mdb"].ensure_ready()
        engine.register_app({"slug": "files_a"})
        engine.register_app({"slug": "files_b"})
    return app


def _multipart(filename: str, content: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def _request(server, method, path, body=None, headers=None):
    host, port = server.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_files_are_saved_and_sent_over_http(factory, raw_db):
    app = _files_app(factory)
    content = os.urandom(700 * 1024) + b"end"  # several GridFS chunks
    body, boundary = _multipart("reports/q1.pdf", content, owner="ada")
    form = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-App": "files_a"}
    with LiveServer(app) as server:
        status, _, answer = _request(server, "POST", "/files", body, form)
        assert status == 201, answer
        stored = raw_db["files_a_fs.files"].find_one()
        assert stored["app_id"] == "files_a" and stored["filename"] == "reports/q1.pdf"
        assert stored["metadata"] == {"owner": "ada", "contentType": "application/pdf"}

        status, head, data = _request(
            server, "GET", "/files/reports/q1.pdf", None, {"X-App": "files_a"}
        )
        assert status == 200 and data == content
        assert head["Content-Type"] == "application/pdf"
        assert head["Content-Length"] == str(len(content))
        assert head["X-Content-Type-Options"] == "nosniff"
        assert "public" in head["Cache-Control"] and "max-age=31536000" in head["Cache-Control"]
        assert head["Accept-Ranges"] == "bytes"
        etag, modified = head["ETag"], head["Last-Modified"]

        status, _, data = _request(
            server,
            "GET",
            "/files/reports/q1.pdf",
            None,
            {"X-App": "files_a", "If-None-Match": etag},
        )
        assert status == 304 and data == b""
        status, _, _ = _request(
            server, "GET", "/files/reports/q1.pdf", None,
            {"X-App": "files_a", "If-Modified-Since": modified},
        )  # fmt: skip
        assert status == 304

        status, head, data = _request(
            server,
            "GET",
            "/files/reports/q1.pdf",
            None,
            {"X-App": "files_a", "Range": "bytes=300000-300099"},
        )
        assert status == 206 and data == content[300000:300100]
        assert head["Content-Range"] == f"bytes 300000-300099/{len(content)}"
        status, _, data = _request(
            server, "GET", "/files/reports/q1.pdf", None, {"X-App": "files_a", "Range": "bytes=-3"}
        )
        assert status == 206 and data == b"end"
        status, _, _ = _request(
            server, "GET", "/files/reports/q1.pdf", None,
            {"X-App": "files_a", "Range": f"bytes={len(content) + 10}-"},
        )  # fmt: skip
        assert status == 416

        # Another app cannot see it; a missing file is the same 404.
        for app_header, path in (("files_b", "/files/reports/q1.pdf"), ("files_a", "/files/nope")):
            status, _, _ = _request(server, "GET", path, None, {"X-App": app_header})
            assert status == 404

        # A new version is served; the old ETag no longer matches; a cookie makes it private.
        body, boundary = _multipart("reports/q1.pdf", b"version two", owner="ada")
        form["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        assert _request(server, "POST", "/files", body, form)[0] == 201
        status, head, data = _request(
            server, "GET", "/files/reports/q1.pdf?dl=1", None,
            {"X-App": "files_a", "If-None-Match": etag, "Cookie": "s=1"},
        )  # fmt: skip
        assert status == 200 and data == b"version two" and head["ETag"] != etag
        assert "private" in head["Cache-Control"]
        assert head["Content-Disposition"] == "attachment; filename=q1.pdf"


def test_send_file_streams_large_files_in_pieces(factory):
    """The response is an iterator over GridFS chunks, never the whole file in memory."""
    app = _files_app(factory)
    size = 3 * 1024 * 1024
    with app.test_request_context(headers={"X-App": "files_a"}):
        app.preprocess_request()
        save_file("big.bin", io.BytesIO(b"\x07" * size))
        response = send_file("big.bin")
        pieces = list(response.response)
        response.close()
    assert sum(len(p) for p in pieces) == size
    assert max(len(p) for p in pieces) <= 255 * 1024
    assert hashlib.sha256(b"".join(pieces)).digest() == hashlib.sha256(b"\x07" * size).digest()


def test_file_helpers_check_their_arguments(factory):
    app = _files_app(factory)
    with app.test_request_context(headers={"X-App": "files_a"}):
        app.preprocess_request()
        with pytest.raises(TypeError, match="read"):
            save_file("a.txt", b"bytes are not a file")
        with pytest.raises(TypeError, match="version"):
            send_file("a.txt", version="1")
        with pytest.raises(TypeError, match="base"):
            send_file("a.txt", base=None)
        with pytest.raises(Exception, match="name"):
            save_file("a.txt", io.BytesIO(b"x"), base="system.evil")


def test_concurrent_uploads_of_two_apps_never_cross(factory, raw_db):
    """Two clients (distinct addresses) upload and read back the same file name in two apps at
    once, many times: each always reads its own app's newest version."""
    app = _files_app(factory)
    errors: list[str] = []

    def client(address: str, slug: str, rounds: int) -> None:
        host_port = server.url.split("//")[1]
        host, port = host_port.split(":")
        for i in range(rounds):
            payload = f"{slug}:{i}".encode() * 50
            body, boundary = _multipart("shared.txt", payload)
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-App": slug}
            conn = http.client.HTTPConnection(
                host, int(port), timeout=30, source_address=(address, 0)
            )
            try:
                conn.request("POST", "/files", body=body, headers=headers)
                posted = conn.getresponse()
                posted.read()
                conn.request("GET", "/files/shared.txt", headers={"X-App": slug})
                got = conn.getresponse()
                data = got.read()
            finally:
                conn.close()
            if posted.status != 201 or got.status != 200 or data != payload:
                errors.append(f"{slug} round {i}: {posted.status} {got.status} {data[:20]!r}")

    with LiveServer(app) as server:
        threads = [
            threading.Thread(target=client, args=("127.0.0.2", "files_a", 15)),
            threading.Thread(target=client, args=("127.0.0.3", "files_b", 15)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []
    for slug in ("files_a", "files_b"):
        files = list(raw_db[f"{slug}_fs.files"].find({}, {"app_id": 1}))
        assert len(files) == 15 and {f["app_id"] for f in files} == {slug}


def test_a_declared_vector_index_is_one_info_line_at_start(factory, tmp_path, caplog):
    import logging

    from mdb_sync.ai.vector_search import server_supports_vector_search

    vector = {
        "type": "vectorSearch",
        "name": "kb_vector",
        "definition": {
            "fields": [
                {"type": "vector", "path": "embedding", "numDimensions": 3, "similarity": "cosine"}
            ]
        },
    }
    manifest = write_manifest(tmp_path, "kb_flask", managed_indexes={"kb": [vector]})
    app = factory(MDB_MANIFESTS=str(manifest), MDB_HEALTH_URL="/health")
    caplog.set_level(logging.INFO)
    health = app.test_client().get("/health")
    engine = app.extensions["mdb"].engine
    if server_supports_vector_search(engine):
        return  # Atlas builds the index itself
    assert engine.wait_for_indexes(timeout=30)  # declared indexes build off the first request
    mentions = [r for r in caplog.records if "kb_vector" in r.getMessage()]
    assert [(r.levelno, r.name) for r in mentions] == [(logging.INFO, "mdb_sync.indexes.declared")]
    assert health.status_code == 200 and health.json["status"] == "healthy"
