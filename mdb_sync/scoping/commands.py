"""``ScopedDatabase.command``: the database commands an app may run, and nothing else.

A raw ``Database.command`` reaches the whole database (and the server): it is the widest
escape hatch pymongo has. A scoped database runs an allow-list instead:

* **harmless, passed through bare** — ``ping``, ``hello`` (``isMaster``), ``buildInfo``: they
  say nothing about any app's data. Only the command name is sent (options such as
  ``saslSupportedMechs`` are dropped).
* **answered from the app's own documents** — ``count`` and ``distinct`` run as the scoped
  collection's ``count_documents``/``distinct`` (the ``app_id`` filter over every read scope)
  and answer in the command's shape (``{"n": ...}``, ``{"values": [...]}``).
* **collStats** of one of the app's collections, trimmed to its sizes and counts, with the
  logical namespace. Collection statistics cannot be filtered by ``app_id``: where the
  physical collection also holds another app's documents the command is refused (its counts
  and sizes would reveal them); ``count_documents({})`` is the scoped count.

Every other command is refused with :class:`~mdb_sync.exceptions.ScopeError`, naming the
method that does the job inside the sandbox where there is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import QueryValidationError, ScopeError
from .names import physical_name, validate_collection_name
from .updates import APP_ID

if TYPE_CHECKING:
    from .appscope import AppScope
    from .database import ScopedDatabase

#: Commands passed to the server as ``{name: 1}``, by lower-case name -> canonical name.
HARMLESS = {"ping": "ping", "hello": "hello", "ismaster": "isMaster", "buildinfo": "buildInfo"}
#: Commands answered through the scoped collection, by lower-case name -> canonical name.
SCOPED = {"count": "count", "distinct": "distinct", "collstats": "collStats"}
#: Fields of a ``collStats`` answer that describe the collection itself (the rest — storage
#: engine internals, file URIs, shard details — stays engine-internal).
COLLSTATS_FIELDS = (
    "count",
    "size",
    "avgObjSize",
    "storageSize",
    "freeStorageSize",
    "nindexes",
    "totalIndexSize",
    "totalSize",
    "indexSizes",
    "scaleFactor",
    "capped",
    "max",
    "maxSize",
    "ok",
)
#: Options of ``count`` / ``distinct`` and the keyword each takes in the scoped method.
_COUNT_OPTIONS = {"limit": "limit", "skip": "skip", "hint": "hint", "collation": "collation",
                  "maxTimeMS": "maxTimeMS", "comment": "comment"}  # fmt: skip
_DISTINCT_OPTIONS = {"collation": "collation", "maxTimeMS": "maxTimeMS", "comment": "comment"}

#: Refused commands -> the scoped way to do the same thing.
ALTERNATIVES = {
    "find": "db.<collection>.find(filter)",
    "aggregate": "db.<collection>.aggregate(pipeline)",
    "getmore": "iterating the cursor of find() / aggregate()",
    "insert": "db.<collection>.insert_one(doc) / insert_many(docs)",
    "update": "db.<collection>.update_one / update_many / replace_one",
    "delete": "db.<collection>.delete_one / delete_many",
    "findandmodify": "db.<collection>.find_one_and_update / _replace / _delete",
    "bulkwrite": "db.<collection>.bulk_write(requests)",
    "create": "db.create_collection(name, ...)",
    "drop": "db.drop_collection(name)",
    "renamecollection": "db.<collection>.rename(new_name)",
    "createindexes": "db.<collection>.create_index(keys) or the manifest's managed_indexes",
    "dropindexes": "db.<collection>.drop_index(name)",
    "listindexes": "db.<collection>.list_indexes()",
    "listcollections": "db.list_collection_names() / db.list_collections()",
    "dbstats": "db.command('collStats', name) for each of db.list_collection_names()",
    "datasize": "db.command('collStats', name)",
    "collmod": "the manifest (validators, TTL) or db.create_collection(name, ...)",
    "dropdatabase": "db.drop_collection(name) for each collection (a scoped database is never "
    "dropped whole)",
    "serverstatus": "engine.get_health_status() / engine.get_metrics()",
    "explain": "cursor.explain() on db.<collection>.find(...)",
}


def command_name(command: Any) -> tuple[str, dict[str, Any]]:
    """``(name, body)`` of a command given as a string or a mapping (first key = name)."""
    if isinstance(command, str):
        return command, {}
    if not isinstance(command, Mapping) or not command:
        raise TypeError("command must be a command name or a non-empty mapping")
    name = next(iter(command))
    if not isinstance(name, str):
        raise TypeError("a command's first key must be its name")
    return name, dict(command)


def refusal(name: str) -> ScopeError:
    """The error for a command a scoped database does not run."""
    alternative = ALTERNATIVES.get(name.lower())
    allowed = ", ".join([*HARMLESS.values(), *SCOPED.values()])
    return ScopeError(
        f"db.command({name!r}) is not available on a scoped database (a raw command is not "
        f"scoped to this app's documents); scoped databases run only {allowed}."
        + (f" Use {alternative} instead." if alternative else ""),
        context={"command": name},
    )


def run_command(
    db: ScopedDatabase,
    scope: AppScope,
    command: Any,
    value: Any = 1,
    *,
    check: bool = True,
    allowable_errors: Any = None,
    read_preference: Any = None,
    codec_options: Any = None,
    session: Any = None,
    comment: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run one allow-listed command for ``db`` (whose :class:`AppScope` is ``scope``; see the
    module docstring)."""
    name, body = command_name(command)
    if isinstance(command, str):
        body = {name: value, **kwargs}
    elif kwargs:
        body.update(kwargs)
    key = name.lower()
    if key in HARMLESS:
        options: dict[str, Any] = {"check": check, "allowable_errors": allowable_errors}
        if read_preference is not None:
            options["read_preference"] = read_preference
        if codec_options is not None:
            options["codec_options"] = codec_options
        if comment is not None:
            options["comment"] = comment
        raw_session = scope.raw_session(session)
        return dict(scope.raw_database().command(HARMLESS[key], session=raw_session, **options))
    if key not in SCOPED:
        scope.security_event(f"command {name!r} refused")
        raise refusal(name)
    target = body.pop(name)
    if not isinstance(target, str):
        raise QueryValidationError(
            f"{SCOPED[key]} names a collection: a string, not {type(target).__name__}",
            context={"command": SCOPED[key]},
        )
    validate_collection_name(target)
    if comment is not None:
        body.setdefault("comment", comment)
    if session is not None:
        body["session"] = session
    if key == "count":
        return _count(db, target, body)
    if key == "distinct":
        return _distinct(db, target, body)
    return _coll_stats(db, scope, target, body, session)


def _options(body: dict[str, Any], allowed: dict[str, str], command: str) -> dict[str, Any]:
    unknown = sorted(set(body) - set(allowed) - {"session", "query", "key"})
    if unknown:
        raise QueryValidationError(
            f"{command}: options {unknown} are not available through a scoped database",
            context={"command": command},
        )
    options = {allowed[k]: v for k, v in body.items() if k in allowed and v is not None}
    if body.get("session") is not None:
        options["session"] = body["session"]
    return options


def _count(db: ScopedDatabase, name: str, body: dict[str, Any]) -> dict[str, Any]:
    query = body.get("query") or {}
    options = _options(body, _COUNT_OPTIONS, "count")
    # The count command's limit may be negative (its absolute value counts) and 0 means none;
    # count_documents takes only a positive limit.
    limit = options.pop("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise QueryValidationError("count: limit must be an integer", context={"command": "count"})
    if limit:
        options["limit"] = abs(limit)
    if not options.get("skip"):
        options.pop("skip", None)
    return {"n": db.get_collection(name).count_documents(query, **options), "ok": 1.0}


def _distinct(db: ScopedDatabase, name: str, body: dict[str, Any]) -> dict[str, Any]:
    key = body.get("key")
    if not isinstance(key, str):
        raise QueryValidationError(
            "distinct needs key= (a field name)", context={"command": "distinct"}
        )
    options = _options(body, _DISTINCT_OPTIONS, "distinct")
    values = db.get_collection(name).distinct(key, body.get("query") or None, **options)
    return {"values": values, "ok": 1.0}


def _coll_stats(
    db: ScopedDatabase, scope: AppScope, name: str, body: dict[str, Any], session: Any
) -> dict[str, Any]:
    unknown = sorted(set(body) - {"scale", "comment", "session"})
    if unknown:
        raise QueryValidationError(
            f"collStats: options {unknown} are not available through a scoped database",
            context={"command": "collStats"},
        )
    raw_session = scope.raw_session(session)
    raw_database = scope.raw_database()
    physical = physical_name(db.write_scope, name)
    foreign = raw_database[physical].find_one(
        {APP_ID: {"$ne": db.write_scope}}, {"_id": 1}, session=raw_session
    )
    if foreign is not None:
        scope.security_event("collStats of a collection holding other apps' documents", name)
        raise ScopeError(
            f"collStats of {name!r} is refused: its physical collection also holds other apps' "
            "documents, whose counts and sizes it would reveal; use "
            f"db.{name}.count_documents({{}}) for this app's count",
            context={"command": "collStats", "collection": name},
        )
    options = {k: body[k] for k in ("scale", "comment") if body.get(k) is not None}
    stats = raw_database.command("collStats", physical, session=raw_session, **options)
    answer = {field: stats[field] for field in COLLSTATS_FIELDS if field in stats}
    return {"ns": f"{db.app_slug}.{name}", **answer}
