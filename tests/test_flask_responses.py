"""Responses: the BSON-aware JSON provider, JSON error handlers, the ObjectId URL converter."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from bson import DBRef, Decimal128, ObjectId, Timestamp
from bson.binary import Binary
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask_apps import FAIL_FAST, AppFactory, unreachable_uri, write_manifest
from pymongo.errors import ExecutionTimeout

from flask_mdb import MDB, MDBJSONProvider, db
from mdb_sync import ConfigurationError
from mdb_sync.exceptions import AuthenticationError, AuthorizationError, RateLimitExceeded


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


# --- JSON -----------------------------------------------------------------------------------


def test_bson_values_serialize_when_opted_in(factory):
    app = factory(MDB_APP_SLUG="jsonapp", MDB_JSON_PROVIDER=True)
    oid = ObjectId("6b0427d1b8d0a3c9f2e1a7b4")
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")

    @app.get("/values")
    def values():
        return {
            "oid": oid,
            "naive": dt.datetime(2024, 1, 15, 10, 0, 0, 123000),
            "aware": dt.datetime(2024, 1, 15, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "day": dt.date(2024, 1, 15),
            "dec": Decimal128("1.10"),
            "uuid": Binary.from_uuid(ident),
            "bytes": b"\x00\xff",
            "ref": DBRef("tasks", oid),
            "ts": Timestamp(1700000000, 7),
        }

    assert app.test_client().get("/values").json == {
        "oid": "6b0427d1b8d0a3c9f2e1a7b4",
        "naive": "2024-01-15T10:00:00.123000Z",
        "aware": "2024-01-15T10:00:00Z",
        "day": "2024-01-15",
        "dec": "1.10",
        "uuid": "12345678-1234-5678-1234-567812345678",
        "bytes": "AP8=",
        "ref": {"$ref": "tasks", "$id": "6b0427d1b8d0a3c9f2e1a7b4"},
        "ts": {"t": 1700000000, "i": 7},
    }


def test_documents_read_back_from_the_database_serialize(factory):
    app = factory(MDB_APP_SLUG="jsonapp", MDB_JSON_PROVIDER=True)

    @app.post("/doc")
    def doc():
        inserted = db.docs.insert_one(
            {"when": dt.datetime(2030, 5, 6, 7, 8, 9), "price": Decimal128("19.990")}
        )
        return db.docs.find_one({"_id": inserted.inserted_id})

    body = app.test_client().post("/doc").json
    assert ObjectId.is_valid(body["_id"])
    assert body == {
        "_id": body["_id"],
        "app_id": "jsonapp",
        "when": "2030-05-06T07:08:09Z",
        "price": "19.990",
    }


def test_the_default_provider_is_left_alone_unless_opted_in(factory):
    app = factory(MDB_APP_SLUG="plain")
    assert type(app.json) is DefaultJSONProvider
    with app.app_context(), pytest.raises(TypeError):
        app.json.dumps({"oid": ObjectId()})


def test_a_custom_provider_is_never_replaced_silently(factory):
    class Custom(DefaultJSONProvider):
        pass

    app = Flask("custom")
    app.json = Custom(app)
    app.config.update(factory.config(MDB_JSON_PROVIDER=True))
    with pytest.raises(ConfigurationError, match=r"custom JSON provider .*Custom"):
        MDB(app)
    assert "mdb" not in app.extensions

    class Mine(MDBJSONProvider):
        pass

    app = Flask("mine")
    app.json = Mine(app)
    app.config.update(factory.config(MDB_JSON_PROVIDER=True))
    mdb = MDB(app)
    assert type(app.json) is Mine
    mdb.shutdown(app)


def test_provider_settings_are_kept(factory):
    app = Flask("settings")
    app.json.sort_keys = False
    app.config.update(factory.config(MDB_JSON_PROVIDER=True))
    mdb = MDB(app)
    assert isinstance(app.json, MDBJSONProvider)
    assert app.json.sort_keys is False
    with app.app_context():
        assert app.json.dumps({"b": 1, "a": ObjectId("6b0427d1b8d0a3c9f2e1a7b4")}) == (
            '{"b": 1, "a": "6b0427d1b8d0a3c9f2e1a7b4"}'
        )
    mdb.shutdown(app)


# --- errors ---------------------------------------------------------------------------------


@pytest.fixture
def error_app(factory, tmp_path):
    manifest = write_manifest(
        tmp_path,
        "errs",
        managed_indexes={
            "users": [
                {
                    "type": "regular",
                    "keys": {"email": 1},
                    "name": "email_unique",
                    "options": {"unique": True},
                }
            ]
        },
    )
    app = factory(
        MDB_MANIFESTS=str(manifest),
        MDB_ERROR_HANDLERS=True,
        MDB_QUERY_LIMITS={"max_document_bytes": 2000},
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False
    routes = {
        "where": lambda: db.tasks.find_one({"$where": "sleep(1000)"}),
        "badname": lambda: db["system.users"].find_one(),
        "foreign": lambda: db.tasks.insert_one({"app_id": "someone_else"}),
        "huge": lambda: db.tasks.insert_one({"blob": "x" * 5000}),
        "badid": lambda: db.tasks.find_one({"_id": ObjectId("not-an-id")}),
        "dup": lambda: [db.users.insert_one({"email": "a@example.com"}) for _ in range(2)],
        "ratelimit": _raise(RateLimitExceeded("too many attempts", retry_after=42)),
        "authn": _raise(AuthenticationError("missing token")),
        "authz": _raise(AuthorizationError("role admin required")),
        "timeout": _raise(ExecutionTimeout("operation exceeded time limit", 50)),
    }
    for name, view in routes.items():
        app.add_url_rule(f"/{name}", name, view)
    return app


def _raise(exc):
    def view():
        raise exc

    return view


@pytest.mark.parametrize(
    ("path", "status", "kind", "message"),
    [
        ("/where", 400, "QueryValidationError", "$where"),
        ("/badname", 400, "InvalidCollectionName", "system.users"),
        ("/foreign", 403, "ScopeError", "someone_else"),
        ("/huge", 413, "ResourceLimitExceeded", "exceeds the limit of 2000 bytes"),
        ("/badid", 400, "InvalidId", "not-an-id"),
        ("/dup", 409, "DuplicateKeyError", "same unique key already exists"),
        ("/ratelimit", 429, "RateLimitExceeded", "too many attempts"),
        ("/authn", 401, "AuthenticationError", "missing token"),
        ("/authz", 403, "AuthorizationError", "role admin required"),
        ("/timeout", 504, "ExecutionTimeout", "timed out"),
    ],
)
def test_engine_errors_map_to_json_statuses(error_app, path, status, kind, message):
    response = error_app.test_client().get(path)
    assert response.status_code == status
    error = response.json["error"]
    assert error["status"] == status
    assert error["type"] == kind
    assert message in error["message"]
    if path == "/dup":
        assert "a@example.com" not in response.get_data(as_text=True)
    if path == "/ratelimit":
        assert response.headers["Retry-After"] == "42"


def test_no_app_bound_maps_to_404(factory):
    app = factory(MDB_ERROR_HANDLERS=True)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/t", "t", lambda: str(db.tasks.find_one()))
    response = app.test_client().get("/t")
    assert response.status_code == 404
    assert response.json["error"]["type"] == "AppNotBoundError"


def test_an_unreachable_server_is_503_and_says_nothing_about_it(factory):
    app = factory(
        MDB_MONGO_URI=unreachable_uri("user:s3cret@"),
        MDB_CLIENT_OPTIONS=FAIL_FAST,
        MDB_APP_SLUG="down",
        MDB_ERROR_HANDLERS=True,
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/t", "t", lambda: str(db.tasks.find_one()))
    response = app.test_client().get("/t")
    assert response.status_code == 503
    assert response.json["error"] == {
        "status": 503,
        "type": "EngineConnectionError",
        "message": "the database is unavailable; retry later",
    }
    assert "s3cret" not in response.get_data(as_text=True)


def test_engine_errors_are_always_answered_pymongos_on_request(factory):
    app = factory(MDB_APP_SLUG="noerr")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/t", "t", lambda: str(db.tasks.find_one({"$where": "1"})))
    app.add_url_rule("/d", "d", lambda: [db.d.insert_one({"_id": 1}) for _ in range(2)] and "")
    client = app.test_client()
    response = client.get("/t")
    assert response.status_code == 400
    assert response.json["error"]["type"] == "QueryValidationError"
    duplicate = client.get("/d")  # pymongo's: MDB_ERROR_HANDLERS is off
    assert duplicate.status_code == 500
    assert not duplicate.is_json


def test_the_apps_own_handlers_win(factory):
    from mdb_sync import MongoDBEngineError, QueryValidationError

    app = Flask("own")
    app.config.update(factory.config(MDB_APP_SLUG="own", MDB_ERROR_HANDLERS=True))
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.register_error_handler(MongoDBEngineError, lambda e: ("mine", 599))
    mdb = MDB(app)
    app.register_error_handler(QueryValidationError, lambda e: ("specific", 422))
    app.add_url_rule("/q", "q", lambda: str(db.tasks.find_one({"$where": "1"})))
    app.add_url_rule("/s", "s", lambda: str(db.tasks.insert_one({"app_id": "x"})))
    client = app.test_client()
    assert (client.get("/q").status_code, client.get("/q").text) == (422, "specific")
    assert (client.get("/s").status_code, client.get("/s").text) == (599, "mine")
    mdb.shutdown(app)


# --- URL converter --------------------------------------------------------------------------


def test_objectid_url_converter(factory):
    app = factory(MDB_APP_SLUG="conv")

    @app.get("/tasks/<objectid:task_id>")
    def task(task_id):
        assert isinstance(task_id, ObjectId)
        return {"id": str(task_id)}

    client = app.test_client()
    oid = "6b0427d1b8d0a3c9f2e1a7b4"
    assert client.get(f"/tasks/{oid}").json == {"id": oid}
    assert client.get("/tasks/not-an-object-id").status_code == 404
    with app.test_request_context():
        from flask import url_for

        assert url_for("task", task_id=ObjectId(oid)) == f"/tasks/{oid}"


def test_the_slug_proxy_serializes(factory):
    from flask_mdb import current_app_slug

    app = factory(MDB_APP_SLUG="proxied", MDB_JSON_PROVIDER=True)
    app.add_url_rule("/slug", "slug", lambda: {"app": current_app_slug})
    assert app.test_client().get("/slug").json == {"app": "proxied"}
