"""Every use of pymongo's private API, in one module.

The sandbox returns pymongo's own cursors (so ``sort``, ``limit``, ``to_list``, context
managers behave exactly like pymongo's) and takes index specs and bulk requests the way
pymongo does; both need a few names pymongo does not make public. They all live here, each
with why it is needed, so that a pymongo release that renames or removes one breaks this
module and one test — ``tests/test_dependency_seams.py`` checks every name in
:data:`PRIVATES` on the installed pymongo and fails naming it — never the sandbox in some
far corner. ``setup.cfg`` keeps pymongo below its next major version.

Nothing else in the packages may import a pymongo private or read a pymongo object's
underscored attribute: go through the functions here (or add one, and its test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from pymongo import helpers_shared, uri_parser_shared
from pymongo.command_cursor import CommandCursor
from pymongo.cursor import Cursor

#: Each private name used, by the object that has it: what the seam test checks.
PRIVATES: dict[str, tuple[str, ...]] = {
    # Index specs exactly as pymongo reads them ("a", [("a", 1)], {"a": 1}, ...), and the
    # index name pymongo's create_index would give (drop_index by spec needs it).
    "pymongo.helpers_shared": ("_index_list", "_index_document", "_gen_index_name"),
    # The scoped cursor intercepts each batch (result limits, metrics, query shapes) and
    # clones itself with its sandbox state; displays read what was asked for.
    "pymongo.cursor.Cursor": (
        "_refresh",
        "_clone_base",
        "_collection",
        "_ordering",
        "_projection",
        "_skip",
        "_limit",
        "_retrieved",
        "_data",
        "_killed",
        "_id",
    ),
    # Aggregation cursors are built by pymongo, then given the scoped cursor's limits.
    "pymongo.command_cursor.CommandCursor": ("_refresh", "_data", "_killed", "_id"),
    # A connection string's parts without resolving a mongodb+srv:// name in DNS (public
    # parse_uri does: describing a server or reading its database name must not wait on DNS).
    "pymongo.uri_parser_shared": ("_validate_uri",),
    # Bulk write requests are rebuilt scoped: their parts are only held privately.
    "pymongo.operations.UpdateOne": (
        "_doc",
        "_filter",
        "_upsert",
        "_collation",
        "_hint",
        "_array_filters",
        "_sort",
        "_namespace",
    ),
    # The bulk fast path reads an InsertOne's document (and namespace) and nothing else.
    "pymongo.operations.InsertOne": ("_doc", "_namespace"),
    # Pool gauges are read from the client's pools on demand (no pool listener installed):
    # the topology's servers, then each server's public-looking pool (see pool_counters).
    "pymongo.MongoClient": ("_topology",),
    "pymongo.topology.Topology": ("_servers",),
    # Not underscored, yet undocumented: a server's pool and its counters.
    "pymongo.pool.Pool": ("conns", "active_sockets", "operation_count", "gen", "opts"),
    # A scoped session stands in for pymongo's where a cursor carries it: pymongo asks it
    # for the transaction's read preference by this name, and it asks its pymongo session.
    "pymongo.client_session.ClientSession": ("_txn_read_preference",),
}

# --- index specs ---------------------------------------------------------------------------------


def index_list(key_or_list: Any, direction: Any = None) -> list[tuple[str, Any]]:
    """``[(key, direction), ...]`` of an index or sort spec, as pymongo reads it."""
    return list(helpers_shared._index_list(key_or_list, direction))


def index_document(spec: Any) -> dict[str, Any]:
    """The ``{key: direction}`` document of an index list (pymongo's validation included)."""
    return helpers_shared._index_document(spec)


def gen_index_name(keys: Any) -> str:
    """The name pymongo gives an index on ``keys`` (an index list): ``"a_1_b_-1"``."""
    return helpers_shared._gen_index_name(keys)


# --- connection strings ------------------------------------------------------------------------


def parse_uri_offline(uri: str, *, validate: bool = True) -> dict[str, Any]:
    """pymongo's parse of ``uri`` (``nodelist``, ``username``, ``password``, ``database``,
    ``options``, ``fqdn``) without the DNS lookup ``mongodb+srv://`` makes in ``parse_uri``.
    Raises pymongo's ``InvalidURI``/``ConfigurationError`` (both ``PyMongoError``)."""
    return uri_parser_shared._validate_uri(uri, validate=validate, warn=False)


# --- bulk write requests -------------------------------------------------------------------------

#: Options of a bulk request (keyword name, pymongo attribute).
_BULK_OPTIONS = (
    ("collation", "_collation"),
    ("hint", "_hint"),
    ("array_filters", "_array_filters"),
    ("sort", "_sort"),
)


class BulkRequestParts(NamedTuple):
    """What a pymongo bulk write request (``InsertOne``, ``UpdateOne``...) holds (a named
    tuple: built for every request of a bulk write, it must cost next to nothing)."""

    document: Any
    filter: Any
    upsert: bool
    options: Mapping[str, Any]
    namespace: Any


def bulk_request_parts(request: Any) -> BulkRequestParts:
    """The parts of ``request``: its document (or update), filter, upsert flag, options that
    are set (``collation``, ``hint``, ``array_filters``, ``sort``) and namespace (only
    ``ClientSession.bulk_write`` requests have one)."""
    options = {}
    for name, attribute in _BULK_OPTIONS:
        value = getattr(request, attribute, None)
        if value is not None:
            options[name] = value
    return BulkRequestParts(
        getattr(request, "_doc", None),
        getattr(request, "_filter", None),
        bool(getattr(request, "_upsert", False)),
        options,
        getattr(request, "_namespace", None),
    )


def insert_request_parts(request: Any) -> tuple[Any, Any]:
    """The document and namespace of an ``InsertOne`` (namespace None unless it came from
    ``ClientSession.bulk_write``): all the bulk path's fast case reads, two attribute reads
    instead of :func:`bulk_request_parts`' option scan."""
    return request._doc, request._namespace


# --- sessions ------------------------------------------------------------------------------------


def txn_read_preference(session: Any) -> Any:
    """The read preference of ``session``'s transaction in progress, None outside one (what
    pymongo's cursors ask the session they carry for, by this private name)."""
    return session._txn_read_preference()


# --- connection pools ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolCounters:
    """What one server's connection pool counts right now."""

    idle: int
    in_use: int
    operations: int
    generation: int
    max_size: int | None


def pool_counters(client: Any) -> list[PoolCounters]:
    """The counters of every server pool of ``client`` (a ``MongoClient``), read now: no I/O,
    no lock. pymongo has no public API for them; a pymongo that keeps them elsewhere raises
    ``AttributeError`` or ``TypeError`` (the caller reports the gauges unmonitored)."""
    counters = []
    for server in list(client._topology._servers.values()):
        pool = server.pool
        counters.append(
            PoolCounters(
                idle=len(pool.conns),
                in_use=pool.active_sockets,
                operations=pool.operation_count,
                generation=pool.gen.get_overall(),
                max_size=pool.opts.max_pool_size,
            )
        )
    return counters


# --- cursors -------------------------------------------------------------------------------------

C = TypeVar("C", bound=Cursor)  # type: ignore[type-arg]


class HookedCursor(Cursor):  # type: ignore[type-arg]
    """pymongo's :class:`~pymongo.cursor.Cursor` with the two private methods a subclass
    must intercept turned into hooks of its own: :meth:`_mdb_fetch` (pymongo's
    ``_refresh``: each batch) and :meth:`_mdb_clone` (pymongo's ``_clone_base``:
    ``clone()``, ``rewind()``...)."""

    def _refresh(self) -> int:
        return self._mdb_fetch(super()._refresh)

    def _clone_base(self, session: Any) -> Any:
        return self._mdb_clone(session)

    def _mdb_fetch(self, fetch: Callable[[], int]) -> int:
        """Get the next batch with ``fetch()`` (a number of documents, 0 when done)."""
        return fetch()

    def _mdb_clone(self, session: Any) -> Any:
        """A fresh cursor like this one (pymongo copies the query options onto it)."""
        return Cursor._clone_base(self, session)


def bare_clone(cursor: C, session: Any) -> C:
    """A new, unstarted instance of ``cursor``'s class on the same raw collection, built
    without the subclass's ``__init__`` (whose state the caller copies over)."""
    clone = cursor.__class__.__new__(cursor.__class__)
    Cursor.__init__(clone, cursor._collection, session=session)
    return clone


def cursor_query(cursor: Cursor) -> dict[str, Any]:  # type: ignore[type-arg]
    """What ``cursor`` was asked for: projection, sort, skip, limit (no I/O)."""
    return {
        "projection": cursor._projection,
        "sort": dict(cursor._ordering) if cursor._ordering else None,
        "skip": cursor._skip,
        "limit": cursor._limit,
    }


def cursor_sort(cursor: Cursor) -> Any:  # type: ignore[type-arg]
    """The sort of ``cursor`` (a ``{key: direction}`` document) or None."""
    return cursor._ordering


def documents_retrieved(cursor: Cursor) -> int:  # type: ignore[type-arg]
    """How many documents ``cursor`` has received from the server so far."""
    return int(cursor._retrieved)


def documents_buffered(cursor: Cursor | CommandCursor) -> int:  # type: ignore[type-arg]
    """How many received documents ``cursor`` holds and has not yielded yet."""
    return len(cursor._data)


def will_send(cursor: Cursor | CommandCursor) -> str | None:  # type: ignore[type-arg]
    """The command fetching ``cursor``'s next batch will send — ``"find"`` (a find cursor
    not started yet), ``"getMore"`` — or None when it sends nothing (documents are still
    buffered, or the cursor is exhausted or closed)."""
    if cursor._data or cursor._killed:
        return None
    if cursor._id is None:
        return "find" if isinstance(cursor, Cursor) else None
    return "getMore" if cursor._id else None


CC = TypeVar("CC", bound=CommandCursor)  # type: ignore[type-arg]


class HookedCommandCursor(CommandCursor):  # type: ignore[type-arg]
    """pymongo's :class:`~pymongo.command_cursor.CommandCursor` with its private
    ``_refresh`` turned into the hook :meth:`_mdb_fetch`."""

    def _refresh(self) -> int:
        return self._mdb_fetch(super()._refresh)

    def _mdb_fetch(self, fetch: Callable[[], int]) -> int:
        return fetch()


def adopt_command_cursor(cursor: CommandCursor, cls: type[CC]) -> CC:  # type: ignore[type-arg]
    """``cursor``, built by pymongo (``aggregate``, ``list_indexes``...), made an instance of
    ``cls`` — a :class:`HookedCommandCursor` subclass adding no slots — in place: pymongo
    offers no way to choose the class of the cursors it builds."""
    if not issubclass(cls, HookedCommandCursor):
        raise TypeError(f"{cls.__name__} must subclass HookedCommandCursor")
    cursor.__class__ = cls
    return cursor  # type: ignore[return-value]


__all__ = [
    "PRIVATES",
    "BulkRequestParts",
    "HookedCommandCursor",
    "HookedCursor",
    "PoolCounters",
    "adopt_command_cursor",
    "bare_clone",
    "bulk_request_parts",
    "cursor_query",
    "cursor_sort",
    "documents_buffered",
    "documents_retrieved",
    "gen_index_name",
    "index_document",
    "index_list",
    "insert_request_parts",
    "pool_counters",
    "txn_read_preference",
    "will_send",
]
