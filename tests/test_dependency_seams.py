"""The seams with pymongo's, marshmallow's, httpx2's and Flask-Login's private API: each
private name the library uses exists on the installed version and still does what the library
relies on, and the frames a broadcast builds itself are the bytes wsproto would send. A release
that changes one fails here, by name, rather than somewhere in the sandbox."""

from __future__ import annotations

import configparser
import datetime as dt
import http.server
import inspect
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpcore2
import httpx2
import marshmallow
import pytest
import simple_websocket
from flask import Flask
from flask_login import LoginManager, UserMixin, current_user, login_user
from packaging.requirements import Requirement
from pymongo.command_cursor import CommandCursor
from pymongo.cursor import Cursor
from pymongo.operations import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    UpdateMany,
    UpdateOne,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from flask_mdb import _flask_login_seam as login_seam
from flask_mdb.websockets.connection import text_frame
from mdb_sync import _httpx_seam as httpx_seam
from mdb_sync import _marshmallow_seam as marshmallow_seam
from mdb_sync import _pymongo_seam as seam
from mdb_sync.manifest.schema import ManifestSchema
from mdb_sync.manifest.sections import load_section

# --- pymongo -------------------------------------------------------------------------------------


@pytest.fixture
def docs(raw_db):
    coll = raw_db["seam_docs"]
    coll.insert_many([{"n": n, "even": n % 2 == 0} for n in range(10)])
    return coll


def _holder(owner: str, docs):
    if owner == "pymongo.helpers_shared":
        from pymongo import helpers_shared

        return helpers_shared
    if owner == "pymongo.uri_parser_shared":
        from pymongo import uri_parser_shared

        return uri_parser_shared
    if owner == "pymongo.cursor.Cursor":
        return docs.find({}, {"n": 1}).sort("n", -1).skip(1).limit(3)
    if owner == "pymongo.command_cursor.CommandCursor":
        return docs.aggregate([{"$match": {}}])
    if owner == "pymongo.operations.UpdateOne":
        return UpdateOne({"n": 1}, {"$set": {"x": 1}})
    if owner == "pymongo.operations.UpdateMany":
        return UpdateMany({"n": 1}, {"$set": {"x": 1}})
    if owner == "pymongo.operations.ReplaceOne":
        return ReplaceOne({"n": 1}, {"x": 1})
    if owner == "pymongo.operations.DeleteOne":
        return DeleteOne({"n": 1})
    if owner == "pymongo.operations.DeleteMany":
        return DeleteMany({"n": 1})
    if owner == "pymongo.operations.InsertOne":
        return InsertOne({"n": 1})
    if owner == "pymongo.synchronous.bulk._Bulk":
        from pymongo.synchronous.bulk import _Bulk

        return _Bulk
    if owner == "pymongo.MongoClient":
        return docs.database.client
    if owner == "pymongo.topology.Topology":
        return docs.database.client._topology
    if owner == "pymongo.pool.Pool":
        return next(iter(docs.database.client._topology._servers.values())).pool
    if owner == "pymongo.client_session.ClientSession":
        return docs.database.client.start_session()
    raise AssertionError(f"no holder for {owner}")


@pytest.mark.parametrize(
    ("owner", "name"),
    [(owner, name) for owner, names in seam.PRIVATES.items() for name in names],
)
def test_each_pymongo_private_exists(owner, name, docs):
    holder = _holder(owner, docs)
    assert hasattr(holder, name), (
        f"pymongo no longer has {owner}.{name}: mdb_sync/_pymongo_seam.py needs updating"
    )


def test_a_uri_is_parsed_without_dns():
    parsed = seam.parse_uri_offline("mongodb+srv://u:p@c.mdb-sync.invalid/db?retryWrites=true")
    assert parsed["fqdn"] == "c.mdb-sync.invalid"
    assert (parsed["username"], parsed["password"], parsed["database"]) == ("u", "p", "db")
    assert parsed["nodelist"] == [("c.mdb-sync.invalid", None)]
    assert seam.parse_uri_offline("mongodb://a:1,b/x")["nodelist"] == [("a", 1), ("b", 27017)]


def test_index_spec_helpers():
    assert seam.index_list("a") == [("a", 1)]
    assert seam.index_list("a", -1) == [("a", -1)]
    assert seam.index_list([("a", 1), ("b", -1)]) == [("a", 1), ("b", -1)]
    assert seam.index_list({"a": 1, "loc": "2dsphere"}) == [("a", 1), ("loc", "2dsphere")]
    assert seam.index_document([("a", 1), ("b", -1)]) == {"a": 1, "b": -1}
    assert seam.gen_index_name([("a", 1), ("b", -1)]) == "a_1_b_-1"
    with pytest.raises(TypeError):
        seam.index_document("a")


class RecordingBulk:
    """Has the methods of pymongo's internal bulk, with the scoped bulk's signatures."""

    def __init__(self):
        self.calls = []

    def add_insert(self, document):
        self.calls.append(("insert", document))

    def add_update(
        self, selector, update, multi, upsert, collation=None, array_filters=None, hint=None,
        sort=None,
    ):  # fmt: skip
        self.calls.append(
            ("update", selector, update, multi, upsert, collation, array_filters, hint, sort)
        )

    def add_replace(self, selector, replacement, upsert, collation=None, hint=None, sort=None):
        self.calls.append(("replace", selector, replacement, upsert, collation, hint, sort))

    def add_delete(self, selector, limit, collation=None, hint=None):
        self.calls.append(("delete", selector, limit, collation, hint))


def test_requests_add_themselves_to_a_bulk():
    """What the scoped bulk write reads of each request: pymongo's own hand-over to a bulk,
    with these arguments, and the bulk methods it mirrors have these parameters."""
    from pymongo.synchronous.bulk import _Bulk

    from mdb_sync.scoping.bulk import ScopingBulk

    doc = {"n": 4}
    requests = [
        InsertOne(doc),
        UpdateOne({"n": 1}, {"$set": {"x": 1}}, upsert=True, hint="n_1", array_filters=[{"a": 1}]),
        UpdateMany({"n": 2}, {"$set": {"y": 1}}, collation={"locale": "fr"}),
        ReplaceOne({"n": 3}, {"z": 1}, sort={"n": 1}),
        DeleteOne({"n": 5}),
        DeleteMany({"n": 6}, hint="n_1"),
    ]
    bulk = RecordingBulk()
    assert seam.add_requests(requests, bulk, ValueError) == 6
    assert bulk.calls[0] == ("insert", doc) and bulk.calls[0][1] is doc
    assert bulk.calls[1] == (
        "update", {"n": 1}, {"$set": {"x": 1}}, False, True, None, [{"a": 1}], "n_1", None
    )  # fmt: skip
    assert bulk.calls[2][:5] == ("update", {"n": 2}, {"$set": {"y": 1}}, True, None)
    assert bulk.calls[2][5]["locale"] == "fr"
    assert bulk.calls[3] == ("replace", {"n": 3}, {"z": 1}, None, None, None, {"n": 1})
    assert bulk.calls[4:] == [
        ("delete", {"n": 5}, 1, None, None),
        ("delete", {"n": 6}, 0, None, "n_1"),
    ]
    for name in ("add_insert", "add_update", "add_replace", "add_delete"):
        theirs = list(inspect.signature(getattr(_Bulk, name)).parameters)
        ours = list(inspect.signature(getattr(ScopingBulk, name)).parameters)
        assert theirs == ours, f"pymongo's _Bulk.{name} changed: {theirs}"
    with pytest.raises(ValueError):
        seam.add_requests([InsertOne({"n": 1}, namespace="db.other")], bulk, ValueError)
    with pytest.raises(TypeError, match="not a valid bulk write request"):
        seam.add_requests([{"insertOne": {"n": 1}}], bulk, ValueError)


def test_a_bulk_feed_is_taken_as_a_request(docs):
    class Feed(seam.BulkFeed):
        def feed(self, bulk):
            bulk.add_insert({"_id": "fed", "n": 99})
            bulk.add_delete({"n": 0}, 1)

    result = docs.bulk_write([Feed()])
    assert (result.inserted_count, result.deleted_count) == (1, 1)
    assert docs.find_one({"_id": "fed"})["n"] == 99 and docs.count_documents({"n": 0}) == 0


def test_pool_counters_read_the_client_pools(docs):
    client = docs.database.client
    before = seam.pool_counters(client)
    assert before and all(isinstance(c, seam.PoolCounters) for c in before)
    assert sum(c.idle + c.in_use for c in before) >= 1  # the fixture's writes opened one
    assert before[0].max_size == client.options.pool_options.max_pool_size
    assert all(c.in_use == 0 and c.operations == 0 for c in before)  # nothing running now
    generation = before[0].generation
    client.admin.command("ping")
    assert seam.pool_counters(client)[0].generation == generation  # not cleared by a ping
    with pytest.raises(AttributeError):
        seam.pool_counters(object())


def test_a_sessions_transaction_read_preference(docs):
    from pymongo import ReadPreference

    with docs.database.client.start_session() as session:
        assert seam.txn_read_preference(session) is None  # no transaction
        with session.start_transaction(read_preference=ReadPreference.PRIMARY):
            assert seam.txn_read_preference(session) == ReadPreference.PRIMARY
            docs.find_one({}, session=session)  # the transaction runs on this server


class CountingCursor(seam.HookedCursor):
    fetches: list[tuple[str | None, int]]

    def _mdb_fetch(self, fetch):
        self.fetches.append((seam.will_send(self), seam.documents_buffered(self)))
        return fetch()

    def _mdb_clone(self, session):
        clone = seam.bare_clone(self, session)
        clone.fetches = []
        clone.cloned_from = self
        return clone


def test_the_hooked_cursor_sees_every_batch_and_every_clone(docs):
    cursor = CountingCursor(docs, {}, batch_size=4).sort("n", 1)
    cursor.fetches = []
    assert seam.will_send(cursor) == "find"
    assert seam.cursor_query(cursor) == {
        "projection": None,
        "sort": {"n": 1},
        "skip": 0,
        "limit": 0,
    }
    assert seam.cursor_sort(cursor) == {"n": 1}
    first = next(cursor)
    assert first["n"] == 0 and seam.documents_retrieved(cursor) == 4
    assert seam.documents_buffered(cursor) == 3 and seam.will_send(cursor) is None
    rest = list(cursor)
    assert [d["n"] for d in rest] == list(range(1, 10))
    # find, then getMores until the server says the cursor is done.
    sent = [name for name, _ in cursor.fetches if name is not None]
    assert sent[0] == "find" and set(sent[1:]) == {"getMore"} and len(sent) >= 3
    assert seam.will_send(cursor) is None
    clone = cursor.clone()
    assert isinstance(clone, CountingCursor) and clone.cloned_from is cursor
    assert [d["n"] for d in clone] == list(range(10))  # the query options came along
    assert clone.fetches and isinstance(cursor, Cursor)


class CountingCommandCursor(seam.HookedCommandCursor):
    def _mdb_fetch(self, fetch):
        self.fetched = getattr(self, "fetched", 0) + 1
        return fetch()


def test_a_pymongo_command_cursor_can_be_adopted(docs):
    raw = docs.aggregate([{"$sort": {"n": 1}}], batchSize=3)
    assert seam.documents_buffered(raw) == 3 and seam.will_send(raw) is None
    adopted = seam.adopt_command_cursor(raw, CountingCommandCursor)
    assert adopted is raw and isinstance(adopted, CommandCursor)
    assert [d["n"] for d in adopted] == list(range(10))
    assert adopted.fetched >= 2  # the getMores went through the hook
    with pytest.raises(TypeError, match="HookedCommandCursor"):
        seam.adopt_command_cursor(docs.aggregate([]), CommandCursor)


# --- Flask-Login ---------------------------------------------------------------------------------


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def _login_app() -> Flask:
    app = Flask("seam")
    app.config["SECRET_KEY"] = "seam-test-secret-" + "z" * 20
    manager = LoginManager(app)
    manager.user_loader(lambda user_id: User(user_id))
    manager.request_loader(lambda request: None)
    return app


@pytest.mark.parametrize(
    ("owner", "name"),
    [(owner, name) for owner, names in login_seam.PRIVATES.items() for name in names],
)
def test_each_flask_login_private_still_works(owner, name):
    app = _login_app()
    with app.test_request_context("/"):
        if name == "_login_user":
            ada = User("ada")
            login_seam.set_request_user(ada)
            assert current_user._get_current_object() is ada, (
                "Flask-Login no longer keeps the request's user in g._login_user: "
                "flask_mdb/_flask_login_seam.py needs updating"
            )
            login_seam.forget_request_user()
            assert current_user.is_anonymous  # resolved again: nobody in this request
        elif name == "_user_id":
            login_user(User("bob"))
            assert login_seam.session_user_id() == "bob", (
                "flask_login.login_user no longer stores the user id under '_user_id': "
                "flask_mdb/_flask_login_seam.py needs updating"
            )
            login_seam.forget_session_user_id()
            assert current_user.is_authenticated  # resolved already for this request
            login_seam.forget_request_user()
            assert current_user.is_anonymous, (
                "Flask-Login still finds a user once '_user_id' left the session: "
                "flask_mdb/_flask_login_seam.py needs updating"
            )
            _check_remember_cookie_follows_the_session_id(app)
        elif name == "_remember":
            assert not login_seam.remember_requested()
            login_user(User("bob"), remember=True)
            assert login_seam.remember_requested(), (
                "flask_login.login_user(remember=True) no longer marks '_remember' in the "
                "session: flask_mdb/_flask_login_seam.py needs updating"
            )
        elif name == "_remember_seconds":
            login_user(User("bob"), remember=True)
            assert login_seam.remember_seconds() is None
            login_user(User("bob"), remember=True, duration=dt.timedelta(seconds=90))
            assert login_seam.remember_seconds() == 90, (
                "flask_login.login_user(duration=...) no longer stores '_remember_seconds': "
                "flask_mdb/_flask_login_seam.py needs updating"
            )
        else:  # pragma: no cover - a new private without a check
            raise AssertionError(f"no check for {owner}.{name}")


def _check_remember_cookie_follows_the_session_id(app: Flask) -> None:
    """The remember cookie is written from the id in Flask's session at the end of the
    request: an id replaced after ``login_user`` is the one the cookie carries."""

    @app.get("/seam-login")
    def seam_login() -> str:
        login_user(User("bob"), remember=True)
        login_seam.set_session_user_id("bob.replaced")
        return "ok"

    reply = app.test_client().get("/seam-login")
    cookies = reply.headers.getlist("Set-Cookie")
    assert any(value.startswith("remember_token=bob.replaced|") for value in cookies), (
        "Flask-Login no longer writes the remember cookie from session['_user_id']: "
        "flask_mdb/_flask_login_seam.py needs updating"
    )


def test_the_public_request_loader_property():
    manager = LoginManager()
    assert manager.request_callback is None

    def loader(request):
        return None

    manager.request_loader(loader)
    assert manager.request_callback is loader


# --- marshmallow ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "name"),
    [(owner, name) for owner, names in marshmallow_seam.PRIVATES.items() for name in names],
)
def test_each_marshmallow_private_exists(owner, name):
    holder = {"marshmallow.fields.Field": marshmallow.fields.Field}[owner]
    assert callable(getattr(holder, name, None)), (
        f"marshmallow no longer has {owner}.{name}: mdb_sync/_marshmallow_seam.py needs updating"
    )


def test_marshmallow_binds_the_inner_fields_of_our_containers():
    """Binding a schema reaches copies of the inner fields of MapOf and OneOfTypes (as it
    does a List's): a nested schema inside them knows its parent and root, and loads; two
    instances of a schema (one per thread) share no inner field nor the nested schema it
    caches (marshmallow copies a schema's fields shallowly)."""
    schema, other = ManifestSchema(), ManifestSchema()
    websockets = schema.fields["websockets"]  # MapOf(Obj(WebsocketSchema))
    (inner,) = websockets.inner_fields()
    assert inner.parent is websockets and inner.root is schema and inner.name == "websockets"
    (elsewhere,) = other.fields["websockets"].inner_fields()
    assert elsewhere is not inner and elsewhere.schema is not inner.schema
    auto_index = schema.fields["auto_index"]  # OneOfTypes: true/false or an object
    for choice, copy in zip(
        auto_index.inner_fields(), other.fields["auto_index"].inner_fields(), strict=True
    ):
        assert choice.parent is auto_index and choice.root is schema and copy is not choice
    endpoint = load_section("websockets", {"live": {"path": "/ws"}})["live"]
    assert endpoint.path == "/ws" and endpoint.auth.allow_anonymous is True


# --- simple-websocket / wsproto -----------------------------------------------------------------


def _server_connection(extensions: list) -> WSConnection:
    """A server-side wsproto connection after a handshake offering ``extensions``, the way
    simple-websocket's ``Server`` accepts (it offers ``permessage-deflate`` back)."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/ws", extensions=extensions)))
    request = next(server.events())
    server.send(AcceptConnection(extensions=[PerMessageDeflate()]))
    assert isinstance(request, Request)
    return server


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
def test_a_broadcast_frame_is_what_wsproto_sends_without_compression(size):
    """A broadcast writes :func:`text_frame`'s bytes itself to every connection whose
    handshake offered no compression, instead of asking wsproto per connection: the bytes
    must be the ones wsproto would have written, at every length encoding."""
    text = ("é" if size % 2 else "a") * (size // 2 if size % 2 else size)
    server = _server_connection([])
    assert server.send(TextMessage(data=text)) == text_frame(text)
    assert server.send(TextMessage(data=text)) == text_frame(text)  # no state carried over


def test_a_compressed_connection_gets_its_own_frames():
    """With ``permessage-deflate`` offered (browsers do), simple-websocket's server accepts
    it and wsproto's frames differ: such connections are never given the shared frame."""
    text = "x" * 500
    assert _server_connection([PerMessageDeflate()]).send(TextMessage(data=text)) != text_frame(
        text
    )
    assert "environ" in inspect.signature(simple_websocket.Server.__init__).parameters
    source = inspect.getsource(simple_websocket.Server.__init__)
    assert "self.environ = environ" in source, (
        "simple_websocket.Server no longer keeps the WSGI environ the handshake came with: "
        "flask_mdb/websockets/connection.py reads the offered extensions from it"
    )
    assert "PerMessageDeflate" in inspect.getsource(simple_websocket.ws)


# --- httpx2 --------------------------------------------------------------------------------------


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers any request (a proxy's too: its path is the whole URL) with its path."""

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answering():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _Counting(httpcore2.SyncBackend):
    """httpcore2's own backend, counting the connections it opens, by port."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def connect_tcp(self, host, port, *args, **kwargs):
        self.ports.append(port)
        return super().connect_tcp(host, port, *args, **kwargs)


def _httpx_holder(owner: str):
    if owner == "httpx2.Client":
        return httpx2.Client()
    if owner == "httpx2.HTTPTransport":
        return httpx2.HTTPTransport()
    if owner == "httpcore2.ConnectionPool":
        return httpcore2.ConnectionPool()
    raise AssertionError(f"no holder for {owner}")


@pytest.mark.parametrize(
    ("owner", "name"),
    [(owner, name) for owner, names in httpx_seam.PRIVATES.items() for name in names],
)
def test_each_httpx_private_exists(owner, name):
    assert hasattr(_httpx_holder(owner), name), (
        f"httpx2/httpcore2 no longer has {owner}.{name}: mdb_sync/_httpx_seam.py needs updating"
    )


def test_a_clients_connections_go_through_the_backend_given_direct_and_by_proxy(answering):
    """The backend opens the client's connections: to the server, and through a proxy of
    the environment (the same server here, answering the proxied URL), so a proxied call
    is bounded too."""
    direct = _Counting()
    with httpx2.Client(trust_env=False) as client:
        httpx_seam.use_network_backend(client, direct)
        assert client.get(f"http://127.0.0.1:{answering}/direct").text == "/direct"
    assert direct.ports == [answering]

    proxied = _Counting()
    target = "http://proxied.mdb-sync.invalid/through"
    with httpx2.Client(proxy=f"http://127.0.0.1:{answering}") as client:
        httpx_seam.use_network_backend(client, proxied)
        assert client.get(target).text == target
    assert proxied.ports == [answering]


def test_a_client_without_httpx_pools_is_refused():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    with (
        httpx2.Client(transport=httpx2.WSGITransport(app=app)) as client,
        pytest.raises(TypeError, match="cannot be bounded"),
    ):
        httpx_seam.use_network_backend(client, _Counting())


# --- version ceilings ----------------------------------------------------------------------------

#: Dependencies whose private or fast-moving API the library uses: each must have a ceiling.
CAPPED = (
    "pymongo",
    "marshmallow",
    "flask",
    "werkzeug",
    "flask-login",
    "flask-sock",
    "simple-websocket",
    "pycasbin",
    "authlib",
    "joserfc",
    "openai",
    "httpx2",
    "celery",
    "secantusdb",
)


def _requirements() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    for value in parser["options.extras_require"].values():
        lines += value.splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("%")]


def test_dependencies_have_ceilings_and_the_installed_versions_fit():
    requirements = {req.name.lower(): req for req in _requirements()}
    for name in CAPPED:
        req = requirements[name]
        assert any(spec.operator == "<" for spec in req.specifier), f"{name} has no ceiling"
    for name, req in requirements.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # an extra this environment does not install
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} {req}"
