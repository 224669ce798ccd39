"""Naming rules of the sandbox: app slugs, logical collection names, physical names.

Physical scoping maps logical collection ``tasks`` of app ``my_app`` to ``my_app_tasks``.
Because ``_`` may appear both in slugs and in collection names, ``my`` + ``app_tasks`` and
``my_app`` + ``tasks`` name the same physical collection; :func:`slugs_overlap` tells which
pairs of apps could collide, and the engine refuses to register such a pair.
"""

from __future__ import annotations

import re

from ..exceptions import InvalidCollectionName, ScopeError
from ..storage import APPS_CONFIG

#: Slugs: lowercase letters, digits, ``_`` and ``-``; 1-64 chars; starting with a letter.
SLUG_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: Logical collection names: letters, digits, ``_ . -``; starting with a letter or ``_``.
COLLECTION_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
MAX_COLLECTION_NAME = 120

#: The registry collection (unscoped, engine-internal).
APPS_COLLECTION = APPS_CONFIG
#: Slugs the engine keeps for itself: ``apps`` + ``_config`` would be the registry, ``mdb_``
#: prefixes engine-internal collections, the rest are MongoDB's own databases and namespaces.
RESERVED_SLUGS = frozenset({"apps", "mdb", "system", "admin", "config", "local"})
#: Engine-internal collections are named ``mdb_*``: no app slug may produce such a name.
RESERVED_SLUG_PREFIXES = ("mdb_", "mdb-")
RESERVED_COLLECTION_NAMES = frozenset({APPS_COLLECTION})
RESERVED_COLLECTION_PREFIXES = ("system.", "admin.", "config.", "local.")


def validate_slug(slug: object, what: str = "app slug") -> str:
    """Return ``slug`` if it is a valid app slug, else raise :class:`ScopeError`."""
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        raise ScopeError(
            f"invalid {what} {slug!r}: use 1-64 lowercase letters, digits, '_' or '-', "
            "starting with a letter",
            context={"slug": repr(slug)},
        )
    if slug in RESERVED_SLUGS or slug.startswith(RESERVED_SLUG_PREFIXES):
        raise ScopeError(f"the {what} {slug!r} is reserved", context={"slug": slug})
    return slug


def validate_collection_name(name: object) -> str:
    """Return ``name`` if it is an acceptable logical collection name.

    Refused: non-strings, empty or over-long names, ``$``, NUL, ``/`` and other characters
    outside ``[A-Za-z0-9_.-]``, a leading digit, ``..`` and leading/trailing dots, the
    ``system.``/``admin.``/``config.``/``local.`` prefixes and the registry's own name.
    """
    if not isinstance(name, str):
        raise InvalidCollectionName(
            f"collection names must be strings, not {type(name).__name__}",
            context={"collection": repr(name)},
        )
    reason = None
    if not name:
        reason = "it is empty"
    elif len(name) > MAX_COLLECTION_NAME:
        reason = f"it is longer than {MAX_COLLECTION_NAME} characters"
    elif "\x00" in name or "$" in name or "/" in name or "\\" in name:
        reason = "it contains '$', '/', '\\' or NUL"
    elif name[0].isdigit():
        reason = "it starts with a digit"
    elif not COLLECTION_RE.fullmatch(name):
        reason = "only letters, digits, '_', '.' and '-' are allowed"
    elif ".." in name or name.endswith("."):
        reason = "it contains an empty segment ('..' or a trailing '.')"
    elif name in RESERVED_COLLECTION_NAMES:
        reason = "it is reserved for the engine"
    elif name.lower().startswith(RESERVED_COLLECTION_PREFIXES):
        reason = "its prefix is reserved by MongoDB"
    if reason:
        raise InvalidCollectionName(
            f"invalid collection name {name[:80]!r}: {reason}", context={"collection": name[:80]}
        )
    return name


def physical_name(slug: str, name: str) -> str:
    """The physical collection that holds logical collection ``name`` of app ``slug``."""
    return f"{slug}_{name}"


def logical_name(slug: str, physical: str) -> str | None:
    """Inverse of :func:`physical_name`, or None when ``physical`` is not ``slug``'s."""
    prefix = slug + "_"
    if physical.startswith(prefix) and len(physical) > len(prefix):
        return physical[len(prefix) :]
    return None


def slugs_overlap(a: str, b: str) -> bool:
    """True when some collection of app ``a`` and some of app ``b`` share a physical name."""
    return a == b or a.startswith(b + "_") or b.startswith(a + "_")


def overlapping_prefixes(slug: str) -> list[str]:
    """The slugs that are a ``_``-separated prefix of ``slug`` (``a_b_c`` -> ``a``, ``a_b``)."""
    return [slug[:i] for i, ch in enumerate(slug) if ch == "_" and i > 0]
