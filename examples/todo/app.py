"""A todo app on flask_mdb: three apps ("spaces") served by one Flask process, with sign-in.

``/work/``, ``/home/`` and ``/team/`` are mdb-sync apps, ``todo_work``, ``todo_home`` and
``todo_team``, each with its own manifest in ``manifests/``. A resolver picks the app from
the URL's first segment, so every request is bound to one app and ``db`` is that app's
sandboxed database: a task added at ``/work/`` is stored in ``todo_work_tasks`` with
``app_id: "todo_work"`` and can never appear at ``/home/``. An unknown space (``/nope/``) is
a 404.

Every space requires signing in (``auth.policy.required``). They share one account store
(``global_users``) with roles per space, and each keeps its own session cookie: an account
signs in to work and home separately (the team space rides on the work sign-in, below).
Every task belongs to the account that created it — nobody sees or changes anyone else's
tasks — and ``/<space>/admin`` lists the space's accounts for its admins only. On first
start the work space gets an admin, ``admin@example.com`` (an admin at work, a plain user
at home), whose password is ``$TODO_ADMIN_PASSWORD`` or, if that is unset, a random one
printed once — never a fixed password that would open every fresh deployment.

Run it on the embedded database (no MongoDB needed; data in ``./.mdb``)::

    python examples/todo/app.py          # http://127.0.0.1:5000  (PORT=... to change)

or on a real server with ``MDB_MONGO_URI=mongodb://...``. Set ``SECRET_KEY`` and
``MDB_JWT_SECRET`` (32+ random bytes each) to keep sessions and tokens valid across restarts;
without them this example makes random ones at startup (the library itself never does).
``/health`` and ``/metrics`` are on.

**Live updates.** Each space's manifest declares a websocket endpoint (``/work/live``,
``/home/live``) for signed-in users; every change to a task is sent to its owner's open pages,
which refresh their list — whichever browser made the change, and whichever process: another
web worker, a script, or the Celery worker of ``jobs.py``::

    mdb embedded start                   # one server for the web app and the worker
    export MDB_MONGO_URI='mongodb://127.0.0.1:PORT/?retryWrites=false&directConnection=true'
    export SECRET_KEY=... MDB_JWT_SECRET=...   # 32+ random bytes each, shared by both
    python examples/todo/app.py &
    cd examples/todo && celery -A jobs worker -P solo &
    python -c "import jobs; jobs.add_task_job.delay('work', 'admin@example.com', 'From Celery')"

**One sign-in for two apps.** A third space, ``/team/`` (``todo_team``), shares the work
space's sign-on (``auth.mode: "shared"``: ``todo_work`` is the hub and lists ``todo_team`` in
``related_apps``; ``todo_team`` names it with ``auth_hub_url``). Someone signed in at work who
opens ``/team/`` is sent through the work space and comes back signed in — the team space
gets its own session, its own roles (``member``/``lead``) and its own tokens, through a
single-use hand-off. "Sign out everywhere" on the team page ends the work session too. The
manifests name the apps' public addresses (``http://127.0.0.1:5000``); this process writes
copies with ``MDB_EXTERNAL_URL`` (default: ``http://127.0.0.1:$PORT``) instead.

**Sign in with an OpenID Connect provider.** With ``TODO_OIDC_ISSUER`` set, each space's
sign-in page also offers "Sign in with <TODO_OIDC_LABEL>" (``auth.oauth`` is added to the
manifests this process loads; without it the example runs as before, needing no provider)::

    export TODO_OIDC_ISSUER=https://id.example.com TODO_OIDC_CLIENT_ID=todo
    export TODO_OIDC_CLIENT_SECRET=...      # the client secret, never in a manifest
    export TODO_OIDC_LABEL="Example ID"     # the button's name (default "SSO")
    export MDB_EXTERNAL_URL=http://127.0.0.1:5000   # the callbacks' public address

and register ``<MDB_EXTERNAL_URL>/work/auth/oauth/sso/callback`` and
``<MDB_EXTERNAL_URL>/home/auth/oauth/sso/callback`` as the client's redirect URIs at the
provider. ``TODO_OIDC_TRUST_EMAIL=1`` trusts the provider's verified e-mail addresses (an
account with that address is then signed in; otherwise accounts are keyed by the provider's
subject only).
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for

from flask_mdb import MDB, current_app_slug, db, get_current_db, send_to_user
from flask_mdb.auth import current_service, get_current_user, public, require_role
from mdb_sync import ScopedDatabase
from mdb_sync.exceptions import UserExistsError

HERE = Path(__file__).resolve().parent
SLUG_PREFIX = "todo_"
MAX_TITLE = 200
ADMIN_EMAIL = "admin@example.com"
#: The public address the shipped manifests name (see prepared_manifests).
SHIPPED_URL = "http://127.0.0.1:5000"

mdb = MDB()
todo = Blueprint("todo", __name__, url_prefix="/<space>")


def space_resolver(req: Any) -> str | None:
    """``/work/...`` -> ``todo_work``; pages outside a space are not bound to any app."""
    space = (req.view_args or {}).get("space")
    return f"{SLUG_PREFIX}{space}" if space else None


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, root_path=str(HERE))
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
        MDB_JWT_SECRET=os.environ.get("MDB_JWT_SECRET") or secrets.token_urlsafe(48),
        MDB_DB_NAME=os.environ.get("MDB_DB_NAME", "todo_example"),
        MDB_MANIFESTS=str(HERE / "manifests"),
        MDB_APP_RESOLVER=space_resolver,
        MDB_AUTH_URL_PREFIX="/<space>/auth",  # each space signs in on its own pages
        MDB_JSON_PROVIDER=True,
        MDB_ERROR_HANDLERS=True,
        MDB_HEALTH_URL="/health",
        MDB_METRICS_URL="/metrics",
    )
    app.config.update(config or {})
    port = os.environ.get("PORT", "5000")
    base = app.config.get("MDB_EXTERNAL_URL") or os.environ.get("MDB_EXTERNAL_URL")
    app.config["MDB_EXTERNAL_URL"] = base = base or f"http://127.0.0.1:{port}"
    app.config["MDB_MANIFESTS"] = prepared_manifests(
        app.config["MDB_MANIFESTS"], base, os.environ.get("TODO_OIDC_ISSUER")
    )
    mdb.init_app(app)
    app.register_blueprint(todo)
    app.add_url_rule("/", "index", index)
    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    return app


def ensure_admin(app: Flask) -> str | None:
    """Create the work space's admin account if it does not exist yet. Its password is
    ``TODO_ADMIN_PASSWORD`` (config or environment); without one a random password is made
    and returned, for the caller to show once. None when nothing was generated."""
    password = app.config.get("TODO_ADMIN_PASSWORD") or os.environ.get("TODO_ADMIN_PASSWORD")
    generated = None if password else secrets.token_urlsafe(12)
    with app.app_context(), mdb.bind(f"{SLUG_PREFIX}work", app):
        auth = current_service()
        assert auth is not None
        if auth.get_user_by_email(ADMIN_EMAIL) is not None:
            return None
        try:
            auth.create_user(ADMIN_EMAIL, password or generated, roles=["admin"])
        except UserExistsError:  # another process created it meanwhile
            return None
    return generated


def prepared_manifests(manifests: Any, base: str, issuer: str | None = None) -> str:
    """Copies of the ``manifests`` directory's manifests, in a temporary directory, naming
    the spaces' public address ``base`` (the shipped files say ``http://127.0.0.1:5000``)
    and, with ``issuer``, offering sign-in through that OpenID Connect provider
    (``TODO_OIDC_*``)."""
    out = Path(tempfile.mkdtemp(prefix="todo-manifests-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    provider = {
        "issuer": issuer,
        "client_id": os.environ.get("TODO_OIDC_CLIENT_ID", "todo"),
        "client_secret_env": "TODO_OIDC_CLIENT_SECRET",
        "label": os.environ.get("TODO_OIDC_LABEL", "SSO"),
        "trust_email": os.environ.get("TODO_OIDC_TRUST_EMAIL") == "1",
    }
    for path in sorted(Path(manifests).glob("*.json")):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        auth = manifest["auth"]
        if "auth_hub_url" in auth:
            auth["auth_hub_url"] = auth["auth_hub_url"].replace(SHIPPED_URL, base.rstrip("/"))
        auth["related_apps"] = {
            slug: url.replace(SHIPPED_URL, base.rstrip("/"))
            for slug, url in (auth.get("related_apps") or {}).items()
        }
        if not auth["related_apps"]:
            del auth["related_apps"]
        if issuer:
            auth["oauth"] = {"providers": {"sso": provider}}
        (out / path.name).write_text(json.dumps(manifest), encoding="utf-8")
    return str(out)


def index() -> str:
    spaces = [
        {"space": m["slug"][len(SLUG_PREFIX) :], "name": m.get("name", m["slug"])}
        for m in mdb.engine.list_apps(status="active")
        if m["slug"].startswith(SLUG_PREFIX)
    ]
    return render_template("index.html", spaces=spaces)


# --- the signed-in user's tasks in the bound app --------------------------------------------


def _owner() -> str:
    user = get_current_user()
    assert user is not None  # the manifest's policy lets no anonymous request through
    return user.id


def clean_title(title: Any) -> str:
    """A task title, or ValueError saying what is wrong with it."""
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title: a non-empty string is required")
    title = title.strip()
    if len(title) > MAX_TITLE:
        raise ValueError(f"title: at most {MAX_TITLE} characters")
    return title


def _title(payload: Any) -> str:
    try:
        return clean_title(payload.get("title") if isinstance(payload, dict) else None)
    except ValueError as exc:
        abort(400, description=str(exc))


def _tasks() -> list[dict[str, Any]]:
    return db.tasks.find({"owner_id": _owner()}).sort("created_at", -1).limit(500).to_list()


def announce(slug: str, owner_id: str, action: str, task: Any = None, **extra: Any) -> None:
    """Tell the owner's open pages of ``slug`` — in any process — that their tasks changed."""
    message = {"type": "tasks.changed", "action": action, "task": task, **extra}
    send_to_user(slug, owner_id, message)


def add_task(database: ScopedDatabase, owner_id: str, title: str) -> dict[str, Any]:
    """Store a task of ``owner_id`` in ``database`` (a space's sandbox) and announce it. Used
    by the views and by the Celery job (``jobs.py``)."""
    task = {
        "title": clean_title(title),
        "done": False,
        "owner_id": owner_id,
        "created_at": dt.datetime.now(dt.timezone.utc),
    }
    task["_id"] = database.tasks.insert_one(task).inserted_id
    announce(database.app_slug, owner_id, "added", task)
    return task


def _add(title: str) -> dict[str, Any]:
    return add_task(get_current_db(), _owner(), title)


@todo.get("/")
def page(space: str) -> str:
    manifest = mdb.engine.get_app(str(current_app_slug)) or {}
    live = (manifest.get("websockets") or {}).get("live", {}).get("path")
    return render_template(
        "tasks.html",
        space=space,
        name=manifest.get("name", space),
        tasks=_tasks(),
        live=live,
        shared=(manifest.get("auth") or {}).get("mode") == "shared",
        user=get_current_user(),
        is_admin="admin" in get_current_user().roles,  # type: ignore[union-attr]
    )


@todo.post("/tasks")
def add_form(space: str) -> Any:
    """The form's own target, for browsers without JavaScript."""
    _add(_title(request.form))
    return redirect(url_for("todo.page", space=space), 303)


@todo.get("/api/tasks")
def list_tasks(space: str) -> Any:
    return {"app": str(current_app_slug), "tasks": _tasks()}


@todo.post("/api/tasks")
def create_task(space: str) -> Any:
    return {"task": _add(_title(request.get_json(silent=True)))}, 201


@todo.patch("/api/tasks/<objectid:task_id>")
def update_task(space: str, task_id: Any) -> Any:
    payload = request.get_json(silent=True)
    changes: dict[str, Any] = {}
    if isinstance(payload, dict) and "done" in payload:
        if not isinstance(payload["done"], bool):
            abort(400, description="done: true or false")
        changes["done"] = payload["done"]
    if isinstance(payload, dict) and "title" in payload:
        changes["title"] = _title(payload)
    if not changes:
        abort(400, description="nothing to change: send done and/or title")
    mine = {"_id": task_id, "owner_id": _owner()}
    if db.tasks.update_one(mine, {"$set": changes}).matched_count == 0:
        abort(404, description="no such task")
    task = db.tasks.find_one(mine)
    announce(str(current_app_slug), _owner(), "updated", task)
    return {"task": task}


@todo.delete("/api/tasks/<objectid:task_id>")
def delete_task(space: str, task_id: Any) -> Any:
    if db.tasks.delete_one({"_id": task_id, "owner_id": _owner()}).deleted_count == 0:
        abort(404, description="no such task")
    announce(str(current_app_slug), _owner(), "deleted", task_id=task_id)
    return "", 204


@todo.get("/admin")
@require_role("admin")
def admin(space: str) -> str:
    """The space's accounts and how many tasks each has: admins of this space only."""
    counts = {
        row["_id"]: row["n"]
        for row in db.tasks.aggregate([{"$group": {"_id": "$owner_id", "n": {"$sum": 1}}}])
    }
    auth = current_service()
    assert auth is not None
    users = [
        {"email": u["email"], "roles": u["roles"], "tasks": counts.get(u["user_id"], 0)}
        for u in auth.list_users()
    ]
    return render_template("admin.html", space=space, users=users)


@todo.get("/about")
@public
def about(space: str) -> str:
    return render_template("about.html", space=space)


@todo.errorhandler(400)
@todo.errorhandler(404)
def json_error(error: Any) -> Any:
    if request.path.split("/")[2:3] == ["api"]:
        body = {"status": error.code, "type": error.name, "message": error.description}
        return {"error": body}, error.code
    return error


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    application = create_app()
    made = ensure_admin(application)
    if made is not None:
        print(f"created the work space's admin: {ADMIN_EMAIL} / {made}  (shown once)", flush=True)
    print(f"todo example on http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)
    application.run(host="127.0.0.1", port=port, threaded=True)
