"""The storage service: the engine's database, its raw and system collections, sessions,
and the one naming table of every engine-internal collection.

Every collection the engine keeps for itself is declared here, once, with its owner and its
indexes (:data:`INTERNAL_COLLECTIONS`), and reached through :meth:`Storage.system`, which
creates its indexes (and runs its migrations) once per process and client — instead of each
subsystem keeping its own "created once" flag. Internal names start with ``mdb_``: no app
slug can produce such a physical name (``mdb`` and ``mdb_*`` slugs are reserved), so no
scoped database reaches them. One exception is fixed by the design: the registry lives in
``apps_config`` (the ``apps`` slug is reserved for that reason).

Renamed collections are migrated on first use (:data:`LEGACY_NAMES`): one atomic
``renameCollection`` when only the old name exists; when both exist (a process of the new
version wrote first), the old documents are copied over — documents already there win —
and the old collection dropped. Each step is idempotent, so several processes may run it at
once, and a process killed half-way leaves a state the next run completes.

Families of collections named by prefix (an import's journal and staging collections,
Celery's broker and result collections) are listed in :data:`INTERNAL_PREFIXES`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from .connection import Connection

log = logging.getLogger(__name__)

#: Server error codes: an equivalent index exists (under another name or options).
_INDEX_EXISTS = (85, 86)
_NAMESPACE_NOT_FOUND = 26
_NAMESPACE_EXISTS = 48
_DUPLICATE_KEY = 11000
#: Physical collections whose ``app_id`` index this process already ensured (bounded).
APP_ID_INDEX_CACHE_SIZE = 4096
#: Raw pymongo collections cached per client (names chosen by callers: bounded).
RAW_COLLECTION_CACHE_SIZE = 4096


@dataclass(frozen=True)
class IndexSpec:
    """One index of an internal collection: ``keys`` and pymongo ``create_index`` options."""

    name: str
    keys: tuple[tuple[str, int], ...]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InternalCollection:
    """An engine-internal collection: its name, the module that owns (reads and writes) it,
    its indexes, and the names it had before (migrated on first use).
    ``upgrade`` runs once per process after the indexes (fixing documents written by an
    older version); it must be idempotent."""

    name: str
    owner: str
    purpose: str
    indexes: tuple[IndexSpec, ...] = ()
    legacy: tuple[str, ...] = ()
    upgrade: Callable[[Collection[Any]], None] | None = None


def _ttl(name: str = "ttl") -> IndexSpec:
    return IndexSpec(name, (("expires_at", ASCENDING),), {"expireAfterSeconds": 0})


_APP_USER = IndexSpec("app_user", (("app_id", ASCENDING), ("user_id", ASCENDING)))


def _add_slug_field(coll: Collection[Any]) -> None:
    # Registry records written before the ``slug`` index existed get their ``slug`` field.
    coll.update_many({"slug": {"$exists": False}}, [{"$set": {"slug": "$_id"}}])


# --- the naming table ---------------------------------------------------------------------------

APPS_CONFIG = "apps_config"
REGISTRY_LOCKS = "mdb_registry_locks"
EVENTS = "mdb_events"
WS_SLOTS = "mdb_ws_slots"
QUERY_SHAPES = "mdb_query_shapes"
LLM_SPEND = "mdb_llm_spend"
AUTH_SESSIONS = "mdb_auth_sessions"
AUTH_REFRESH = "mdb_auth_refresh"
AUTH_DENYLIST = "mdb_auth_denylist"
AUTH_RATE_LIMITS = "mdb_auth_rate_limits"
AUTH_USERS = "mdb_auth_users"
AUTH_POLICY_VERSIONS = "mdb_auth_policy_versions"
AUTH_RESETS = "mdb_auth_resets"
AUTH_OAUTH_STATES = "mdb_auth_oauth_states"
AUTH_IDENTITIES = "mdb_auth_identities"
AUTH_HANDOFFS = "mdb_auth_handoffs"
AUTH_ANONYMOUS = "mdb_auth_anonymous"
AUTH_EMAIL_TOKENS = "mdb_auth_email_tokens"
AUTH_SECOND_FACTOR = "mdb_auth_second_factor"
#: The name fixed by the design (DESIGN.md: the registry lives in ``apps_config``); every
#: other internal collection is ``mdb_*``.
DESIGN_FIXED_NAMES = frozenset({APPS_CONFIG})

_AUTH = "mdb_sync.auth.store"
_TABLE = (
    InternalCollection(
        APPS_CONFIG,
        "mdb_sync.registry",
        "the app registry: one record (manifest, status, indexes) per app",
        (IndexSpec("slug_1", (("slug", ASCENDING),)),),
        upgrade=_add_slug_field,
    ),
    InternalCollection(
        REGISTRY_LOCKS,
        "mdb_sync.registry_claims",
        "per-segment registration locks (empty when idle)",
    ),
    InternalCollection(
        EVENTS,
        "mdb_sync.realtime.bus",
        "realtime events shared by every process: capped, or plain and trimmed where capped "
        "inserts are slow (the bus chooses and creates it: mdb_sync.realtime.store)",
    ),
    InternalCollection(
        WS_SLOTS,
        "mdb_sync.realtime.slots",
        "cluster-wide websocket connection leases",
        (IndexSpec("leases.p_1", (("leases.p", ASCENDING),)),),
    ),
    InternalCollection(
        QUERY_SHAPES,
        "mdb_sync.indexes.auto",
        "observed query shapes (counts only) for `mdb indexes suggest`",
        (
            IndexSpec("slug_1", (("slug", ASCENDING),)),
            IndexSpec("expires_at_1", (("expires_at", ASCENDING),), {"expireAfterSeconds": 0}),
        ),
        legacy=("mdb.query_shapes",),
    ),
    InternalCollection(
        LLM_SPEND,
        "mdb_sync.ai.spend",
        "per-app monthly LLM spend ledger and reservations",
        (_ttl(), IndexSpec("app_month", (("app_id", ASCENDING), ("month", ASCENDING)))),
    ),
    InternalCollection(AUTH_SESSIONS, _AUTH, "server-side login sessions", (_ttl(), _APP_USER)),
    InternalCollection(AUTH_REFRESH, _AUTH, "refresh-token families", (_ttl(), _APP_USER)),
    InternalCollection(AUTH_DENYLIST, _AUTH, "revoked tokens", (_ttl(),)),
    InternalCollection(AUTH_RATE_LIMITS, _AUTH, "rate-limit counters", (_ttl(),)),
    InternalCollection(
        AUTH_USERS,
        _AUTH,
        "global users shared between apps",
        (IndexSpec("email_unique", (("email", ASCENDING),), {"unique": True}),),
    ),
    InternalCollection(AUTH_POLICY_VERSIONS, _AUTH, "authorization policy versions"),
    InternalCollection(AUTH_RESETS, _AUTH, "password-reset tokens", (_ttl(),)),
    InternalCollection(AUTH_OAUTH_STATES, _AUTH, "pending OAuth sign-ins", (_ttl(),)),
    InternalCollection(
        AUTH_IDENTITIES,
        _AUTH,
        "provider identities linked to users",
        (IndexSpec("scope_user", (("scope", ASCENDING), ("user_id", ASCENDING))),),
    ),
    InternalCollection(AUTH_HANDOFFS, _AUTH, "platform hand-off codes", (_ttl(),)),
    InternalCollection(AUTH_ANONYMOUS, _AUTH, "anonymous identities", (_ttl(),)),
    InternalCollection(AUTH_EMAIL_TOKENS, _AUTH, "e-mail verification links", (_ttl(),)),
    InternalCollection(AUTH_SECOND_FACTOR, _AUTH, "pending second-factor sign-ins", (_ttl(),)),
)

#: Every engine-internal collection by name (the one naming table).
INTERNAL_COLLECTIONS: Mapping[str, InternalCollection] = {c.name: c for c in _TABLE}
#: Old name -> current name of every renamed internal collection.
LEGACY_NAMES: Mapping[str, str] = {old: c.name for c in _TABLE for old in c.legacy}
#: Families of internal collections named by prefix -> their owner.
INTERNAL_PREFIXES: Mapping[str, str] = {
    "mdb_import_": "mdb_sync.portability.journal (an import's journal and staging collections)",
    "mdb_celery_": "mdb_sync.celery (the Celery broker's and result backend's collections)",
}


# --- the service ----------------------------------------------------------------------------------


class Storage:
    """The engine's access to its database: raw collections (apps' physical ones and the
    internal ones), sessions, and the once-per-process preparation of internal collections
    and of apps' ``app_id`` indexes.

    Built on the engine's :class:`~mdb_sync.connection.Connection` (this process's client,
    the embedded server under it): every access checks the embedded server first, and a new
    client — a forked child's, a re-attached server's — prepares collections again.
    """

    def __init__(self, connection: Connection) -> None:
        #: This process's client and the embedded server (engine-internal).
        self.connection = connection
        #: The epoch of this process's current client (see
        #: :meth:`~mdb_sync.connection.Connection.generation`): on the path of every scoped
        #: operation, so bound once here.
        self.client_generation: Callable[[], int] = connection.generation
        self._lock = threading.Lock()
        self._raw_collections: dict[str, tuple[Any, Collection[dict[str, Any]]]] = {}
        self._prepared: set[tuple[int, int, str]] = set()  # (pid, client epoch, name)
        self._app_id_indexed: set[str] = set()

    # --- raw access -----------------------------------------------------------------------------

    def database(self) -> Database[dict[str, Any]]:
        """The engine's database (engine-internal: apps get scoped databases)."""
        connection = self.connection
        connection.check_embedded()
        return connection.client[connection.db_name]

    def collection(self, physical: str) -> Collection[dict[str, Any]]:
        """The raw collection ``physical`` (an app's physical collection, or one of an
        internal family such as ``mdb_import_*``), with nothing prepared. Cached per client:
        building a ``Database`` and a ``Collection`` costs more than the lookup, and an entry
        of another client (a forked child's, a re-attached server's) is never returned."""
        connection = self.connection
        connection.check_embedded()
        client = connection.client
        cached = self._raw_collections.get(physical)
        if cached is not None and cached[0] is client:
            return cached[1]
        coll = client[connection.db_name][physical]
        if len(self._raw_collections) >= RAW_COLLECTION_CACHE_SIZE:
            self._raw_collections = {}  # names chosen by callers: never without bound
        self._raw_collections[physical] = (client, coll)
        return coll

    def start_session(self, **kwargs: Any) -> ClientSession:
        """A client session of this process's client."""
        self.connection.require_open()
        return self.connection.client.start_session(**kwargs)

    # --- internal collections -------------------------------------------------------------------

    def system(self, name: str) -> Collection[dict[str, Any]]:
        """The internal collection ``name`` (it must be in :data:`INTERNAL_COLLECTIONS`),
        migrated from its old names, with its indexes — once per process and client."""
        spec = INTERNAL_COLLECTIONS.get(name)
        if spec is None:
            raise KeyError(f"{name!r} is not an internal collection of the naming table")
        coll = self.collection(name)
        key = (os.getpid(), self.client_generation(), name)
        if key in self._prepared:
            return coll
        if self._prepare(spec, coll):
            with self._lock:
                self._prepared.add(key)
        return coll

    def _prepare(self, spec: InternalCollection, coll: Collection[dict[str, Any]]) -> bool:
        """Migrate and index ``spec``'s collection; False when the server could not
        be reached (tried again on the next use)."""
        try:
            for old in spec.legacy:
                migrate_collection(coll.database, old, spec.name)
            for index in spec.indexes:
                _create_index(coll, index)
            if spec.upgrade is not None:
                spec.upgrade(coll)
        except OperationFailure:
            raise
        except PyMongoError:
            log.warning("could not prepare the internal collection %s", spec.name, exc_info=True)
            return False
        return True

    def migrate(self, *, batch_size: int = 500) -> dict[str, str]:
        """Move every renamed internal collection to its current name now (otherwise done on
        first use); returns ``{old: new}`` of those that existed. Idempotent."""
        db = self.database()
        present = set(db.list_collection_names(filter={"name": {"$in": list(LEGACY_NAMES)}}))
        for old in sorted(present):
            migrate_collection(db, old, LEGACY_NAMES[old], batch_size=batch_size)
        return {old: LEGACY_NAMES[old] for old in sorted(present)}

    # --- apps' app_id indexes -------------------------------------------------------------------

    def ensure_app_id_index(self, raw: Collection[Any], force: bool = False) -> None:
        """Make sure ``raw`` has an index on ``app_id`` (once per process and collection)."""
        key = raw.name
        if not force and key in self._app_id_indexed:
            return
        try:
            raw.create_index([("app_id", 1)], name="app_id_1")
        except OperationFailure as exc:
            if exc.code not in _INDEX_EXISTS:
                log.warning("could not create the app_id index on %s: %s", key, exc)
                return
        except PyMongoError as exc:
            log.warning("could not create the app_id index on %s: %s", key, exc)
            return
        with self._lock:
            if len(self._app_id_indexed) >= APP_ID_INDEX_CACHE_SIZE:
                self._app_id_indexed.pop()  # an arbitrary one: it costs one createIndex again
            self._app_id_indexed.add(key)

    def forget_app_id_index(self, raw: Collection[Any]) -> None:
        """``raw`` was dropped: its index is created again on next use."""
        with self._lock:
            self._app_id_indexed.discard(raw.name)

    def cache_info(self) -> dict[str, dict[str, int]]:
        return {
            "app_id_indexes": {"size": len(self._app_id_indexed), "limit": APP_ID_INDEX_CACHE_SIZE},
            "raw_collections": {
                "size": len(self._raw_collections),
                "limit": RAW_COLLECTION_CACHE_SIZE,
            },
        }

    # --- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (see :meth:`~mdb_sync.connection.Connection.open`). Idempotent."""
        self.connection.open()

    def close(self) -> None:
        """Forget what was prepared and close the connection (the engine shuts down: a new
        client starts afresh). Idempotent."""
        with self._lock:
            self._prepared.clear()
            self._raw_collections = {}
            self._app_id_indexed.clear()
        self.connection.close()

    def after_fork_in_child(self) -> None:
        """Internal (the engine's fork handler calls it): the connection drops the parent's
        client, and no collection object of it stays reachable; a new lock."""
        self.connection.after_fork_in_child()
        self._lock = threading.Lock()
        self._raw_collections = {}


def _create_index(coll: Collection[Any], index: IndexSpec) -> None:
    try:
        coll.create_index(list(index.keys), name=index.name, **index.options)
    except OperationFailure as exc:
        if exc.code not in _INDEX_EXISTS:  # an equivalent index exists: fine
            raise


def migrate_collection(db: Database[Any], old: str, new: str, *, batch_size: int = 500) -> bool:
    """Move collection ``old`` to ``new``; True if there was something to move.

    Only ``old``: one atomic ``renameCollection``. Both (a newer process wrote ``new``
    first): ``old``'s documents are copied in ``_id`` order, in batches of ``batch_size``,
    those already in ``new`` kept as they are, then ``old`` is dropped. Safe to run in
    several processes at once (a rename or drop done by another one is taken as done) and
    after a process was killed half-way (the copy is idempotent; ``old`` is dropped last).
    """
    admin = db.client.admin
    try:
        admin.command("renameCollection", f"{db.name}.{old}", to=f"{db.name}.{new}")
        log.info("renamed the internal collection %s to %s", old, new)
        return True
    except OperationFailure as exc:
        if exc.code == _NAMESPACE_NOT_FOUND:
            return False  # never existed, or another process moved it
        if exc.code != _NAMESPACE_EXISTS:
            raise
    source, target = db[old], db[new]
    try:
        batch: list[Any] = []
        for doc in source.find({}, sort=[("_id", ASCENDING)], batch_size=batch_size):
            batch.append(doc)
            if len(batch) >= batch_size:
                _insert_missing(target, batch)
                batch = []
        if batch:
            _insert_missing(target, batch)
    except OperationFailure:
        if old in db.list_collection_names(filter={"name": old}):
            raise
        return True  # another process finished the merge and dropped ``old`` meanwhile
    source.drop()
    log.info("merged the internal collection %s into %s", old, new)
    return True


def _insert_missing(target: Collection[Any], docs: list[Any]) -> None:
    """Insert ``docs`` into ``target``, keeping those whose ``_id`` is already there."""
    try:
        target.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != _DUPLICATE_KEY for e in errors) or exc.details.get(
            "writeConcernErrors"
        ):
            raise
