"""Reads over several scopes: one logical collection made of several apps' collections.

``find`` on a collection with read scopes ``a`` and ``b`` cannot be one pymongo ``find``: the
documents live in ``a_tasks`` and ``b_tasks``. :class:`MultiScopeCursor` offers the same chaining
methods as pymongo's ``Cursor`` and runs, on first use, one aggregation: each scope's collection
filtered by its ``app_id`` (``$unionWith``), then the filter, sort, skip, limit and projection.
Filters use ``$match`` semantics, so ``$near``/``$nearSphere``/``$text`` are not available here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pymongo.errors import InvalidOperation

from .._pymongo_seam import index_document as _index_document
from .._pymongo_seam import index_list as _index_list
from ..exceptions import QueryValidationError

if TYPE_CHECKING:
    from .collection import ScopedCollection
    from .cursor import ScopedCommandCursor


class MultiScopeCursor:
    """A find over several read scopes, with pymongo ``Cursor``'s chaining methods."""

    def __init__(
        self,
        collection: ScopedCollection,
        filter: Any = None,
        projection: Any = None,
        skip: int = 0,
        limit: int = 0,
        sort: Any = None,
        batch_size: int = 0,
        collation: Any = None,
        hint: Any = None,
        max_time_ms: int | None = None,
        comment: Any = None,
        session: Any = None,
        allow_disk_use: bool | None = None,
        let: Any = None,
        **unsupported: Any,
    ) -> None:
        if unsupported:
            raise QueryValidationError(
                f"find options {sorted(unsupported)} are not available over several read scopes"
            )
        self._collection = collection
        self._filter = dict(filter or {})
        self._projection = _projection(projection)
        self._skip = skip
        self._limit = abs(limit)
        self._sort = _index_document(_index_list(sort)) if sort else None
        self._options: dict[str, Any] = {
            k: v
            for k, v in {
                "batchSize": batch_size or None,
                "collation": collation,
                "hint": hint,
                "maxTimeMS": max_time_ms,
                "comment": comment,
                "allowDiskUse": allow_disk_use,
                "let": let,
            }.items()
            if v is not None
        }
        self._session = session
        self._cursor: ScopedCommandCursor | None = None

    # --- chaining (before iteration) --------------------------------------------------------

    def _check_unused(self) -> None:
        if self._cursor is not None:
            raise InvalidOperation("cannot set options after executing query")

    def sort(self, key_or_list: Any, direction: Any = None) -> MultiScopeCursor:
        self._check_unused()
        self._sort = _index_document(_index_list(key_or_list, direction))
        return self

    def skip(self, skip: int) -> MultiScopeCursor:
        self._check_unused()
        if not isinstance(skip, int) or skip < 0:
            raise ValueError("skip must be a non-negative integer")
        self._skip = skip
        return self

    def limit(self, limit: int) -> MultiScopeCursor:
        self._check_unused()
        if not isinstance(limit, int):
            raise TypeError("limit must be an integer")
        self._limit = abs(limit)
        return self

    def _option(self, name: str, value: Any) -> MultiScopeCursor:
        self._check_unused()
        if value is None:
            self._options.pop(name, None)
        else:
            self._options[name] = value
        return self

    def batch_size(self, batch_size: int) -> MultiScopeCursor:
        return self._option("batchSize", batch_size or None)

    def max_time_ms(self, max_time_ms: int | None) -> MultiScopeCursor:
        return self._option("maxTimeMS", max_time_ms)

    def collation(self, collation: Any) -> MultiScopeCursor:
        return self._option("collation", collation)

    def hint(self, index: Any) -> MultiScopeCursor:
        return self._option("hint", index)

    def comment(self, comment: Any) -> MultiScopeCursor:
        return self._option("comment", comment)

    def allow_disk_use(self, allow_disk_use: bool) -> MultiScopeCursor:
        return self._option("allowDiskUse", allow_disk_use)

    def where(self, code: Any) -> MultiScopeCursor:
        raise QueryValidationError("cursor.where() is not allowed: $where is refused")

    # --- execution ----------------------------------------------------------------------------

    def _pipeline(self) -> list[dict[str, Any]]:
        stages: list[dict[str, Any]] = []
        if self._filter:
            stages.append({"$match": self._filter})
        if self._sort:
            stages.append({"$sort": dict(self._sort)})
        if self._skip:
            stages.append({"$skip": self._skip})
        if self._limit:
            stages.append({"$limit": self._limit})
        if self._projection:
            stages.append({"$project": self._projection})
        return stages

    def as_aggregation(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``(pipeline, options)``: the aggregation this find runs (before scoping), with the
        options and session of ``aggregate`` (for columnar reads of several scopes)."""
        return self._pipeline(), {**self._options, "session": self._session}

    def _run(self) -> ScopedCommandCursor:
        if self._cursor is None:
            self._cursor = self._collection.aggregate(
                self._pipeline(), session=self._session, **self._options
            )
        return self._cursor

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._run())

    next = __next__

    def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        return self._run().to_list(length)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()

    def __enter__(self) -> MultiScopeCursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._cursor is None or self._cursor.alive

    @property
    def collection(self) -> ScopedCollection:
        return self._collection

    @property
    def session(self) -> Any:
        return self._session

    def rewind(self) -> MultiScopeCursor:
        self.close()
        self._cursor = None
        return self

    def clone(self) -> MultiScopeCursor:
        twin: MultiScopeCursor = MultiScopeCursor.__new__(MultiScopeCursor)
        twin.__dict__.update(self.__dict__)
        twin._options = dict(self._options)
        twin._cursor = None
        return twin

    def distinct(self, key: str) -> list[Any]:
        return self._collection.distinct(key, self._filter or None, session=self._session)

    def explain(self) -> Any:
        raise InvalidOperation("explain() is not available over several read scopes")


def _projection(projection: Any) -> dict[str, Any] | None:
    if projection is None:
        return None
    if isinstance(projection, Mapping):
        return dict(projection) or None
    return {field: 1 for field in projection}
