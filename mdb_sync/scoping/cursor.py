"""pymongo's own :class:`~pymongo.cursor.Cursor`, built from a scoped filter.

Subclassing (rather than wrapping) keeps every chaining method, context manager and
``to_list`` exactly as pymongo has them. The subclass only closes the paths that would leave
the sandbox or its limits: ``collection`` returns the scoped collection (never the raw one,
whose ``.database.client`` would be one attribute away), ``where()`` is refused, batch sizes
and ``max_time_ms`` are capped, and a result larger than the engine's ``max_result_docs``
raises :class:`ResourceLimitExceeded` instead of being silently truncated.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from pymongo.command_cursor import CommandCursor
from pymongo.cursor import Cursor

from .._pymongo_seam import (
    HookedCommandCursor,
    HookedCursor,
    adopt_command_cursor,
    bare_clone,
    cursor_query,
    cursor_sort,
    documents_buffered,
    documents_retrieved,
    will_send,
)
from ..display import call_repr, cursor_fields, cursor_html
from ..exceptions import QueryValidationError, ResourceLimitExceeded

if TYPE_CHECKING:
    from .collection import ScopedCollection
    from .limits import QueryLimits

#: Records one operation: ``meter(name, perf_counter() before, success)``.
Meter = Callable[[str, float, bool], None]


class ScopedCursor(HookedCursor):
    """A :class:`pymongo.cursor.Cursor` over one app's documents (pymongo's private hooks
    reached through :class:`~mdb_sync._pymongo_seam.HookedCursor`).

    Built by :class:`~mdb_sync.scoping.ScopedCollection` only, from the scoped filter and
    what the collection holds: its limits, its operation ``meter``, the ``observe`` hook of
    query-driven indexing (called once, when the cursor first runs) and the pymongo session
    behind ``scoped_session`` (passed as pymongo's ``session``).
    """

    def __init__(
        self,
        collection: Any,
        filter: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scoped: ScopedCollection,
        limits: QueryLimits,
        meter: Meter | None,
        observe: Callable[[Any, Any], None] | None,
        user_filter: Any,
        scoped_session: Any,
        uncapped: bool,
    ):
        """pymongo's ``Cursor(collection, filter, *args, **kwargs)`` (positional parameters:
        it is built on every ``find``)."""
        self._mdb_scoped = scoped
        self._mdb_user_filter = user_filter
        self._mdb_uncapped = uncapped
        self._mdb_limits = limits
        self._mdb_meter = meter
        self._mdb_observe = observe
        self._mdb_session = scoped_session
        # The caps of QueryLimits.cap_batch / cap_time, without a call when nothing is asked.
        batch_size = kwargs.get("batch_size")
        kwargs["batch_size"] = limits.cap_batch(batch_size) if batch_size else limits.max_batch_size
        max_time_ms = kwargs.get("max_time_ms")
        kwargs["max_time_ms"] = (
            limits.default_max_time_ms if max_time_ms is None else limits.cap_time(max_time_ms)
        )
        Cursor.__init__(self, collection, filter, *args, **kwargs)

    @property
    def collection(self) -> ScopedCollection:  # type: ignore[override]
        """The scoped collection this cursor iterates (not the raw pymongo collection)."""
        return self._mdb_scoped

    def _mdb_query_spec(self) -> dict[str, Any]:
        """What this cursor was asked for: the caller's filter (not the scoped one), the
        projection, sort, skip and limit (for displays; no I/O)."""
        return {
            "app": self._mdb_scoped.database.app_slug,
            "collection": self._mdb_scoped.name,
            "filter": self._mdb_user_filter or {},
            **cursor_query(self),
        }

    def __repr__(self) -> str:
        return call_repr("ScopedCursor", cursor_fields(self._mdb_query_spec()))

    def _repr_html_(self) -> str:
        return cursor_html(self._mdb_query_spec())

    @property
    def session(self) -> Any:
        """The session passed to ``find`` (the scoped wrapper), if any."""
        return self._mdb_session

    def _mdb_clone(self, session: Any) -> ScopedCursor:
        clone: ScopedCursor = bare_clone(self, session)
        clone._mdb_scoped = self._mdb_scoped
        clone._mdb_user_filter = self._mdb_user_filter
        clone._mdb_uncapped = self._mdb_uncapped
        clone._mdb_limits = self._mdb_limits
        clone._mdb_meter = self._mdb_meter
        clone._mdb_observe = self._mdb_observe
        clone._mdb_session = self._mdb_session
        return clone

    def where(self, code: Any) -> ScopedCursor:
        raise QueryValidationError(
            "cursor.where() is not allowed: server-side JavaScript ($where) is refused",
            context={"operator": "$where"},
        )

    def batch_size(self, batch_size: int) -> ScopedCursor:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise TypeError("batch_size must be an integer")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        super().batch_size(self._mdb_limits.cap_batch(batch_size))
        return self

    def max_time_ms(self, max_time_ms: int | None) -> ScopedCursor:
        if max_time_ms is not None and not isinstance(max_time_ms, int):
            raise TypeError("max_time_ms must be an integer or None")
        super().max_time_ms(self._mdb_limits.cap_time(max_time_ms))
        return self

    def _mdb_fetch(self, fetch: Callable[[], int]) -> int:
        observe = self._mdb_observe
        if observe is not None:
            self._mdb_observe = None  # once per cursor
            observe(self._mdb_user_filter, cursor_sort(self))
        meter = self._mdb_meter
        name = None if meter is None else will_send(self)
        if meter is None or name is None:
            count = fetch()  # nothing is sent (or pymongo's listeners record it)
        else:
            started = perf_counter()
            try:
                count = fetch()
            except BaseException:
                meter(name, started, False)
                raise
            meter(name, started, True)
        if documents_retrieved(self) > self._mdb_limits.max_result_docs and not self._mdb_uncapped:
            self.close()
            raise ResourceLimitExceeded(
                f"the query on {self._mdb_scoped.name!r} returns more than "
                f"{self._mdb_limits.max_result_docs} documents; add a limit, paginate, or raise "
                "the engine's max_result_docs",
                context={
                    "collection": self._mdb_scoped.name,
                    "limit": self._mdb_limits.max_result_docs,
                },
            )
        return count


class ScopedCommandCursor(HookedCommandCursor):
    """pymongo's :class:`~pymongo.command_cursor.CommandCursor` of a scoped aggregation.

    pymongo builds the cursor; :meth:`adopt` re-classes it so that results are bounded like
    :class:`ScopedCursor`'s and ``session`` returns the scoped session.
    """

    _mdb_name: str
    _mdb_limits: Any
    _mdb_session: Any
    _mdb_seen: int
    _mdb_uncapped: bool = False
    _mdb_meter: Any = None

    @classmethod
    def adopt(
        cls,
        cursor: CommandCursor[dict[str, Any]],
        name: str,
        limits: QueryLimits,
        session: Any,
        meter: Meter | None = None,
        uncapped: bool = False,
    ) -> ScopedCommandCursor:
        """``cursor`` (built by pymongo for collection ``name``) as a scoped command cursor:
        bounded by ``limits`` (unless ``uncapped``), its getMores recorded by ``meter``,
        ``session`` (the scoped session) its ``session``."""
        scoped: ScopedCommandCursor = adopt_command_cursor(cursor, cls)
        scoped._mdb_name = name
        scoped._mdb_limits = limits
        scoped._mdb_session = session
        scoped._mdb_meter = meter
        scoped._mdb_uncapped = uncapped
        scoped._mdb_seen = documents_buffered(scoped)
        return scoped

    @property
    def session(self) -> Any:
        return self._mdb_session

    def _mdb_fetch(self, fetch: Callable[[], int]) -> int:
        before = documents_buffered(self)
        meter = self._mdb_meter
        name = None if meter is None else will_send(self)
        if name is None:
            count = fetch()  # nothing sent (or pymongo's listeners record it)
        else:
            started = perf_counter()
            try:
                count = fetch()
            except BaseException:
                meter(name, started, False)
                raise
            meter(name, started, True)
        self._mdb_seen += max(0, documents_buffered(self) - before)
        if self._mdb_seen > self._mdb_limits.max_result_docs and not self._mdb_uncapped:
            self.close()
            raise ResourceLimitExceeded(
                f"the aggregation on {self._mdb_name!r} returns more than "
                f"{self._mdb_limits.max_result_docs} documents; add a $limit, paginate, or raise "
                "the engine's max_result_docs",
                context={"collection": self._mdb_name, "limit": self._mdb_limits.max_result_docs},
            )
        return count
