"""Index operations for people: list, sync and suggest (``mdb indexes ...``), and the index
check of the engine's health.

All of them work on registered apps and their physical collections; none hands out a raw
collection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from ..exceptions import AppNotFoundError
from ..scoping.names import logical_name, physical_name
from .auto import SHAPES_COLLECTION, Shape, _usable, auto_index_name, serves
from .declared import (
    DEFAULT_SEARCH_TIMEOUT,
    PROBLEM_STATUSES,
    classify,
    ensure_declared_indexes,
    error_message,
)
from .spec import AUTO_PREFIX

if TYPE_CHECKING:
    from ..engine import MongoDBEngine


def _apps(engine: MongoDBEngine, slug: str | None) -> list[str]:
    if slug is None:
        return engine.registry.slugs()
    if engine.registry.get_record(slug) is None:
        raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
    return [slug]


def app_collections(engine: MongoDBEngine, slug: str) -> list[str]:
    """Logical names of the collections ``slug`` has on the server."""
    names = engine.storage.database().list_collection_names(
        filter={"name": {"$regex": f"^{slug}_"}}
    )
    out = []
    for physical in names:
        if engine.registry.slug_for_physical(physical) == slug:
            name = logical_name(slug, physical)
            if name:
                out.append(name)
    return sorted(out)


def list_indexes(engine: MongoDBEngine, slug: str | None = None) -> list[dict[str, Any]]:
    """Every index of the registered apps (or of ``slug``): where it comes from
    (``declared``, ``auto``, ``builtin`` or ``other``) and, for declared ones, the outcome of
    the last reconciliation — including declared indexes that do not exist."""
    rows: list[dict[str, Any]] = []
    for app in _apps(engine, slug):
        record = engine.registry.get_record(app) or {}
        outcomes = {(o["collection"], o["name"]): o for o in record.get("index_outcomes") or []}
        collections = set(app_collections(engine, app)) | {c for c, _ in outcomes}
        for coll in sorted(collections):
            raw = engine.storage.collection(physical_name(app, coll))
            seen = set()
            for name, info in raw.index_information().items():
                seen.add(name)
                declared = outcomes.get((coll, name))
                origin = (
                    "builtin"
                    if name == "_id_"
                    else "auto"
                    if name.startswith(AUTO_PREFIX)
                    else "declared"
                    if declared
                    else "other"
                )
                row = {
                    "slug": app,
                    "collection": coll,
                    "name": name,
                    "keys": [[k, v] for k, v in info.get("key", [])],
                    "origin": origin,
                    "status": declared["status"] if declared else "exists",
                }
                options = {k: v for k, v in info.items() if k not in ("key", "v", "ns")}
                if options:
                    row["options"] = options
                rows.append(row)
            for (c, name), outcome in outcomes.items():
                if c == coll and name not in seen:
                    rows.append({"slug": app, "origin": "declared", **outcome})
    return rows


def sync_indexes(
    engine: MongoDBEngine,
    slug: str | None = None,
    *,
    replace: bool = False,
    search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
) -> dict[str, list[dict[str, Any]]]:
    """Reconcile the declared indexes of the registered apps (or ``slug``) again, retrying
    indexes reported unsupported before; store and return the outcomes by app."""
    results: dict[str, list[dict[str, Any]]] = {}
    for app in _apps(engine, slug):
        manifest = engine.registry.get_manifest(app) or {}
        outcomes = ensure_declared_indexes(
            engine,
            app,
            manifest.get("managed_indexes") or {},
            replace=replace,
            search_timeout=search_timeout,
        )
        engine.catalog.update(app, {}, {"$set": {"index_outcomes": outcomes}})
        engine.catalog.get(app, refresh=True)
        results[app] = outcomes
    return results


def suggest_indexes(
    engine: MongoDBEngine, slug: str | None = None, *, min_count: int = 1
) -> list[dict[str, Any]]:
    """Indexes the observed queries would like: every saved (and this process's) query
    shape with its ESR keys, how often it was seen, and whether an index already serves it
    (``served``) or not (``suggested``)."""
    apps = set(_apps(engine, slug))
    engine.auto_indexes.flush()
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    query: dict[str, Any] = {"slug": {"$in": sorted(apps)}}
    for doc in engine.storage.system(SHAPES_COLLECTION).find(query):
        keys = [tuple(k) for k in doc["keys"]]
        shape: Shape = (
            tuple(doc["shape"][0]),
            tuple((f, int(d)) for f, d in doc["shape"][1]),
            tuple(doc["shape"][2]),
        )
        merged[(doc["slug"], doc["collection"], auto_index_name(keys))] = {
            "slug": doc["slug"],
            "collection": doc["collection"],
            "keys": [list(k) for k in keys],
            "count": int(doc.get("count", 0)),
            "_shape": shape,
        }
    rows = []
    indexes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in sorted(merged.values(), key=lambda r: (-r["count"], r["slug"], r["collection"])):
        if row["count"] < min_count:
            continue
        where = (row["slug"], row["collection"])
        if where not in indexes:
            raw = engine.storage.collection(physical_name(*where))
            indexes[where] = list(raw.index_information().values())
        keys = [tuple(k) for k in row["keys"]]
        served = any(
            _usable(info) and serves(list(info.get("key", [])), keys, row["_shape"])
            for info in indexes[where]
        )
        shown = {k: v for k, v in row.items() if k != "_shape"}
        shown["status"] = "served" if served else "suggested"
        shown["name"] = auto_index_name(keys)
        rows.append(shown)
    return rows


def apply_suggestions(
    engine: MongoDBEngine, suggestions: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Build the ``suggested`` indexes of :func:`suggest_indexes` (as automatic indexes)."""
    results = []
    for row in suggestions:
        if row.get("status") != "suggested":
            continue
        raw = engine.storage.collection(physical_name(row["slug"], row["collection"]))
        keys = [(k, int(d)) for k, d in row["keys"]]
        outcome = {"slug": row["slug"], "collection": row["collection"], "name": row["name"]}
        try:
            raw.create_index(keys, name=row["name"])
            outcome["status"] = "created"
        except PyMongoError as exc:
            outcome.update(status=classify(exc), error=error_message(exc))
        results.append(outcome)
    return results


def index_health(engine: MongoDBEngine) -> dict[str, Any]:
    """The ``indexes`` check of the engine's health, from the registry cache (no I/O): an
    app is ``degraded`` when one of its declared indexes is in conflict, not supported by
    the server, or failed."""
    apps: dict[str, list[dict[str, Any]]] = {}
    for record in engine.registry.cached_records():
        problems = [
            {k: o.get(k) for k in ("collection", "name", "type", "status", "error")}
            for o in record.get("index_outcomes") or []
            if o.get("status") in PROBLEM_STATUSES
        ]
        if problems:
            apps[record["_id"]] = problems
    return {
        "name": "indexes",
        "status": "degraded" if apps else "healthy",
        "degraded_apps": sorted(apps),
        "problems": apps,
    }


__all__ = [
    "app_collections",
    "apply_suggestions",
    "index_health",
    "list_indexes",
    "suggest_indexes",
    "sync_indexes",
]
