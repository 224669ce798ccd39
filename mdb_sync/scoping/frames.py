"""Columnar reads of a scoped collection: Arrow tables, pandas and polars data frames, numpy
arrays, through pymongoarrow (the ``arrow`` extra).

pymongoarrow reads a pymongo ``Collection``'s raw BSON batches (``find_raw_batches``,
``aggregate_raw_batches``). Handing it the app's raw collection would read around the sandbox,
so this module is the one seam: :class:`ScopedBatchSource` is what pymongoarrow gets — it
answers those two calls with batches of *scoped* cursors (the ``app_id`` filter over every
read scope, the pipeline scoped stage by stage, the guards, capped ``maxTimeMS`` and batch
size) and stops with :class:`~mdb_sync.exceptions.ResourceLimitExceeded` past the engine's
``max_result_docs``, exactly like ``find``. It holds the raw collection privately and never
returns it; ``database.client`` leads nowhere.

The methods on :class:`~mdb_sync.scoping.ScopedCollection` mirror pymongoarrow's functions,
without the collection argument::

    db.tasks.find_pandas_all({"status": "todo"}, projection={"_id": 0, "title": 1})
    db.tasks.aggregate_polars_all([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError, QueryValidationError, ResourceLimitExceeded

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .collection import ScopedCollection

_INSTALL = "pip install 'mdb-sync[arrow]' (pymongoarrow, pandas, polars)"
#: pymongoarrow appends driver metadata through ``collection.database.client`` when that is
#: callable: the seam offers no client at all.
_NO_CLIENT = SimpleNamespace(client=SimpleNamespace(append_metadata=None))


def _writes() -> QueryValidationError:
    return QueryValidationError(
        "$out and $merge write: columnar reads only read (run them with aggregate())"
    )


def _api() -> Any:
    try:
        from pymongoarrow import api
    except ImportError as exc:
        raise ConfigurationError(
            f"columnar reads (find_arrow_all, find_pandas_all, ...) need pymongoarrow: {_INSTALL}"
        ) from exc
    return api


def _require(module: str, method: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise ConfigurationError(f"{method} needs {module}: {_INSTALL}") from exc


class ScopedBatchSource:
    """What pymongoarrow reads from: scoped raw batches of one app's collection."""

    database = _NO_CLIENT

    def __init__(self, scoped: ScopedCollection, raw: Collection[Any]) -> None:
        self.__scoped = scoped
        self.__raw = raw

    @property
    def codec_options(self) -> Any:
        return self.__raw.codec_options

    def __repr__(self) -> str:
        return f"ScopedBatchSource({self.__scoped!r})"

    def find_raw_batches(self, filter: Any = None, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        """Raw batches of ``find(filter, *args, **kwargs)`` over the app's documents."""
        scoped = self.__scoped
        if kwargs.get("cursor_type"):
            raise QueryValidationError("tailable cursors are not available on scoped collections")
        if filter is not None and not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
        if scoped._is_multi():
            # Several read scopes are one aggregation ($unionWith per scope), as for find().
            from .multi import MultiScopeCursor

            cursor = MultiScopeCursor(scoped, filter, *args, **kwargs)
            pipeline, options = cursor.as_aggregation()
            return self.aggregate_raw_batches(pipeline, **options)
        projection = args[0] if args else kwargs.pop("projection", None)
        if projection is not None:
            scoped._guard(_check, projection, scoped._limits, "projection")
        limits = scoped._limits
        kwargs["batch_size"] = limits.cap_batch(kwargs.get("batch_size"))
        kwargs["max_time_ms"] = limits.cap_time(kwargs.get("max_time_ms"))
        if kwargs.get("session") is not None:
            kwargs["session"] = scoped._raw_session(kwargs["session"])
        query = scoped._filter(filter)
        batches = self.__raw.find_raw_batches(query, projection, *args[1:], **kwargs)
        sort = kwargs.get("sort")
        return _capped(batches, scoped.name, limits, "query", lambda: scoped._observe(filter, sort))

    def aggregate_raw_batches(
        self, pipeline: Any, session: Any = None, **kwargs: Any
    ) -> Iterator[bytes]:
        """Raw batches of ``aggregate(pipeline)`` over the app's documents (read-only)."""
        scoped = self.__scoped
        stages = scoped._pipeline(pipeline)
        if any(next(iter(stage)) in ("$out", "$merge") for stage in stages):
            raise _writes()
        limits = scoped._limits
        kwargs["maxTimeMS"] = limits.cap_time(kwargs.pop("max_time_ms", kwargs.get("maxTimeMS")))
        kwargs["batchSize"] = limits.cap_batch(kwargs.get("batchSize"))
        for option in ("let",):
            if kwargs.get(option) is not None:
                scoped._guard(_check, kwargs[option], limits, option)
        raw_session = scoped._raw_session(session)
        batches = self.__raw.aggregate_raw_batches(stages, session=raw_session, **kwargs)
        return _capped(batches, scoped.name, limits, "aggregation")


def _check(value: Any, limits: Any, where: str) -> None:
    from .guards import check_query

    check_query(value, limits, where)


def _capped(
    batches: Any, name: str, limits: Any, what: str, observe: Any = None
) -> Iterator[bytes]:
    """``batches``, stopped with ResourceLimitExceeded past ``max_result_docs`` documents.
    ``observe`` (query-driven indexing) runs when the reading starts: pymongoarrow builds a
    cursor it may never read."""
    from ..portability.rawbson import count_documents

    seen = 0
    if observe is not None:
        observe()
    try:
        for batch in batches:
            seen += count_documents(batch)
            if seen > limits.max_result_docs:
                raise ResourceLimitExceeded(
                    f"the {what} on {name!r} returns more than {limits.max_result_docs} "
                    "documents; add a filter or a limit, or raise the engine's max_result_docs",
                    context={"collection": name, "limit": limits.max_result_docs},
                )
            yield batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


# --- the methods of ScopedCollection -------------------------------------------------------------


def _pipeline_copy(pipeline: Any) -> list[Any]:
    # pymongoarrow appends a $project for a schema to the list it is given: never the caller's.
    if isinstance(pipeline, Mapping) or not isinstance(pipeline, (list, tuple)):
        raise QueryValidationError("a pipeline must be a list of stages")
    for stage in pipeline:
        if isinstance(stage, Mapping) and ({"$out", "$merge"} & set(stage)):
            raise _writes()
    return list(pipeline)


def find_arrow_all(
    self: ScopedCollection, filter: Any = None, *, schema: Any = None, **kwargs: Any
) -> Any:
    """The matching documents of this app as a :class:`pyarrow.Table` (pymongoarrow's
    ``find_arrow_all``: ``schema``, ``allow_invalid``, ``projection``, ``sort``, ``limit``,
    ``skip``... as in ``find``). Scoped and capped exactly like :meth:`find`."""
    return _api().find_arrow_all(self._batch_source(), filter or {}, schema=schema, **kwargs)


def find_pandas_all(
    self: ScopedCollection, filter: Any = None, *, schema: Any = None, **kwargs: Any
) -> Any:
    """Like :func:`find_arrow_all`, as a :class:`pandas.DataFrame`."""
    _require("pandas", "find_pandas_all")
    return _api().find_pandas_all(self._batch_source(), filter or {}, schema=schema, **kwargs)


def find_polars_all(
    self: ScopedCollection, filter: Any = None, *, schema: Any = None, **kwargs: Any
) -> Any:
    """Like :func:`find_arrow_all`, as a :class:`polars.DataFrame`."""
    _require("polars", "find_polars_all")
    return _api().find_polars_all(self._batch_source(), filter or {}, schema=schema, **kwargs)


def find_numpy_all(
    self: ScopedCollection, filter: Any = None, *, schema: Any = None, **kwargs: Any
) -> Any:
    """Like :func:`find_arrow_all`, as a dict of numpy arrays (one per field)."""
    return _api().find_numpy_all(self._batch_source(), filter or {}, schema=schema, **kwargs)


def aggregate_arrow_all(
    self: ScopedCollection, pipeline: Any, *, schema: Any = None, **kwargs: Any
) -> Any:
    """The results of ``pipeline`` over this app's documents as a :class:`pyarrow.Table`
    (pymongoarrow's ``aggregate_arrow_all``). Scoped and capped like :meth:`aggregate`;
    ``$out``/``$merge`` are refused (this only reads)."""
    return _api().aggregate_arrow_all(
        self._batch_source(), _pipeline_copy(pipeline), schema=schema, **kwargs
    )


def aggregate_pandas_all(
    self: ScopedCollection, pipeline: Any, *, schema: Any = None, **kwargs: Any
) -> Any:
    """Like :func:`aggregate_arrow_all`, as a :class:`pandas.DataFrame`."""
    _require("pandas", "aggregate_pandas_all")
    return _api().aggregate_pandas_all(
        self._batch_source(), _pipeline_copy(pipeline), schema=schema, **kwargs
    )


def aggregate_polars_all(
    self: ScopedCollection, pipeline: Any, *, schema: Any = None, **kwargs: Any
) -> Any:
    """Like :func:`aggregate_arrow_all`, as a :class:`polars.DataFrame`."""
    _require("polars", "aggregate_polars_all")
    return _api().aggregate_polars_all(
        self._batch_source(), _pipeline_copy(pipeline), schema=schema, **kwargs
    )


def aggregate_numpy_all(
    self: ScopedCollection, pipeline: Any, *, schema: Any = None, **kwargs: Any
) -> Any:
    """Like :func:`aggregate_arrow_all`, as a dict of numpy arrays (one per field)."""
    return _api().aggregate_numpy_all(
        self._batch_source(), _pipeline_copy(pipeline), schema=schema, **kwargs
    )
