"""Bulk writes, scoped in one pass over the requests.

The caller's requests (pymongo's ``InsertOne``, ``UpdateOne``... objects) are never rebuilt.
pymongo's ``Collection.bulk_write`` gets one request of ours, a :class:`ScopedBulkFeed`; when
pymongo hands it its internal bulk, the feed lets each caller's request add itself — as pymongo
has it add itself to its own bulk — to a :class:`ScopingBulk` standing in front of pymongo's:
it tags the document (``app_id``, ``_id``), scopes and guards the filter, checks the update,
and passes the scoped operation straight on. Nothing is sent before every request was checked
and the batch's sizes too (pymongo only executes its bulk after the feed returned; the
collection's ``app_id`` index is made sure of last, so a refused batch creates nothing).

The per-operation work is what the sandbox requires and nothing else: one shallow copy of each
inserted document, one copy of each filter with the scope added and of each update's operator
documents (what is checked is what is sent), one pass over each filter and update by the
guards — no request objects, no per-request attribute scans, nothing kept per operation but
the documents and updates whose sizes the batch check encodes. (The operation's metric
therefore includes the scoping, which other operations do before their clock starts.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bson import ObjectId

from .._pymongo_seam import BulkFeed, add_requests
from ..exceptions import QueryValidationError, ScopeError
from .guards import check_query
from .limits import QueryLimits
from .updates import (
    APP_ID,
    scoped_filter,
    scoped_replacement,
    scoped_update,
    tag_document,
)


def namespaced(request: Any) -> ScopeError:
    """The refusal of a request that names a namespace (built for
    ``MongoClient.bulk_write``): a scoped collection writes to itself only."""
    return ScopeError(
        "bulk requests cannot name another namespace in a scoped collection",
        context={"request": type(request).__name__},
    )


class ScopingBulk:
    """What the caller's requests add themselves to: each operation scoped, then added to
    ``bulk`` (pymongo's; the methods and their parameters are its own — see
    ``_pymongo_seam.add_requests``)."""

    __slots__ = ("bulk", "checked", "limits", "scope")

    def __init__(self, bulk: Any, scope: str, limits: QueryLimits) -> None:
        self.bulk = bulk
        self.scope = scope
        self.limits = limits
        #: The documents, replacements and updates whose sizes the batch check encodes.
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
        self.bulk.add_insert(tagged)

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
        update = scoped_update(update, self.scope, limits)
        self.checked.append(update)
        self.bulk.add_update(scoped, update, multi, upsert, collation, array_filters, hint, sort)

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
        self.bulk.add_replace(scoped, tagged, upsert, collation, hint, sort)

    def add_delete(
        self, selector: Any, limit: int, collation: Any = None, hint: Any = None
    ) -> None:
        scoped = scoped_filter(selector, self.scope, self.limits)
        self.bulk.add_delete(scoped, limit, collation, hint)


class ScopedBulkFeed(BulkFeed):
    """The one request a scoped bulk write gives pymongo (see the module docstring).

    ``refused(exc)`` reports a sandbox refusal (logged and counted by the collection),
    ``check_sizes(documents)`` refuses a batch holding a document over the size limit, and
    ``before_write()`` runs once everything passed, before pymongo sends anything."""

    __slots__ = ("_before_write", "_check_sizes", "_limits", "_refused", "_requests", "_scope")

    def __init__(
        self,
        requests: Iterable[Any],
        scope: str,
        limits: QueryLimits,
        refused: Callable[[Exception], None],
        check_sizes: Callable[[list[Any]], None],
        before_write: Callable[[], None],
    ) -> None:
        self._requests = requests
        self._scope = scope
        self._limits = limits
        self._refused = refused
        self._check_sizes = check_sizes
        self._before_write = before_write

    def __repr__(self) -> str:
        return f"<the scoped requests of a bulk write of app {self._scope!r}>"

    def feed(self, bulk: Any) -> None:
        scoping = ScopingBulk(bulk, self._scope, self._limits)
        try:
            add_requests(self._requests, scoping, namespaced)
        except (QueryValidationError, ScopeError) as exc:
            self._refused(exc)
            raise
        self._check_sizes(scoping.checked)
        self._before_write()
