"""ScopedCollection: one app's view of a logical collection.

Every method is written out (allow-listed); there is no ``__getattr__`` delegation to the
raw pymongo collection, so nothing unscoped is reachable by accident. Reads are filtered by
``app_id``, writes are tagged with and restricted to the write scope, and pymongo's own
result objects and cursors are returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo.collection import Collection
from pymongo.errors import DocumentTooLarge
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

from ..exceptions import QueryValidationError, ResourceLimitExceeded, ScopeError
from .cursor import ScopedCursor
from .guards import check_query
from .limits import SERVER_MAX_DOCUMENT_BYTES
from .session import ScopedSession

if TYPE_CHECKING:
    from .database import ScopedDatabase

APP_ID = "app_id"

# Update operators whose keys are field paths (``$rename`` values are paths too).
_PATH_OPERATORS = frozenset(
    {
        "$set",
        "$unset",
        "$inc",
        "$mul",
        "$min",
        "$max",
        "$rename",
        "$currentDate",
        "$setOnInsert",
        "$push",
        "$addToSet",
        "$pop",
        "$pull",
        "$pullAll",
        "$bit",
    }
)


def _touches_app_id(path: Any) -> bool:
    return isinstance(path, str) and (path == APP_ID or path.startswith(APP_ID + "."))


class ScopedCollection:
    """A collection of one app: ``db.tasks`` of app ``my_app`` is ``my_app_tasks``."""

    __slots__ = ("__coll", "_db", "_limits", "_name", "_scope_clause", "_write_scope")

    def __init__(self, database: ScopedDatabase, name: str, raw: Collection[Any]) -> None:
        self._db = database
        self._name = name
        self.__coll = raw
        self._limits = database._limits
        self._write_scope = database.write_scope
        self._scope_clause = {APP_ID: database.write_scope}

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

    def __repr__(self) -> str:
        return f"ScopedCollection(app={self._db.app_slug!r}, name={self._name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScopedCollection):
            return NotImplemented
        return self._db == other._db and self._name == other._name

    def __hash__(self) -> int:
        return hash((self._db, self._name))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"ScopedCollection has no attribute {name!r}. Scoped collections expose an "
            "allow-list of pymongo's Collection methods; sub-collections are reached with "
            f"db[{self._name + '.' + name!r}]"
        )

    def __iter__(self) -> Any:
        raise TypeError("'ScopedCollection' object is not iterable")

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "ScopedCollection objects do not implement truth value testing or bool(); "
            "compare with None instead"
        )

    # --- helpers ------------------------------------------------------------------------------

    def _raw_session(self, session: Any) -> Any:
        if session is None:
            return None
        if isinstance(session, ScopedSession):
            return session._raw()
        raise TypeError(
            "session must be a session from this scoped database's client_session(), "
            f"not {type(session).__name__}"
        )

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "session" in kwargs:
            kwargs["session"] = self._raw_session(kwargs["session"])
        return kwargs

    def _filter(self, filter: Any, where: str = "filter") -> dict[str, Any]:
        """``{"$and": [filter, {"app_id": scope}]}`` after the guards, or the bare scope."""
        if filter is None:
            return {APP_ID: self._write_scope}
        if not isinstance(filter, Mapping):
            raise TypeError(f"{where} must be a mapping, not {type(filter).__name__}")
        if not filter:
            return {APP_ID: self._write_scope}
        check_query(filter, self._limits, where)
        return {"$and": [filter, {APP_ID: self._write_scope}]}

    def _tagged(self, document: Any) -> dict[str, Any]:
        """A shallow copy of ``document`` carrying the write scope's ``app_id``."""
        if not isinstance(document, Mapping):
            raise TypeError(f"document must be a mapping, not {type(document).__name__}")
        owner = document.get(APP_ID, self._write_scope)
        if owner != self._write_scope:
            self._db._security_event("insert carrying another app_id", self._name)
            raise ScopeError(
                f"document carries app_id {owner!r}; app {self._write_scope!r} can only write "
                "its own documents",
                context={"app": self._write_scope, "collection": self._name},
            )
        tagged = dict(document)
        tagged[APP_ID] = self._write_scope
        if self._limits.max_document_bytes < SERVER_MAX_DOCUMENT_BYTES:
            self._check_size(tagged)
        return tagged

    def _check_size(self, document: Mapping[str, Any]) -> None:
        from bson import encode

        size = len(encode(document, codec_options=self.__coll.codec_options))
        if size > self._limits.max_document_bytes:
            raise ResourceLimitExceeded(
                f"document of {size} bytes exceeds the limit of "
                f"{self._limits.max_document_bytes} bytes",
                context={"collection": self._name, "size": size},
            )

    def _too_large(self, exc: DocumentTooLarge) -> ResourceLimitExceeded:
        return ResourceLimitExceeded(
            f"document too large for {self._name!r}: {exc}", context={"collection": self._name}
        )

    def _check_update(self, update: Any) -> Any:
        """Refuse operator updates that touch ``app_id``; make pipeline updates harmless."""
        if isinstance(update, Mapping):
            if not update:
                raise ValueError("update cannot be empty")
            for op, spec in update.items():
                if not isinstance(op, str) or not op.startswith("$"):
                    raise ValueError(
                        "update only works with $ operators; use replace_one() to replace"
                    )
                if op in _PATH_OPERATORS and isinstance(spec, Mapping):
                    for path, value in spec.items():
                        if _touches_app_id(path) or (op == "$rename" and _touches_app_id(value)):
                            self._db._security_event(f"update {op} of app_id", self._name)
                            raise ScopeError(
                                f"{op} on {path!r} would change app_id, which the sandbox owns",
                                context={"collection": self._name, "operator": op},
                            )
            check_query(update, self._limits, "update")
            return update
        if isinstance(update, (list, tuple)):
            stages = list(update)
            check_query(stages, self._limits, "update pipeline")
            # Whatever the stages do, the document ends in this app's scope.
            return [*stages, {"$set": {APP_ID: self._write_scope}}]
        raise TypeError(f"update must be a mapping or a list, not {type(update).__name__}")

    def _replacement(self, replacement: Any) -> dict[str, Any]:
        if isinstance(replacement, Mapping) and any(
            isinstance(k, str) and k.startswith("$") for k in replacement
        ):
            raise ValueError("replacement can not include $ operators")
        return self._tagged(replacement)

    def _observe_find(self, cursor: ScopedCursor) -> None:
        """Called once when a cursor first runs: feeds query-driven indexing."""
        self._db._observe_query(self._name, self.__coll, cursor._mdb_user_filter, cursor._ordering)

    # --- writes -------------------------------------------------------------------------------

    def insert_one(self, document: Any, **kwargs: Any) -> InsertOneResult:
        """Insert ``document`` tagged with this app's ``app_id`` (``document`` gets its
        ``_id``, as with pymongo, but not ``app_id``)."""
        tagged = self._tagged(document)
        try:
            result = self.__coll.insert_one(tagged, **self._kwargs(kwargs))
        except DocumentTooLarge as exc:
            raise self._too_large(exc) from exc
        if "_id" not in document and isinstance(document, dict):
            document["_id"] = tagged["_id"]
        return result

    def insert_many(
        self, documents: Iterable[Any], ordered: bool = True, **kwargs: Any
    ) -> InsertManyResult:
        """Insert ``documents``, each tagged with this app's ``app_id``."""
        if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
            raise TypeError("documents must be a non-empty list")
        originals = list(documents)
        if not originals:
            raise TypeError("documents must be a non-empty list")
        tagged = [self._tagged(doc) for doc in originals]
        for doc, original in zip(tagged, originals, strict=False):
            doc.setdefault("_id", ObjectId())
            if "_id" not in original and isinstance(original, dict):
                original["_id"] = doc["_id"]
        try:
            return self.__coll.insert_many(tagged, ordered=ordered, **self._kwargs(kwargs))
        except DocumentTooLarge as exc:
            raise self._too_large(exc) from exc

    def update_one(
        self, filter: Any, update: Any, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        return self.__coll.update_one(
            self._filter(filter), self._check_update(update), upsert=upsert, **self._kwargs(kwargs)
        )

    def update_many(
        self, filter: Any, update: Any, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        return self.__coll.update_many(
            self._filter(filter), self._check_update(update), upsert=upsert, **self._kwargs(kwargs)
        )

    def replace_one(
        self, filter: Any, replacement: Any, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        return self.__coll.replace_one(
            self._filter(filter),
            self._replacement(replacement),
            upsert=upsert,
            **self._kwargs(kwargs),
        )

    def delete_one(self, filter: Any, **kwargs: Any) -> DeleteResult:
        return self.__coll.delete_one(self._filter(filter), **self._kwargs(kwargs))

    def delete_many(self, filter: Any, **kwargs: Any) -> DeleteResult:
        return self.__coll.delete_many(self._filter(filter), **self._kwargs(kwargs))

    # --- reads --------------------------------------------------------------------------------

    def find(self, filter: Any = None, *args: Any, **kwargs: Any) -> ScopedCursor:
        """Like :meth:`pymongo.collection.Collection.find`, over this app's documents."""
        if "$where" in kwargs or kwargs.get("cursor_type"):
            raise QueryValidationError("tailable and $where cursors are not available here")
        return ScopedCursor(
            self.__coll, self._filter(filter), *args, scoped=self, user_filter=filter, **kwargs
        )

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`pymongo.collection.Collection.find_one`; ``filter`` may be an ``_id``."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        kwargs["limit"] = -1
        for doc in self.find(filter, *args, **kwargs):
            return doc
        return None

    def count_documents(self, filter: Any, **kwargs: Any) -> int:
        kwargs.setdefault("maxTimeMS", self._limits.default_max_time_ms)
        kwargs["maxTimeMS"] = self._limits.cap_time(kwargs["maxTimeMS"])
        scoped = self._filter(filter)
        self._db._observe_query(self._name, self.__coll, filter, None)
        return self.__coll.count_documents(scoped, **self._kwargs(kwargs))

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
        from ..ai.vector_search import vector_search

        return vector_search(
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
