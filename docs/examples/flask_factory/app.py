"""A Flask app on flask_mdb, in the application-factory shape: one request, one app's
sandboxed database. Run it with ``flask --app app run`` from this directory (the embedded
server, or ``MDB_MONGO_URI``); ``tests/test_docs_examples.py`` runs it with the real
``flask`` command and over HTTP."""

from __future__ import annotations

import datetime as dt
import threading

from flask import Blueprint, Flask, request

from flask_mdb import MDB, db, find_one_or_404, get_current_app_slug, get_current_db

mdb = MDB()  # MDB(engine=...) to share one engine between Flask apps
bp = Blueprint("tasks", __name__)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MDB_MANIFESTS"] = "manifests/"  # relative to app.root_path; registered on first use
    app.config["MDB_APP_SLUG"] = "my_app"  # the app of every request (one manifest: its slug)
    app.config["MDB_JSON_PROVIDER"] = True  # ObjectId and datetime in JSON responses
    mdb.init_app(app)
    app.register_blueprint(bp)
    return app


@bp.post("/tasks")
def add_task():
    task = {"title": request.json["title"], "created_at": dt.datetime.now(dt.timezone.utc)}
    db.tasks.insert_one(task)  # the collection my_app_tasks, with app_id="my_app"
    archive_later(get_current_db(), task["_id"])  # the real database, not the proxy
    return {"app": get_current_app_slug(), "id": task["_id"]}, 201


@bp.get("/tasks/<objectid:task_id>")
def show_task(task_id):
    return find_one_or_404(db.tasks, task_id)  # 404 for another app's id, as for a missing one


@bp.get("/tasks")
def list_tasks():
    return {"tasks": db.tasks.find({}, {"_id": 0, "title": 1}).sort("created_at", -1).to_list()}


def archive_later(scoped_db, task_id) -> threading.Thread:
    """Work that outlives the request gets the request's database itself: ``db`` is a
    proxy, bound to the request, which is over when the thread runs."""

    def work() -> None:
        scoped_db.tasks.update_one({"_id": task_id}, {"$set": {"seen_by_worker": True}})

    thread = threading.Thread(target=work)
    thread.start()
    return thread
