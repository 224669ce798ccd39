"""flask_mdb: the Flask extension of mdb-sync.

::

    from flask import Flask
    from flask_mdb import MDB, db

    mdb = MDB()

    def create_app():
        app = Flask(__name__)
        app.config["MDB_MANIFESTS"] = "manifest.json"   # registered on first use
        mdb.init_app(app)
        return app

    @bp.get("/tasks")
    def tasks():
        return {"tasks": db.tasks.find({}).to_list(100)}   # the request's app, sandboxed

``db`` is a proxy; :func:`get_current_db` returns the scoped database behind it, for code
that keeps it (a helper, a thread). Flask-PyMongo's shortcuts are here too:
:func:`find_one_or_404`, and :func:`send_file` / :func:`save_file` for GridFS.
"""

from .auth import (
    get_current_user,
    login_required,
    require_permission,
    require_role,
    setup_auth_from_manifest,
)
from .binding import (
    AppNotBoundError,
    current_app_slug,
    db,
    get_current_app_slug,
    get_current_db,
)
from .cors import CorsPolicy
from .errors import MDBHTTPError, error_response, http_error, register_error_handlers
from .extension import MDB, ObjectIdConverter
from .files import save_file, send_file
from .json import MDBJSONProvider, bson_default
from .lookups import find_one_or_404
from .signals import app_bound
from .websockets import (
    Connection,
    MessageError,
    broadcast_to_app,
    broadcast_to_channel,
    get_websocket_manager,
    register_connect_handler,
    register_disconnect_handler,
    register_message_handler,
    send_to_user,
)

__all__ = [
    "MDB",
    "AppNotBoundError",
    "Connection",
    "CorsPolicy",
    "MDBHTTPError",
    "MDBJSONProvider",
    "MessageError",
    "ObjectIdConverter",
    "app_bound",
    "broadcast_to_app",
    "broadcast_to_channel",
    "bson_default",
    "current_app_slug",
    "db",
    "error_response",
    "find_one_or_404",
    "get_current_app_slug",
    "get_current_db",
    "get_current_user",
    "get_websocket_manager",
    "http_error",
    "login_required",
    "register_connect_handler",
    "register_disconnect_handler",
    "register_error_handlers",
    "register_message_handler",
    "require_permission",
    "require_role",
    "save_file",
    "send_file",
    "send_to_user",
    "setup_auth_from_manifest",
]
