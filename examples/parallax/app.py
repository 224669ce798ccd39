"""Parallax: an app's collections from two angles — the documents, and the schema they imply.

Pick a collection: a sample of its documents (``$sample`` through the sandbox) gives a JSON
Schema — the types of every field, the fields every document has (``required``), enums for
small sets of labels — shown as a table and as JSON you can edit. A dry run lists the stored
documents the schema would refuse, and why; applying it makes it the collection's
``$jsonSchema`` validator *through the app's manifest* (``collection_settings``, then the
registration applies it to the app's own collection, as ``mdb schema apply`` does). Then try
to add a document that breaks it: the server refuses it.

The app manages its own collections (``products`` and ``reviews`` are seeded by the
manifest's ``initial_data``): a schema tool is still an app in the sandbox. For any app's
collection use the command line: ``mdb schema infer|apply APP COLLECTION``.

Changing a validator can stop an app from writing, so sign-in is required and changes are
for the ``admin`` role (viewers may infer and dry-run). On first start the admin account
``admin@example.com`` is created with the password ``$PARALLAX_ADMIN_PASSWORD`` or, without
one, a random password printed once. Run it on the embedded database::

    python examples/parallax/app.py          # http://127.0.0.1:5004  (PORT=... to change)
    flask --app examples/parallax/app.py run

Set ``SECRET_KEY`` (32+ random bytes) to keep sign-ins valid across restarts.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from bson import ObjectId
from flask import Flask, abort, render_template, request
from pymongo.errors import WriteError
from werkzeug.exceptions import HTTPException

from flask_mdb import MDB, db
from flask_mdb.auth import current_service, get_current_user, require_role
from mdb_sync.exceptions import SchemaError, UserExistsError
from mdb_sync.schema import (
    DEFAULT_ENUM_MAX_VALUES,
    DEFAULT_SAMPLE_SIZE,
    MAX_SAMPLE_SIZE,
    VALIDATION_ACTIONS,
    VALIDATION_LEVELS,
    apply_schema,
    current_validator,
    explain,
    infer,
    remove_schema,
    validate_documents,
)

HERE = Path(__file__).resolve().parent
SLUG = "parallax"
ADMIN_EMAIL = "admin@example.com"
MAX_DOCUMENT_BYTES = 16 * 1024
DOCUMENT_VALIDATION_FAILURE = 121

mdb = MDB()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, root_path=str(HERE))
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
        MDB_DB_NAME=os.environ.get("MDB_DB_NAME", "parallax_example"),
        MDB_MANIFESTS=str(HERE / "manifest.json"),
        MDB_JSON_PROVIDER=True,
        MDB_ERROR_HANDLERS=True,
        MDB_HEALTH_URL="/health",
        MAX_CONTENT_LENGTH=512 * 1024,
    )
    app.config.update(config or {})
    mdb.init_app(app)
    app.add_url_rule("/", "index", index)
    api = "/api/collections"
    app.add_url_rule(api, "collections", collections)
    app.add_url_rule(f"{api}/<name>/infer", "infer", infer_view, methods=["POST"])
    app.add_url_rule(f"{api}/<name>/dry-run", "dry_run", dry_run, methods=["POST"])
    app.add_url_rule(f"{api}/<name>/validator", "validator", validator)
    app.add_url_rule(f"{api}/<name>/validator", "apply", apply, methods=["PUT"])
    app.add_url_rule(f"{api}/<name>/validator", "remove", remove, methods=["DELETE"])
    app.add_url_rule(f"{api}/<name>/documents", "insert", insert, methods=["POST"])
    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    app.register_error_handler(HTTPException, json_error)
    return app


def ensure_admin(app: Flask) -> str | None:
    """Create the admin account if it does not exist yet, with ``PARALLAX_ADMIN_PASSWORD``
    (config or environment) or a random password, which is returned to be shown once."""
    password = app.config.get("PARALLAX_ADMIN_PASSWORD") or os.environ.get(
        "PARALLAX_ADMIN_PASSWORD"
    )
    generated = None if password else secrets.token_urlsafe(12)
    with app.app_context(), mdb.bind(SLUG, app):
        auth = current_service()
        assert auth is not None
        if auth.get_user_by_email(ADMIN_EMAIL) is not None:
            return None
        try:
            auth.create_user(ADMIN_EMAIL, password or generated, roles=["admin"])
        except UserExistsError:  # another process created it meanwhile
            return None
    return generated


def json_error(error: HTTPException) -> Any:
    if request.path.startswith("/api/"):
        body = {"status": error.code, "type": error.name, "message": error.description}
        return {"error": body}, error.code
    return error


def _is_admin() -> bool:
    user = get_current_user()
    return user is not None and "admin" in user.roles


def _auth_collections() -> set[str]:
    """The collections the library's sign-in keeps in this app's sandbox (accounts with
    their password hashes, role policies, the audit log): not data to browse or change."""
    auth = current_service()
    if auth is None:
        return set()
    names = {auth.config.users_collection, auth.config.policies_collection}
    return names | ({auth.config.audit_collection} if auth.config.audit_collection else set())


def _collection(name: str) -> Any:
    """The app's data collection ``name`` (404 for the sign-in's own collections)."""
    if name in _auth_collections():
        abort(404, description=f"{name!r} belongs to the sign-in, not to the app's data")
    return db[name]


def _collections() -> list[dict[str, Any]]:
    hidden = _auth_collections()
    return [
        {
            "name": name,
            "documents": db[name].count_documents({}),
            "validator": current_validator(db[name]) is not None,
        }
        for name in sorted(db.list_collection_names())
        if name not in hidden
    ]


def index() -> str:
    user = get_current_user()  # the manifest's policy sends anonymous visitors to sign in
    return render_template(
        "index.html",
        user=user,
        admin=_is_admin(),
        collections=_collections(),
        defaults={
            "sample_size": DEFAULT_SAMPLE_SIZE,
            "max_sample_size": MAX_SAMPLE_SIZE,
            "enum_max": DEFAULT_ENUM_MAX_VALUES,
        },
        levels=VALIDATION_LEVELS,
        actions=VALIDATION_ACTIONS,
    )


# --- the JSON API ---------------------------------------------------------------------------------


def _payload() -> dict[str, Any]:
    if not request.is_json:
        abort(415, description="send JSON (Content-Type: application/json)")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        abort(400, description="the body must be a JSON object")
    return payload


def _schema(payload: dict[str, Any]) -> Any:
    schema = payload.get("schema")
    if not isinstance(schema, dict) or not schema:
        abort(400, description="schema: a JSON object is required")
    return schema


def _int(payload: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        abort(400, description=f"{key}: a whole number between {low} and {high}")
    return value


def collections() -> Any:
    return {"collections": _collections()}


def infer_view(name: str) -> Any:
    payload = _payload()
    sample_size = _int(payload, "sample_size", DEFAULT_SAMPLE_SIZE, 1, MAX_SAMPLE_SIZE)
    enum_max = _int(payload, "enum_max", DEFAULT_ENUM_MAX_VALUES, 0, 100)
    closed = payload.get("closed", False) is True
    collection = _collection(name)
    return infer(collection, sample_size, enum_max_values=enum_max, closed=closed).as_dict()


def dry_run(name: str) -> Any:
    return validate_documents(_collection(name), _schema(_payload())).as_dict()


def validator(name: str) -> Any:
    """What the server enforces, and the block that keeps it in ``manifest.json``."""
    collection = _collection(name)
    settings = (mdb.engine.get_app(SLUG) or {}).get("collection_settings") or {}
    declared = settings.get(name)
    return {
        "collection": name,
        "validator": current_validator(collection),
        "manifest": {"collection_settings": {name: declared}} if declared else None,
    }


@require_role("admin")
def apply(name: str) -> Any:
    """``{"schema", "level", "action", "force"}``: a dry run, then the manifest. 409 with the
    dry run's report when stored documents would fail and ``force`` is not true."""
    _collection(name)
    payload = _payload()
    schema = _schema(payload)
    level, action = payload.get("level", "strict"), payload.get("action", "error")
    if level not in VALIDATION_LEVELS or action not in VALIDATION_ACTIONS:
        abort(400, description="level: strict or moderate; action: error or warn")
    try:
        result = apply_schema(
            mdb.engine,
            SLUG,
            name,
            schema,
            level=level,
            action=action,
            allow_invalid=payload.get("force") is True,
        )
    except SchemaError as exc:
        if "report" not in exc.context:
            raise
        message = {"status": 409, "type": "Conflict", "message": str(exc)}
        return {"error": message, "report": exc.context["report"]}, 409
    return {**result, **validator(name)}


@require_role("admin")
def remove(name: str) -> Any:
    _collection(name)
    remove_schema(mdb.engine, SLUG, name)
    return validator(name)


@require_role("admin")
def insert(name: str) -> Any:
    """``{"document": {...}}``: stored if the collection's validator accepts it (else the
    server's refusal, 400)."""
    document = _payload().get("document")
    if not isinstance(document, dict):
        abort(400, description="document: a JSON object is required")
    if len(json.dumps(document)) > MAX_DOCUMENT_BYTES:
        abort(400, description=f"document: at most {MAX_DOCUMENT_BYTES // 1024} KB here")
    collection = _collection(name)
    try:
        return {"_id": collection.insert_one(document).inserted_id}, 201
    except WriteError as exc:
        if exc.code != DOCUMENT_VALIDATION_FAILURE:
            raise
        enforced = (current_validator(collection) or {}).get("$jsonSchema") or {}
        stored = {"_id": ObjectId(), **document}  # as the driver sends it
        reasons = "; ".join(explain(stored, enforced)) or "it fails the validator"
        abort(400, description=f"the collection's validator refuses it: {reasons}")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5004"))
    application = create_app()
    made = ensure_admin(application)
    if made is not None:
        print(f"created the admin account: {ADMIN_EMAIL} / {made}  (shown once)", flush=True)
    print(f"parallax on http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        application.run(host="127.0.0.1", port=port, threaded=True)
    finally:
        mdb.shutdown(application)
