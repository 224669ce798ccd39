"""The sandbox: scoped databases, collections and cursors (see the sandbox contract)."""

from .collection import ScopedCollection
from .cursor import ScopedCursor
from .database import ScopedDatabase
from .limits import QueryLimits
from .names import physical_name, slugs_overlap, validate_collection_name, validate_slug
from .session import ScopedSession

__all__ = [
    "QueryLimits",
    "ScopedCollection",
    "ScopedCursor",
    "ScopedDatabase",
    "ScopedSession",
    "physical_name",
    "slugs_overlap",
    "validate_collection_name",
    "validate_slug",
]
