"""Change streams that deliver only the app's own changes.

A stream is opened on the physical collection(s) and starts with a ``$match`` that keeps:
events whose ``fullDocument`` carries the scope's ``app_id`` (inserts, replaces, and updates
with ``fullDocument``), and the events of the scope's physical collections that carry no
document (``delete``, ``drop``, ``rename``, ``invalidate``). Another app's documents never
reach the caller. ``ns`` is then rewritten to ``{"db": <app slug>, "coll": <logical name>}``
so events speak the app's names, not the physical ones; the caller's stages come last.
"""

from __future__ import annotations

import re
from typing import Any

APP_ID = "app_id"
CHANGE_STREAM_STAGES = frozenset(
    {
        "$addFields",
        "$match",
        "$project",
        "$replaceRoot",
        "$replaceWith",
        "$redact",
        "$set",
        "$unset",
    }
)
_DOCUMENTLESS = ["delete", "drop", "rename", "invalidate"]


def _owned(scope: str) -> dict[str, Any]:
    return {
        "$or": [
            {"fullDocument." + APP_ID: scope},
            {"operationType": {"$in": _DOCUMENTLESS}},
        ]
    }


def collection_change_pipeline(
    branches: list[tuple[str, str]], logical: str, user: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Stages for a stream on one logical collection read from ``branches``
    ((physical collection, scope) pairs)."""
    if len(branches) == 1:
        ((_physical, scope),) = branches
        match: dict[str, Any] = _owned(scope)
        ns: Any = {"db": scope, "coll": logical}
    else:
        match = {"$or": [{"ns.coll": physical, **_owned(scope)} for physical, scope in branches]}
        ns = {
            "db": {
                "$switch": {
                    "branches": [
                        {"case": {"$eq": ["$ns.coll", physical]}, "then": scope}
                        for physical, scope in branches
                    ],
                    "default": None,
                }
            },
            "coll": logical,
        }
    scopes = [scope for _, scope in branches]
    return [{"$match": match}, {"$set": {"ns": ns, "to": _rename_target(scopes)}}, *user]


def database_change_pipeline(scopes: list[str], user: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stages for a database-level stream covering every collection of ``scopes``."""
    match = {
        "$or": [
            {"ns.coll": {"$regex": f"^{re.escape(scope)}_"}, **_owned(scope)} for scope in scopes
        ]
    }
    branches = [
        {
            "case": {"$eq": [{"$indexOfCP": ["$ns.coll", scope + "_"]}, 0]},
            "then": {
                "db": scope,
                "coll": {"$substrCP": ["$ns.coll", len(scope) + 1, 1000]},
            },
        }
        for scope in scopes
    ]
    ns = {"$switch": {"branches": branches, "default": None}}
    return [{"$match": match}, {"$set": {"ns": ns, "to": _rename_target(scopes)}}, *user]


def _rename_target(scopes: list[str]) -> dict[str, Any]:
    """``to`` of a rename event in the app's names (absent on other events)."""
    branches = [
        {
            "case": {"$eq": [{"$indexOfCP": ["$to.coll", scope + "_"]}, 0]},
            "then": {"db": scope, "coll": {"$substrCP": ["$to.coll", len(scope) + 1, 1000]}},
        }
        for scope in scopes
    ]
    return {
        "$cond": [
            {"$ifNull": ["$to", False]},
            {"$switch": {"branches": branches, "default": None}},
            "$$REMOVE",
        ]
    }
