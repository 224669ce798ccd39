"""Columnar reads of a scoped collection: Arrow tables, pandas and polars data frames, numpy
arrays, through pymongoarrow (the ``arrow`` extra).

pymongoarrow reads a pymongo ``Collection``'s raw BSON batches (``find_raw_batches``,
``aggregate_raw_batches``). Handing it the app's raw collection would read around the sandbox,
so :class:`ScopedBatchSource` is what pymongoarrow gets instead — it answers those two calls
with the scoped collection's own raw batches (the ``app_id`` filter over every read scope,
the pipeline scoped stage by stage, the guards, capped ``maxTimeMS`` and batch size),
stopped with :class:`~mdb_sync.exceptions.ResourceLimitExceeded` past the engine's
``max_result_docs`` (:func:`capped_batches`), exactly like ``find``. It holds no raw
collection at all; ``database.client`` leads nowhere.

The methods on :class:`~mdb_sync.scoping.ScopedCollection` mirror pymongoarrow's functions,
without the collection argument::

    db.tasks.find_pandas_all({"status": "todo"}, projection={"_id": 0, "title": 1})
    db.tasks.aggregate_polars_all([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

from ..bsonraw import count_documents
from ..exceptions import ConfigurationError, QueryValidationError, ResourceLimitExceeded

_INSTALL = "pip install 'mdb-sync[arrow]' (pymongoarrow, pandas, polars)"
#: pymongoarrow appends driver metadata through ``collection.database.client`` when that is
#: callable: the source offers no client at all.
_NO_CLIENT = SimpleNamespace(client=SimpleNamespace(append_metadata=None))
#: The data-frame library each reader needs besides pymongoarrow.
_NEEDS = {"pandas": "pandas", "polars": "polars"}


def writes_refused() -> QueryValidationError:
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
    """What pymongoarrow reads from: scoped raw batches of one app's collection.

    ``find`` and ``aggregate`` are the scoped collection's own batch readers (see
    ``ScopedCollection._find_batches``); the source adds nothing but pymongoarrow's names.
    """

    database = _NO_CLIENT

    def __init__(
        self,
        label: str,
        codec_options: Any,
        find: Callable[..., Iterator[bytes]],
        aggregate: Callable[..., Iterator[bytes]],
    ) -> None:
        self.__label = label
        self.__codec_options = codec_options
        self.__find = find
        self.__aggregate = aggregate

    @property
    def codec_options(self) -> Any:
        return self.__codec_options

    def __repr__(self) -> str:
        return f"ScopedBatchSource({self.__label})"

    def find_raw_batches(self, filter: Any = None, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        """Raw batches of ``find(filter, *args, **kwargs)`` over the app's documents."""
        return self.__find(filter, *args, **kwargs)

    def aggregate_raw_batches(
        self, pipeline: Any, session: Any = None, **kwargs: Any
    ) -> Iterator[bytes]:
        """Raw batches of ``aggregate(pipeline)`` over the app's documents (read-only)."""
        return self.__aggregate(pipeline, session, **kwargs)


def capped_batches(
    batches: Any, name: str, limits: Any, what: str, observe: Any = None
) -> Iterator[bytes]:
    """``batches``, stopped with ResourceLimitExceeded past ``max_result_docs`` documents.
    ``observe`` (query-driven indexing) runs when the reading starts: pymongoarrow builds a
    cursor it may never read."""
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


def pipeline_copy(pipeline: Any) -> list[Any]:
    """A copy of ``pipeline`` for pymongoarrow, which appends a ``$project`` for a schema to
    the list it is given (never the caller's); ``$out``/``$merge`` refused."""
    if isinstance(pipeline, Mapping) or not isinstance(pipeline, (list, tuple)):
        raise QueryValidationError("a pipeline must be a list of stages")
    for stage in pipeline:
        if isinstance(stage, Mapping) and ({"$out", "$merge"} & set(stage)):
            raise writes_refused()
    return list(pipeline)


def read(function: str, source: ScopedBatchSource, query: Any, schema: Any, kwargs: Any) -> Any:
    """pymongoarrow's ``function`` (``find_pandas_all``, ``aggregate_arrow_all``...) over
    ``source``: what the columnar methods of ``ScopedCollection`` run."""
    library = function.split("_")[1]
    if library in _NEEDS:
        _require(_NEEDS[library], function)
    return getattr(_api(), function)(source, query, schema=schema, **kwargs)
