"""ScopedCollection: one app's view of a logical collection.

Every method is written out (allow-listed); there is no ``__getattr__`` delegation to the raw
pymongo collection, so nothing unscoped is reachable by accident. Reads are filtered by
``app_id`` (over every read scope), writes are tagged with and restricted to the write scope,
and pymongo's own result objects and cursors come back.

A collection of app ``a`` with read scopes ``a`` and ``b`` reads ``a_<name>`` filtered by
``app_id: "a"`` together with ``b_<name>`` filtered by ``app_id: "b"``, as if they were one
collection; it writes only to ``a_<name>``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from bson import ObjectId, encode
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DocumentTooLarge
from pymongo.operations import IndexModel
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)

from .._pymongo_seam import gen_index_name as _gen_index_name
from .._pymongo_seam import index_document as _index_document
from .._pymongo_seam import index_list as _index_list
from ..display import collection_html
from ..exceptions import QueryValidationError, ResourceLimitExceeded, ScopeError
from . import frames
from .alternatives import COLLECTION_ALTERNATIVES, instead
from .bulk import ScopedBulkFeed
from .changes import CHANGE_STREAM_STAGES, collection_change_pipeline
from .cursor import ScopedCommandCursor, ScopedCursor
from .guards import check_query
from .limits import SERVER_MAX_DOCUMENT_BYTES
from .multi import MultiScopeCursor
from .names import physical_name, validate_collection_name
from .pipeline import PipelineScoper
from .updates import APP_ID, scoped_filter, scoped_replacement, scoped_update, tag_document

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pymongo.change_stream import ChangeStream
    from pymongo.command_cursor import CommandCursor

    from .appscope import AppScope
    from .database import ScopedDatabase

_T = TypeVar("_T")

#: Raw collection and the app_id it is read with; the first one is the app's own.
Source = tuple[Collection[Any], str]
#: Server error codes for a document over 16 MiB (BSONObjectTooLarge; an update whose result
#: would be too large).
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
#: Documents encoded together when a batch's sizes are checked.
_CHECK_CHUNK = 1000
#: The sandbox's own refusals: never the driver's, never counted as failed operations (a bulk
#: write checks its requests inside the driver's call).
_REFUSALS = (QueryValidationError, ScopeError, ResourceLimitExceeded)
#: Operations that write documents: one refused as too large wrote nothing (a single
#: document, or a batch checked before it was sent).
_WRITES = frozenset({"insert", "update", "findAndModify", "bulkWrite"})


#: Options of bulk requests passed on as they are (keyword, pymongo's attribute).
class ScopedCollection:
    """A collection of one app: ``db.tasks`` of app ``my_app`` is ``my_app_tasks``."""

    __slots__ = (
        "__generation",
        "__options",
        "__state",
        "_db",
        "_index_lock",
        "_indexed",
        "_limits",
        "_meter",
        "_name",
        "_observer",
        "_scope",
        "_write_scope",
    )

    def __init__(
        self,
        database: ScopedDatabase,
        scope: AppScope,
        name: str,
        sources: list[Source],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Built by :class:`ScopedDatabase` (``db.tasks``), never by apps: ``scope`` is the
        database's internal :class:`~mdb_sync.scoping.appscope.AppScope`."""
        self._db = database
        self._scope = scope
        self._name = name
        self.__options = {k: v for k, v in (options or {}).items() if v is not None}
        self.__generation = scope.client_generation
        self.__state = (self.__generation(), sources)
        self._limits = scope.limits
        self._write_scope = scope.write_scope
        self._indexed = False
        self._index_lock = threading.Lock()
        #: Records each operation in the engine's metrics (None: pymongo listeners do).
        self._meter = scope.meter
        #: The query-driven indexing hook (None when it is off): a cursor calls it once, when
        #: it first runs; the hot paths skip the call to _observe without it.
        self._observer = self._observe if scope.auto_index else None

    @property
    def __sources(self) -> list[Source]:
        """The pymongo collections, of this process's current client: rebuilt when the
        engine's client changed (a forked child, a re-attached embedded server), so a
        scoped collection never uses a parent's or a dead server's client."""
        generation, sources = self.__state
        current = self.__generation()
        if current != generation:
            sources = self._scope.raw_sources(self._name)
            if self.__options:
                sources = [(raw.with_options(**self.__options), s) for raw, s in sources]
            self.__state = (current, sources)
        return sources

    @property
    def __coll(self) -> Collection[Any]:
        return self.__sources[0][0]

    # --- identity -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The logical name (``tasks``), as the app knows it."""
        return self._name

    @property
    def full_name(self) -> str:
        """``<app slug>.<logical name>``: what this collection is, without the raw namespace."""
        return f"{self._db.app_slug}.{self._name}"

    @property
    def database(self) -> ScopedDatabase:
        """The scoped database this collection belongs to."""
        return self._db

    @property
    def codec_options(self) -> Any:
        return self.__coll.codec_options

    @property
    def read_preference(self) -> Any:
        return self.__coll.read_preference

    @property
    def write_concern(self) -> Any:
        return self.__coll.write_concern

    @property
    def read_concern(self) -> Any:
        return self.__coll.read_concern

    def __repr__(self) -> str:
        return f"ScopedCollection(app={self._db.app_slug!r}, name={self._name!r})"

    def _repr_html_(self) -> str:
        return collection_html(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScopedCollection):
            return NotImplemented
        return self._db == other._db and self._name == other._name

    def __hash__(self) -> int:
        return hash((self._db, self._name))

    def __getattr__(self, name: str) -> Any:
        hint = instead(COLLECTION_ALTERNATIVES, name)
        raise AttributeError(
            f"ScopedCollection has no attribute {name!r}. Scoped collections expose an "
            f"allow-list of pymongo's Collection methods.{hint} Sub-collections are reached "
            f"with db[{self._name + '.' + name!r}] or collection[{name!r}]"
        )

    def __getitem__(self, name: str) -> ScopedCollection:
        """The sub-collection ``<this name>.<name>`` (pymongo's ``collection[name]``)."""
        return self._db.get_collection(f"{self._name}.{name}")

    def __iter__(self) -> Any:
        raise TypeError("'ScopedCollection' object is not iterable")

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "ScopedCollection objects do not implement truth value testing or bool(); "
            "compare with None instead"
        )

    def with_options(
        self,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: Any = None,
        read_concern: Any = None,
    ) -> ScopedCollection:
        """The same scoped collection with other codec options or read/write settings."""
        options = {
            "codec_options": codec_options,
            "read_preference": read_preference,
            "write_concern": write_concern,
            "read_concern": read_concern,
        }
        sources = [(raw.with_options(**options), scope) for raw, scope in self.__sources]
        return ScopedCollection(
            self._db, self._scope, self._name, sources, {**self.__options, **options}
        )

    # --- helpers ------------------------------------------------------------------------------

    def _raw_session(self, session: Any) -> Any:
        """The pymongo session behind ``session`` (a session of this app's database)."""
        return self._scope.raw_session(session)

    def _run(self, name: str, call: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """``call(*args, **kwargs)`` — the driver's operation — recorded as operation
        ``name`` of the app (one clock read before, one after; a raised error counts as a
        failed operation). A write (``name`` in :data:`_WRITES`) pymongo or the server
        refuses as too large raises :class:`ResourceLimitExceeded` (nothing was written)."""
        meter = self._meter
        started = perf_counter() if meter is not None else 0.0
        try:
            result = call(*args, **kwargs)
        except BaseException as exc:
            if meter is not None and not isinstance(exc, _REFUSALS):
                meter(name, started, False)
            if name in _WRITES and isinstance(exc, Exception) and self._is_too_large(exc):
                raise self._too_large(exc) from exc
            raise
        if meter is not None:
            meter(name, started, True)
        return result

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs:
            return kwargs
        if kwargs.get("session") is not None:
            kwargs["session"] = self._raw_session(kwargs["session"])
        # Options that carry expressions or predicates get the same guards as filters
        # (a find projection may hold aggregation expressions, $function included).
        for option in ("let", "projection", "array_filters"):
            if kwargs.get(option) is not None:
                self._guard(check_query, kwargs[option], self._limits, option)
        return kwargs

    def _guard(self, check: Callable[..., _T], *args: Any) -> _T:
        """Run a sandbox check; a refusal is logged and counted as a security event."""
        try:
            return check(*args)
        except (QueryValidationError, ScopeError) as exc:
            self._scope.security_event(str(exc), self._name)
            raise

    def _filter(
        self, filter: Any, scope: str | None = None, where: str = "filter"
    ) -> dict[str, Any]:
        """The caller's filter, checked by the guards, restricted to ``scope`` (a refusal is
        logged and counted, as by :meth:`_guard`)."""
        try:
            return scoped_filter(filter, scope or self._write_scope, self._limits, where)
        except (QueryValidationError, ScopeError) as exc:
            self._scope.security_event(str(exc), self._name)
            raise

    def _update(self, update: Any) -> Any:
        try:
            return scoped_update(update, self._write_scope, self._limits)
        except (QueryValidationError, ScopeError) as exc:
            self._scope.security_event(str(exc), self._name)
            raise

    def _tagged(self, document: Any) -> dict[str, Any]:
        scope = self._write_scope
        if type(document) is dict and document.get(APP_ID, scope) == scope:
            tagged = {**document, APP_ID: scope}  # tag_document's copy, in one step
        else:
            tagged = self._guard(tag_document, document, scope)
        if self._limits.max_document_bytes < SERVER_MAX_DOCUMENT_BYTES:
            self._check_size(tagged)
        return tagged

    def _replacement(self, replacement: Any) -> dict[str, Any]:
        tagged = self._guard(scoped_replacement, replacement, self._write_scope)
        if self._limits.max_document_bytes < SERVER_MAX_DOCUMENT_BYTES:
            self._check_size(tagged)
        return tagged

    def _check_size(self, document: Any, what: str = "document") -> None:
        """Refuse ``document`` (a mapping, or an update pipeline) over ``max_document_bytes``."""
        # Wrapped: a pipeline is a list; the wrapper adds 7 bytes (length, type, key, end).
        size = len(encode({"": document}, codec_options=self.__coll.codec_options)) - 7
        if size > self._limits.max_document_bytes:
            self._refuse_size(size, what)

    def _check_batch(self, documents: list[Any], what: str = "document") -> None:
        """Refuse a batch holding a document over ``max_document_bytes`` before any of it is
        sent (pymongo checks batch by batch, after earlier batches were written, and the
        server refuses a document only after storing the ones before it). A chunk whose whole
        encoding fits the limit needs no look at its documents: one C call per chunk."""
        limit = self._limits.max_document_bytes
        codec = self.__coll.codec_options
        for start in range(0, len(documents), _CHECK_CHUNK):
            chunk = documents[start : start + _CHECK_CHUNK]
            if len(encode({"": chunk}, codec_options=codec)) > limit:
                for document in chunk:
                    self._check_size(document, what)

    def _refuse_size(self, size: int, what: str) -> NoReturn:
        raise ResourceLimitExceeded(
            f"{what} of {size} bytes for {self._name!r} exceeds the limit of "
            f"{self._limits.max_document_bytes} bytes; nothing was written",
            context={"collection": self._name, "size": size},
        )

    def _too_large(self, exc: Exception) -> ResourceLimitExceeded:
        return ResourceLimitExceeded(
            f"document too large for {self._name!r} (limit "
            f"{min(self._limits.max_document_bytes, SERVER_MAX_DOCUMENT_BYTES)} bytes); nothing "
            f"was written: {exc}",
            context={"collection": self._name},
        )

    @staticmethod
    def _is_too_large(exc: BaseException) -> bool:
        """True for a document pymongo or the server refused as too large (in a
        single-document operation: nothing was written)."""
        return isinstance(exc, DocumentTooLarge) or getattr(exc, "code", None) in _TOO_LARGE_CODES

    def _max_time(self, kwargs: dict[str, Any]) -> None:
        kwargs["maxTimeMS"] = self._limits.cap_time(kwargs.get("maxTimeMS"))

    def _before_write(self) -> None:
        """The first write through this object makes sure the ``app_id`` index exists."""
        if not self._indexed:
            with self._index_lock:
                if not self._indexed:
                    self._scope.ensure_app_id_index(self.__coll)
                    self._indexed = True

    def _observe(self, filter: Any, sort: Any = None) -> None:
        """Feed query-driven indexing with a query's filter and sort (a cursor calls it once,
        when it first runs)."""
        scope = self._scope
        if not scope.auto_index:
            return
        if sort is not None and not isinstance(sort, Mapping):
            sort = _index_document(_index_list(sort))  # find_one_and_*(sort=[...])
        scope.observe_query(self._name, self.__coll, filter, sort)

    def _resolve(self, logical: str) -> list[tuple[str, str]]:
        validate_collection_name(logical)
        return [(physical_name(scope, logical), scope) for scope in self._db.read_scopes]

    def _own_physical(self, logical: str) -> str:
        validate_collection_name(logical)
        return physical_name(self._write_scope, logical)

    def _pipeline(
        self, pipeline: Any, raw_sources: list[Source] | None = None
    ) -> list[dict[str, Any]]:
        raw_sources = raw_sources or self.__sources
        database = raw_sources[0][0].database
        scoper = PipelineScoper(
            self._resolve, self._own_physical, self._write_scope, self._limits, database.name
        )
        sources = [(raw.name, scope) for raw, scope in raw_sources]
        scoped = self._guard(scoper.scope, pipeline, sources)
        for physical in scoper.replaced:
            # $out replaces the whole target: never when it also holds other apps' documents.
            foreign = {APP_ID: {"$ne": self._write_scope}}
            if database[physical].find_one(foreign, {"_id": 1}) is not None:
                self._scope.security_event("$out over other apps' documents", self._name)
                raise ScopeError(
                    "$out would replace a collection that also holds other apps' documents; "
                    "use $merge instead",
                    context={"collection": self._name},
                )
        return scoped

    def _is_multi(self) -> bool:
        return len(self.__sources) > 1

    def _refuse_foreign_documents(self, action: str) -> None:
        """Collection-level destructive operations never touch another app's documents."""
        if self.__coll.find_one({APP_ID: {"$ne": self._write_scope}}, {"_id": 1}) is not None:
            self._scope.security_event(
                f"{action} of a collection holding other apps' documents", self._name
            )
            raise ScopeError(
                f"cannot {action} {self._name!r}: its physical collection also holds documents of "
                "other apps; delete this app's documents with delete_many({}) instead",
                context={"collection": self._name},
            )

    # --- writes -------------------------------------------------------------------------------

    def insert_one(self, document: Any, **kwargs: Any) -> InsertOneResult:
        """Insert ``document`` tagged with this app's ``app_id`` (``document`` gets its
        ``_id``, as with pymongo, but not ``app_id``)."""
        tagged = self._tagged(document)
        if kwargs:
            kwargs = self._kwargs(kwargs)
        if not self._indexed:
            self._before_write()
        result = self._run("insert", self.__sources[0][0].insert_one, tagged, **kwargs)
        if "_id" not in document and isinstance(document, dict):
            document["_id"] = tagged["_id"]
        return result

    def insert_many(
        self, documents: Iterable[Any], ordered: bool = True, **kwargs: Any
    ) -> InsertManyResult:
        """Insert ``documents``, each tagged with this app's ``app_id``; all are checked
        (scope and size) before any is sent, so a refused document leaves nothing written."""
        if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
            raise TypeError("documents must be a non-empty list")
        originals = list(documents)
        if not originals:
            raise TypeError("documents must be a non-empty list")
        tagged = []
        for original in originals:
            doc = self._guard(tag_document, original, self._write_scope)
            if "_id" not in doc:
                doc["_id"] = ObjectId()
                if isinstance(original, dict):
                    original["_id"] = doc["_id"]
            tagged.append(doc)
        self._check_batch(tagged)
        kwargs = self._kwargs(kwargs)
        self._before_write()
        return self._run("insert", self.__coll.insert_many, tagged, ordered=ordered, **kwargs)

    def update_one(
        self, filter: Any, update: Any, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        scoped, checked = self._filter(filter), self._update(update)
        if kwargs:
            kwargs = self._kwargs(kwargs)
        if not self._indexed:
            self._before_write()
        if self._observer is not None:
            self._observe(filter)
        raw = self.__sources[0][0]
        return self._run("update", raw.update_one, scoped, checked, upsert, **kwargs)

    def update_many(
        self, filter: Any, update: Any, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        scoped, checked = self._filter(filter), self._update(update)
        kwargs = self._kwargs(kwargs)
        self._before_write()
        self._observe(filter)
        return self._run("update", self.__coll.update_many, scoped, checked, upsert, **kwargs)

    def replace_one(
        self, filter: Any, replacement: Any, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        scoped, doc = self._filter(filter), self._replacement(replacement)
        kwargs = self._kwargs(kwargs)
        self._before_write()
        self._observe(filter)
        return self._run("update", self.__coll.replace_one, scoped, doc, upsert, **kwargs)

    def delete_one(self, filter: Any, **kwargs: Any) -> DeleteResult:
        scoped = self._filter(filter)
        self._observe(filter)
        return self._run("delete", self.__coll.delete_one, scoped, **self._kwargs(kwargs))

    def delete_many(self, filter: Any, **kwargs: Any) -> DeleteResult:
        scoped = self._filter(filter)
        self._observe(filter)
        return self._run("delete", self.__coll.delete_many, scoped, **self._kwargs(kwargs))

    def find_one_and_update(
        self,
        filter: Any,
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        scoped, checked = self._filter(filter), self._update(update)
        self._guard(check_query, projection or {}, self._limits, "projection")
        # Some servers answer an oversized findAndModify with a bare internal error.
        self._check_size(checked, "update")
        kwargs = self._kwargs(kwargs)
        self._before_write()
        self._observe(filter, sort)
        return self._run(
            "findAndModify",
            self.__coll.find_one_and_update,
            scoped, checked, projection, sort, upsert, return_document,
            **kwargs,
        )  # fmt: skip

    def find_one_and_replace(
        self,
        filter: Any,
        replacement: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        scoped, doc = self._filter(filter), self._replacement(replacement)
        self._guard(check_query, projection or {}, self._limits, "projection")
        self._check_size(doc)  # see find_one_and_update
        kwargs = self._kwargs(kwargs)
        self._before_write()
        self._observe(filter, sort)
        return self._run(
            "findAndModify",
            self.__coll.find_one_and_replace,
            scoped, doc, projection, sort, upsert, return_document,
            **kwargs,
        )  # fmt: skip

    def find_one_and_delete(
        self, filter: Any, projection: Any = None, sort: Any = None, **kwargs: Any
    ) -> dict[str, Any] | None:
        scoped = self._filter(filter)
        self._guard(check_query, projection or {}, self._limits, "projection")
        self._observe(filter, sort)
        return self._run(
            "findAndModify",
            self.__coll.find_one_and_delete,
            scoped, projection, sort, **self._kwargs(kwargs),
        )  # fmt: skip

    def bulk_write(
        self, requests: Iterable[Any], ordered: bool = True, **kwargs: Any
    ) -> BulkWriteResult:
        """Like pymongo's ``bulk_write``: every request is scoped, and all are checked (scope,
        guards, sizes) before any is sent (see :mod:`mdb_sync.scoping.bulk`)."""
        if isinstance(requests, Mapping) or not isinstance(requests, Iterable):
            raise TypeError("requests must be a list of write operations")
        if type(requests) is not list:
            requests = list(requests)
        if not requests:
            raise ValueError("requests must not be empty")
        kwargs = self._kwargs(kwargs)
        feed = ScopedBulkFeed(
            requests,
            self._write_scope,
            self._limits,
            lambda exc: self._scope.security_event(str(exc), self._name),
            self._check_batch,
            self._before_write,
        )
        raw = self.__sources[0][0]
        return self._run("bulkWrite", raw.bulk_write, [feed], ordered=ordered, **kwargs)

    # --- reads --------------------------------------------------------------------------------

    def find(
        self, filter: Any = None, *args: Any, **kwargs: Any
    ) -> ScopedCursor | MultiScopeCursor:
        """Like :meth:`pymongo.collection.Collection.find`, over this app's documents.

        Returns pymongo's own :class:`~pymongo.cursor.Cursor` (a :class:`ScopedCursor`); over
        several read scopes, a :class:`MultiScopeCursor` with the same chaining methods.
        """
        return self._find(filter, args, kwargs)

    def scan(
        self, filter: Any = None, projection: Any = None, **kwargs: Any
    ) -> ScopedCursor | ScopedCommandCursor:
        """A cursor over every matching document of this app, exempt from
        ``max_result_docs``: for code that streams a whole collection in constant memory
        (exports, exact vector search), where ``find`` would stop at the cap.

        Everything else is ``find``'s: the scope (over every read scope), the guards on the
        filter and the projection, ``find``'s options (``sort``, ``batch_size``,
        ``max_time_ms``...) with the same caps, and ``session``. Over several read scopes it
        returns the scoped aggregation's cursor (a ``$unionWith`` per scope).
        """
        cursor = self._find(filter, (projection,), kwargs, uncapped=True)
        if isinstance(cursor, MultiScopeCursor):
            pipeline, options = cursor.as_aggregation()
            return self._aggregate(pipeline, options.pop("session"), options, uncapped=True)
        return cursor

    def _find(
        self, filter: Any, args: Any, kwargs: dict[str, Any], uncapped: bool = False
    ) -> ScopedCursor | MultiScopeCursor:
        """``find(filter, *args, **kwargs)``; ``uncapped`` (for ``scan``) lifts
        ``max_result_docs`` on one read scope (``scan`` turns the multi-scope cursor into its
        aggregation itself)."""
        if args or kwargs:
            self._find_options(args, kwargs)
        sources = self.__sources
        if len(sources) > 1:
            self._filter(filter)  # guards
            return MultiScopeCursor(self, filter, *args, **kwargs)
        return self._cursor(sources[0][0], filter, args, kwargs, uncapped=uncapped)

    def _find_options(self, args: Any, kwargs: dict[str, Any]) -> None:
        """Refuse what ``find(filter, *args, **kwargs)`` may not ask for: a tailable cursor,
        a projection the guards refuse."""
        if kwargs.get("cursor_type"):
            raise QueryValidationError("tailable cursors are not available on scoped collections")
        if args and args[0] is not None:
            self._guard(check_query, args[0], self._limits, "projection")
        if kwargs.get("projection") is not None:
            self._guard(check_query, kwargs["projection"], self._limits, "projection")

    def _cursor(
        self,
        raw: Collection[Any],
        filter: Any,
        args: Any,
        kwargs: dict[str, Any],
        uncapped: bool = False,
    ) -> ScopedCursor:
        """The scoped cursor of ``find(filter, *args, **kwargs)`` on ``raw`` (one read
        scope)."""
        session = kwargs.get("session")
        if session is not None:
            kwargs["session"] = self._scope.raw_session(session)
        return ScopedCursor(
            raw, self._filter(filter), args, kwargs, self, self._limits, self._meter,
            self._observer, filter, session, uncapped,
        )  # fmt: skip

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """Like :meth:`pymongo.collection.Collection.find_one`; ``filter`` may be an ``_id``."""
        if filter is not None and type(filter) is not dict and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        sources = self.__sources
        if len(sources) > 1:
            kwargs["limit"] = -1
            for doc in self._find(filter, args, kwargs):
                return doc
            return None
        # One read scope: pymongo's own find_one on the scoped filter. It reads one batch of
        # at most one document, so no cursor of ours needs to watch the batches.
        limits = self._limits
        if args or kwargs:
            self._find_options(args, kwargs)
            kwargs["max_time_ms"] = limits.cap_time(kwargs.get("max_time_ms"))
            if kwargs.get("batch_size"):
                kwargs["batch_size"] = limits.cap_batch(kwargs["batch_size"])
            if kwargs.get("session") is not None:
                kwargs["session"] = self._scope.raw_session(kwargs["session"])
        else:
            kwargs = {"max_time_ms": limits.default_max_time_ms}
        query = self._filter(filter)
        if self._observer is not None:
            self._observe(filter, kwargs.get("sort"))
        meter = self._meter
        if meter is None or args:
            return self._run("find", sources[0][0].find_one, query, *args, **kwargs)
        # _run's recording, inline: one frame fewer on every single-document read.
        started = perf_counter()
        try:
            found = sources[0][0].find_one(query, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, _REFUSALS):
                meter("find", started, False)
            raise
        meter("find", started, True)
        return found

    def count_documents(self, filter: Any, **kwargs: Any) -> int:
        self._max_time(kwargs)
        kwargs = self._kwargs(kwargs)
        self._observe(filter)
        return sum(
            self._run("aggregate", raw.count_documents, self._filter(filter, scope), **kwargs)
            for raw, scope in self.__sources
        )

    def estimated_document_count(self, **kwargs: Any) -> int:
        """The number of this app's documents. Computed with a scoped count: the collection's
        metadata count would include other apps' documents where a collection is shared."""
        kwargs.pop("maxTimeMS", None)
        return self.count_documents({}, **kwargs)

    def distinct(self, key: str, filter: Any = None, **kwargs: Any) -> list[Any]:
        if not isinstance(key, str):
            raise TypeError("key must be an instance of str")
        self._max_time(kwargs)
        kwargs = self._kwargs(kwargs)
        self._observe(filter)
        values: list[Any] = []
        seen: set[bytes] = set()
        for raw, scope in self.__sources:
            for value in self._run(
                "distinct", raw.distinct, key, self._filter(filter, scope), **kwargs
            ):
                marker = encode({"v": value})
                if marker not in seen:
                    seen.add(marker)
                    values.append(value)
        return values

    def aggregate(self, pipeline: Any, session: Any = None, **kwargs: Any) -> ScopedCommandCursor:
        """Like pymongo's ``aggregate``, over this app's documents (see
        :mod:`mdb_sync.scoping.pipeline` for how each stage is scoped)."""
        return self._aggregate(pipeline, session, kwargs)

    def _aggregate(
        self, pipeline: Any, session: Any, kwargs: dict[str, Any], uncapped: bool = False
    ) -> ScopedCommandCursor:
        sources = self.__sources
        scoped = self._pipeline(pipeline, sources)
        if kwargs:
            kwargs = self._kwargs(kwargs)
        self._max_time(kwargs)
        kwargs["batchSize"] = self._limits.cap_batch(kwargs.get("batchSize"))
        if scoped and next(iter(scoped[-1])) in ("$out", "$merge"):  # only ever the last stage
            self._before_write()
        raw_session = None if session is None else self._raw_session(session)
        cursor = self._run(
            "aggregate", sources[0][0].aggregate, scoped, session=raw_session, **kwargs
        )
        return ScopedCommandCursor.adopt(
            cursor, self._name, self._limits, session, self._meter, uncapped
        )

    def watch(self, pipeline: Any = None, **kwargs: Any) -> ChangeStream[Any]:
        """A change stream of this app's documents in this collection (``ns`` shows the app
        slug and the logical name). Update events carry ``fullDocument`` (``updateLookup``
        unless another mode is asked for), which is how their scope is checked."""
        kwargs.setdefault("full_document", "updateLookup")
        user = self._guard(_change_stages, pipeline, self._limits)
        branches = [(raw.name, scope) for raw, scope in self.__sources]
        stages = collection_change_pipeline(branches, self._name, user)
        if self._is_multi():
            return self._scope.watch(stages, **self._kwargs(kwargs))
        return self.__coll.watch(stages, **self._kwargs(kwargs))

    # --- indexes ------------------------------------------------------------------------------

    def _index_keys(self, keys: Any, options: Mapping[str, Any]) -> tuple[list[Any], str]:
        """``app_id`` first (so the index serves scoped queries and uniqueness never spans
        apps), and the name pymongo would give the caller's keys."""
        user_keys = _index_list(keys)
        name = options.get("name") or _gen_index_name(user_keys)
        if user_keys and user_keys[0][0] == APP_ID:
            return user_keys, name
        if "expireAfterSeconds" in options or (user_keys and user_keys[0][1] == "2d"):
            # TTL indexes are single-field and 2d must lead a compound index: keep as given.
            return user_keys, name
        return [(APP_ID, 1), *[k for k in user_keys if k[0] != APP_ID]], name

    def create_index(self, keys: Any, session: Any = None, **kwargs: Any) -> str:
        """Create an index on this collection; ``app_id`` is prepended to its keys (the name is
        the one pymongo gives the keys you passed, so ``drop_index`` works as usual)."""
        self._guard(check_query, kwargs.get("partialFilterExpression") or {}, self._limits, "index")
        full, name = self._index_keys(keys, kwargs)
        kwargs["name"] = name
        self._before_write()
        return self._run(
            "createIndexes",
            self.__coll.create_index,
            full,
            session=self._raw_session(session),
            **kwargs,
        )

    def create_indexes(
        self, indexes: Iterable[IndexModel], session: Any = None, **kwargs: Any
    ) -> list[str]:
        models = []
        for model in indexes:
            if not isinstance(model, IndexModel):
                raise TypeError(f"{model!r} is not an instance of pymongo.operations.IndexModel")
            document = dict(model.document)
            keys = list(document.pop("key").items())
            document.pop("name", None)
            self._guard(
                check_query, document.get("partialFilterExpression") or {}, self._limits, "index"
            )
            full, name = self._index_keys(keys, {**document, "name": model.document["name"]})
            models.append(IndexModel(full, name=name, **document))
        self._before_write()
        return self._run(
            "createIndexes",
            self.__coll.create_indexes,
            models,
            session=self._raw_session(session),
            **kwargs,
        )

    def drop_index(self, index_or_name: Any, session: Any = None, **kwargs: Any) -> None:
        name = (
            index_or_name
            if isinstance(index_or_name, str)
            else _gen_index_name(_index_list(index_or_name))
        )
        self._run(
            "dropIndexes",
            self.__coll.drop_index,
            name,
            session=self._raw_session(session),
            **kwargs,
        )

    def drop_indexes(self, session: Any = None, **kwargs: Any) -> None:
        """Drop every index but ``_id``'s; the ``app_id`` index is recreated at once."""
        self._run(
            "dropIndexes", self.__coll.drop_indexes, session=self._raw_session(session), **kwargs
        )
        self._scope.ensure_app_id_index(self.__coll, force=True)

    def list_indexes(
        self, session: Any = None, **kwargs: Any
    ) -> CommandCursor[MutableMapping[str, Any]]:
        return self.__coll.list_indexes(session=self._raw_session(session), **kwargs)

    def index_information(self, session: Any = None, **kwargs: Any) -> dict[str, Any]:
        return dict(self.__coll.index_information(session=self._raw_session(session), **kwargs))

    # --- the collection itself ------------------------------------------------------------------

    def options(self, session: Any = None, **kwargs: Any) -> dict[str, Any]:
        return dict(self.__coll.options(session=self._raw_session(session), **kwargs))

    def drop(self, session: Any = None, **kwargs: Any) -> None:
        """Drop this app's collection (refused if other apps' documents share it)."""
        self._refuse_foreign_documents("drop")
        self._run("drop", self.__coll.drop, session=self._raw_session(session), **kwargs)
        self._scope.forget_collection(self._name, self.__coll)

    def rename(self, new_name: str, session: Any = None, **kwargs: Any) -> ScopedCollection:
        """Rename within the app (``dropTarget=True`` only replaces a collection of this app)."""
        target: ScopedCollection = self._db[new_name]
        self._refuse_foreign_documents("rename")
        if kwargs.get("dropTarget"):
            target._refuse_foreign_documents("replace")
        self.__coll.rename(
            physical_name(self._write_scope, new_name), session=self._raw_session(session), **kwargs
        )
        self._scope.forget_collection(self._name, self.__coll)
        return target

    # --- columnar reads (pymongoarrow, the ``arrow`` extra; see .frames) ------------------------

    def _batch_source(self) -> frames.ScopedBatchSource:
        """The scoped raw-batch source pymongoarrow reads (it never gets the raw collection)."""
        return frames.ScopedBatchSource(
            repr(self), self.__coll.codec_options, self._find_batches, self._aggregate_batches
        )

    def _find_batches(self, filter: Any = None, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        """Raw BSON batches of ``find(filter, *args, **kwargs)`` over the app's documents,
        stopped past ``max_result_docs`` like :meth:`find`."""
        if kwargs.get("cursor_type"):
            raise QueryValidationError("tailable cursors are not available on scoped collections")
        if filter is not None and not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
        if self._is_multi():
            # Several read scopes are one aggregation ($unionWith per scope), as for find().
            pipeline, options = MultiScopeCursor(self, filter, *args, **kwargs).as_aggregation()
            return self._aggregate_batches(pipeline, **options)
        projection = args[0] if args else kwargs.pop("projection", None)
        if projection is not None:
            self._guard(check_query, projection, self._limits, "projection")
        limits = self._limits
        kwargs["batch_size"] = limits.cap_batch(kwargs.get("batch_size"))
        kwargs["max_time_ms"] = limits.cap_time(kwargs.get("max_time_ms"))
        if kwargs.get("session") is not None:
            kwargs["session"] = self._raw_session(kwargs["session"])
        query = self._filter(filter)
        batches = self.__coll.find_raw_batches(query, projection, *args[1:], **kwargs)
        sort = kwargs.get("sort")
        return frames.capped_batches(
            batches, self._name, limits, "query", lambda: self._observe(filter, sort)
        )

    def _aggregate_batches(
        self, pipeline: Any, session: Any = None, **kwargs: Any
    ) -> Iterator[bytes]:
        """Raw BSON batches of ``aggregate(pipeline)`` over the app's documents (read-only:
        ``$out``/``$merge`` refused), stopped past ``max_result_docs``."""
        stages = self._pipeline(pipeline)
        if any(next(iter(stage)) in ("$out", "$merge") for stage in stages):
            raise frames.writes_refused()
        limits = self._limits
        kwargs["maxTimeMS"] = limits.cap_time(kwargs.pop("max_time_ms", kwargs.get("maxTimeMS")))
        kwargs["batchSize"] = limits.cap_batch(kwargs.get("batchSize"))
        if kwargs.get("let") is not None:
            self._guard(check_query, kwargs["let"], limits, "let")
        raw_session = self._raw_session(session)
        batches = self.__coll.aggregate_raw_batches(stages, session=raw_session, **kwargs)
        return frames.capped_batches(batches, self._name, limits, "aggregation")

    def find_arrow_all(self, filter: Any = None, *, schema: Any = None, **kwargs: Any) -> Any:
        """The matching documents of this app as a :class:`pyarrow.Table` (pymongoarrow's
        ``find_arrow_all``: ``schema``, ``allow_invalid``, ``projection``, ``sort``,
        ``limit``, ``skip``... as in ``find``). Scoped and capped exactly like :meth:`find`."""
        return frames.read("find_arrow_all", self._batch_source(), filter or {}, schema, kwargs)

    def find_pandas_all(self, filter: Any = None, *, schema: Any = None, **kwargs: Any) -> Any:
        """Like :meth:`find_arrow_all`, as a :class:`pandas.DataFrame`."""
        return frames.read("find_pandas_all", self._batch_source(), filter or {}, schema, kwargs)

    def find_polars_all(self, filter: Any = None, *, schema: Any = None, **kwargs: Any) -> Any:
        """Like :meth:`find_arrow_all`, as a :class:`polars.DataFrame`."""
        return frames.read("find_polars_all", self._batch_source(), filter or {}, schema, kwargs)

    def find_numpy_all(self, filter: Any = None, *, schema: Any = None, **kwargs: Any) -> Any:
        """Like :meth:`find_arrow_all`, as a dict of numpy arrays (one per field)."""
        return frames.read("find_numpy_all", self._batch_source(), filter or {}, schema, kwargs)

    def aggregate_arrow_all(self, pipeline: Any, *, schema: Any = None, **kwargs: Any) -> Any:
        """The results of ``pipeline`` over this app's documents as a :class:`pyarrow.Table`
        (pymongoarrow's ``aggregate_arrow_all``). Scoped and capped like :meth:`aggregate`;
        ``$out``/``$merge`` are refused (this only reads)."""
        stages = frames.pipeline_copy(pipeline)
        return frames.read("aggregate_arrow_all", self._batch_source(), stages, schema, kwargs)

    def aggregate_pandas_all(self, pipeline: Any, *, schema: Any = None, **kwargs: Any) -> Any:
        """Like :meth:`aggregate_arrow_all`, as a :class:`pandas.DataFrame`."""
        stages = frames.pipeline_copy(pipeline)
        return frames.read("aggregate_pandas_all", self._batch_source(), stages, schema, kwargs)

    def aggregate_polars_all(self, pipeline: Any, *, schema: Any = None, **kwargs: Any) -> Any:
        """Like :meth:`aggregate_arrow_all`, as a :class:`polars.DataFrame`."""
        stages = frames.pipeline_copy(pipeline)
        return frames.read("aggregate_polars_all", self._batch_source(), stages, schema, kwargs)

    def aggregate_numpy_all(self, pipeline: Any, *, schema: Any = None, **kwargs: Any) -> Any:
        """Like :meth:`aggregate_arrow_all`, as a dict of numpy arrays (one per field)."""
        stages = frames.pipeline_copy(pipeline)
        return frames.read("aggregate_numpy_all", self._batch_source(), stages, schema, kwargs)

    # --- AI -----------------------------------------------------------------------------------

    def vector_search(
        self,
        query_vector: Any = None,
        *,
        query_text: str | None = None,
        path: str | None = None,
        limit: int = 10,
        num_candidates: int | None = None,
        filter: Any = None,
        index: str | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Nearest neighbours of ``query_vector`` (or of ``query_text``'s embedding) among this
        app's documents: ``$vectorSearch`` where the server has it, an exact k-NN search where
        it does not; see :func:`mdb_sync.ai.vector_search.vector_search`."""
        return self._scope.host.search(
            "vector",
            self,
            query_vector,
            query_text=query_text,
            path=path,
            limit=limit,
            num_candidates=num_candidates,
            filter=filter,
            index=index,
            **kwargs,
        )

    def hybrid_search(
        self,
        query_text: str,
        *,
        limit: int = 10,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """This app's documents best matching ``query_text`` by keywords and by meaning,
        fused by reciprocal rank fusion: ``$rankFusion`` over ``$search`` and
        ``$vectorSearch`` where the server has them, an exact keyword (BM25) and vector
        search elsewhere; see :func:`mdb_sync.ai.hybrid_search.hybrid_search`."""
        return self._scope.host.search(
            "hybrid", self, query_text, limit=limit, filter=filter, **kwargs
        )


def _change_stages(pipeline: Any, limits: Any) -> list[dict[str, Any]]:
    """Validate a change-stream pipeline (only the stages change streams allow)."""

    if pipeline is None:
        return []
    if isinstance(pipeline, Mapping) or not isinstance(pipeline, (list, tuple)):
        raise QueryValidationError("a change stream pipeline must be a list of stages")
    for stage in pipeline:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise QueryValidationError("each change stream stage must have one operator")
        (op,) = stage
        if op not in CHANGE_STREAM_STAGES:
            raise QueryValidationError(f"{op} is not allowed in a change stream pipeline")
    check_query(list(pipeline), limits, "change stream pipeline")
    return list(pipeline)
