"""Bulk writes, scoped in one pass over the requests.

The caller's requests (pymongo's ``InsertOne``, ``UpdateOne``... objects) are never rebuilt:
each adds itself, as pymongo has it add itself to its own bulk, to a :class:`ScopedOperations`
— which tags the document (``app_id``, ``_id``), scopes and guards the filter, checks the
update, and keeps the scoped operation as a tuple — and the tuples are then fed to pymongo's
bulk (:class:`ScopedBulkFeed`). Nothing is sent until every request was checked; the caller
checks the sizes of the collected documents in between (:attr:`ScopedOperations.checked`).

The per-operation work is what the sandbox requires and nothing else: one shallow copy of each
inserted document, one copy of each filter with the scope added, one walk over each filter and
update by the guards — no request objects, no per-request attribute scans.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from .._pymongo_seam import BulkFeed
from ..exceptions import ScopeError
from .guards import check_query
from .limits import SERVER_MAX_DOCUMENT_BYTES, QueryLimits
from .updates import (
    APP_ID,
    plain_update_size,
    scoped_filter,
    scoped_replacement,
    scoped_update,
    tag_document,
)

#: Operation kinds, as indexes of the bulk's methods in :meth:`ScopedBulkFeed.feed`.
INSERT, UPDATE, REPLACE, DELETE = 0, 1, 2, 3


def namespaced(request: Any) -> ScopeError:
    """The refusal of a request that names a namespace (built for
    ``MongoClient.bulk_write``): a scoped collection writes to itself only."""
    return ScopeError(
        "bulk requests cannot name another namespace in a scoped collection",
        context={"request": type(request).__name__},
    )


class ScopedOperations:
    """What the caller's requests add themselves to: the scoped operations of one bulk write
    (the methods are those of pymongo's internal bulk; see ``_pymongo_seam.add_requests``)."""

    __slots__ = ("checked", "limits", "ops", "scope", "size_limit")

    def __init__(self, scope: str, limits: QueryLimits) -> None:
        self.scope = scope
        self.limits = limits
        self.size_limit = min(limits.max_document_bytes, SERVER_MAX_DOCUMENT_BYTES)
        #: ``(kind, arguments of the bulk's method)`` per request, in order.
        self.ops: list[tuple[int, tuple[Any, ...]]] = []
        #: The documents, replacements and updates to be written whose sizes the batch check
        #: must encode (an update of plain values known to be small is not among them).
        self.checked: list[Any] = []

    def add_insert(self, document: Any) -> None:
        scope = self.scope
        if type(document) is dict and document.get(APP_ID, scope) == scope:
            tagged = {**document, APP_ID: scope}  # tag_document's copy, in one step
        else:
            tagged = tag_document(document, scope)  # checked (and refused) there
        if "_id" not in tagged:
            # As pymongo does: the caller's document learns its _id (never its app_id).
            tagged["_id"] = ObjectId()
            if isinstance(document, dict):
                document["_id"] = tagged["_id"]
        self.checked.append(tagged)
        self.ops.append((INSERT, (tagged,)))

    def add_update(
        self,
        selector: Any,
        update: Any,
        multi: bool,
        upsert: bool | None,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        limits = self.limits
        if array_filters is not None:
            check_query(array_filters, limits, "array_filters")
        scoped = scoped_filter(selector, self.scope, limits)
        size = plain_update_size(update, limits)
        if size is None:
            update = scoped_update(update, self.scope, limits)
            self.checked.append(update)
        elif size > self.size_limit:
            self.checked.append(update)  # bounded only loosely: the batch check encodes it
        self.ops.append(
            (UPDATE, (scoped, update, multi, upsert, collation, array_filters, hint, sort))
        )

    def add_replace(
        self,
        selector: Any,
        replacement: Any,
        upsert: bool | None,
        collation: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        scoped = scoped_filter(selector, self.scope, self.limits)
        tagged = scoped_replacement(replacement, self.scope)
        self.checked.append(tagged)
        self.ops.append((REPLACE, (scoped, tagged, upsert, collation, hint, sort)))

    def add_delete(
        self, selector: Any, limit: int, collation: Any = None, hint: Any = None
    ) -> None:
        scoped = scoped_filter(selector, self.scope, self.limits)
        self.ops.append((DELETE, (scoped, limit, collation, hint)))


class ScopedBulkFeed(BulkFeed):
    """The one request a scoped bulk write gives pymongo: it adds the scoped operations to
    pymongo's bulk."""

    __slots__ = ("_ops",)

    def __init__(self, ops: list[tuple[int, tuple[Any, ...]]]) -> None:
        self._ops = ops

    def feed(self, bulk: Any) -> None:
        add = (bulk.add_insert, bulk.add_update, bulk.add_replace, bulk.add_delete)
        for kind, arguments in self._ops:
            add[kind](*arguments)
