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

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pymongo import helpers_shared, uri_parser_shared
from pymongo.command_cursor import CommandCursor
from pymongo.cursor import Cursor
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

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
    # Bulk write requests hand their parts to a bulk through this method (pymongo's own
    # Collection.bulk_write calls it), and a request of MongoClient.bulk_write names its
    # namespace here: a scoped bulk write reads each request that way.
    "pymongo.operations.InsertOne": ("_add_to_bulk", "_namespace"),
    "pymongo.operations.UpdateOne": ("_add_to_bulk", "_namespace"),
    "pymongo.operations.UpdateMany": ("_add_to_bulk", "_namespace"),
    "pymongo.operations.ReplaceOne": ("_add_to_bulk", "_namespace"),
    "pymongo.operations.DeleteOne": ("_add_to_bulk", "_namespace"),
    "pymongo.operations.DeleteMany": ("_add_to_bulk", "_namespace"),
    # ...to the methods of pymongo's internal bulk, which a scoped bulk write mirrors (the
    # requests add themselves to it), then feeds with the scoped operations.
    "pymongo.synchronous.bulk._Bulk": ("add_insert", "add_update", "add_replace", "add_delete"),
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

#: pymongo's write request classes (what ``Collection.bulk_write`` takes).
REQUEST_CLASSES = (InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne, DeleteMany)
_REQUEST_TYPES = frozenset(REQUEST_CLASSES)


def add_requests(
    requests: Iterable[Any], target: Any, namespaced: Callable[[Any], Exception]
) -> int:
    """Let each of pymongo's write ``requests`` add itself to ``target``, as pymongo's own
    ``Collection.bulk_write`` has them add themselves to its internal bulk: ``target`` has
    that bulk's methods — ``add_insert(document)``, ``add_update(selector, update, multi,
    upsert, collation=None, array_filters=None, hint=None, sort=None)``,
    ``add_replace(selector, replacement, upsert, collation=None, hint=None, sort=None)``,
    ``add_delete(selector, limit, collation=None, hint=None)``. Returns how many there were.

    Anything but a pymongo write request raises ``TypeError``; a request that names a
    namespace (one built for ``MongoClient.bulk_write``) raises ``namespaced(request)``.
    """
    count = 0
    for request in requests:
        if type(request) not in _REQUEST_TYPES and not isinstance(request, REQUEST_CLASSES):
            raise TypeError(f"{request!r} is not a valid bulk write request")
        if request._namespace is not None:
            raise namespaced(request)
        request._add_to_bulk(target)
        count += 1
    return count


class BulkFeed:
    """What to give pymongo's ``Collection.bulk_write`` as its one request: pymongo hands
    its internal bulk (through the ``_add_to_bulk`` every request has) to :meth:`feed`,
    which adds the operations with the bulk's methods (see :func:`add_requests`)."""

    __slots__ = ()

    def _add_to_bulk(self, bulk: Any) -> None:
        self.feed(bulk)

    def feed(self, bulk: Any) -> None:
        raise NotImplementedError


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
    "REQUEST_CLASSES",
    "BulkFeed",
    "HookedCommandCursor",
    "HookedCursor",
    "PoolCounters",
    "add_requests",
    "adopt_command_cursor",
    "bare_clone",
    "cursor_query",
    "cursor_sort",
    "documents_buffered",
    "documents_retrieved",
    "gen_index_name",
    "index_document",
    "index_list",
    "pool_counters",
    "txn_read_preference",
    "will_send",
]
