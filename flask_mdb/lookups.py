"""``find_one_or_404``: Flask-PyMongo's shortcut for a view that shows one document.

Flask-PyMongo has it on its collection (``mongo.db.users.find_one_or_404(...)``). A scoped
collection belongs to :mod:`mdb_sync`, which never imports Flask, so here it is a function
taking the collection: ``find_one_or_404(db.users, {"_id": user_id})``. The lookup is the
scoped collection's own ``find_one`` (the app's documents only), so a document of another app
is a 404 like a missing one — the response never tells them apart.
"""

from __future__ import annotations

from typing import Any

from flask import abort

from mdb_sync.scoping import ScopedCollection


def find_one_or_404(
    collection: ScopedCollection,
    filter: Any = None,
    *args: Any,
    description: str | None = None,
    **kwargs: Any,
) -> Any:
    """The first document of ``collection`` matching ``filter`` (a filter, or an ``_id``), or
    abort with 404 (``description``: the message of the 404). Other arguments are
    ``find_one``'s (projection, sort, session...)."""
    if not isinstance(collection, ScopedCollection):
        raise TypeError(
            "find_one_or_404 takes a scoped collection first, e.g. "
            f"find_one_or_404(db.users, {{'_id': user_id}}), not {type(collection).__name__}"
        )
    document = collection.find_one(filter, *args, **kwargs)
    if document is None:
        abort(404, description=description)
    return document
