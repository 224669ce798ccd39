"""Read-only copies of validated JSON, and plain copies of them again.

The typed manifest (:mod:`mdb_sync.manifest.model`) is immutable all the way down: a value
the schemas leave untyped (a seed document, a casbin rule, an extension key) is held as
:func:`freeze` makes it — mappings as ``MappingProxyType``, arrays as tuples — so no reader
can change what another reader sees. :func:`thaw` gives a mutable plain copy to code that
needs JSON (hashing a rule set, storing a document).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


def freeze(value: Any) -> Any:
    """``value`` with every mapping read-only and every list a tuple (scalars unchanged)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable copy of a :func:`freeze` result (dicts and lists)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value


__all__ = ["freeze", "thaw"]
