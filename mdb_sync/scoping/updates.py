"""Update documents and pipelines: ``app_id`` belongs to the sandbox, not to the caller.

Operator updates that name ``app_id`` (or a path under it) are refused, whatever the operator
(``$set``, ``$unset``, ``$rename`` in either direction, ``$inc``, ``$setOnInsert``,
``$currentDate``, ...). Pipeline updates can compute anything, so instead of analysing them
they are made harmless: a final ``{"$set": {"app_id": <write scope>}}`` stage restores the
scope whatever the earlier stages did (``$replaceRoot``, ``$project``, ``$unset``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import QueryValidationError, ScopeError
from .guards import PLAIN_TYPES, check_query
from .limits import QueryLimits

APP_ID = "app_id"
_APP_ID_PATH = APP_ID + "."

# Update operators whose keys are field paths (``$rename`` values are paths too).
PATH_OPERATORS = frozenset(
    {
        "$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$currentDate",
        "$setOnInsert", "$push", "$addToSet", "$pop", "$pull", "$pullAll", "$bit",
    }
)  # fmt: skip
PIPELINE_UPDATE_STAGES = frozenset(
    {"$addFields", "$set", "$project", "$unset", "$replaceRoot", "$replaceWith"}
)


def scope_filter(filter: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """``filter`` restricted to documents of ``scope``.

    The conditions of a filter's top-level keys are ANDed, so adding ``app_id`` as one more
    key means ``{"$and": [filter, {"app_id": scope}]}`` — and servers use indexes for it more
    readily (the embedded server never does for the ``$and`` form). When the caller's filter
    has its own top-level ``app_id``, both are kept with ``$and``.
    """
    if APP_ID in filter:
        return {"$and": [filter, {APP_ID: scope}]}
    scoped = dict(filter)
    scoped[APP_ID] = scope
    return scoped


def scoped_filter(
    filter: Any, scope: str, limits: QueryLimits, where: str = "filter"
) -> dict[str, Any]:
    """``filter`` (a mapping, or None for all documents) checked by the guards and
    restricted to documents of ``scope`` (as :func:`scope_filter`)."""
    if type(filter) is dict and filter and APP_ID not in filter:
        check_query(filter, limits, where)
        return {**filter, APP_ID: scope}  # scope_filter's copy, in one step
    if filter is None:
        return {APP_ID: scope}
    if type(filter) is not dict and not isinstance(filter, Mapping):
        raise TypeError(f"{where} must be a mapping, not {type(filter).__name__}")
    if not filter:
        return {APP_ID: scope}
    check_query(filter, limits, where)
    return scope_filter(filter, scope)


def touches_app_id(path: Any) -> bool:
    return isinstance(path, str) and (path == APP_ID or path.startswith(_APP_ID_PATH))


def scoped_update(update: Any, write_scope: str, limits: QueryLimits) -> Any:
    """Check ``update`` (operators or pipeline) and return what to send to the server.

    The commonest update — path operators (``$set``, ``$inc``...) over plain values, no path
    under ``app_id`` or starting with ``$`` — passes in one plain loop; anything else gets the
    full checks of :func:`_checked_update` (which refuse or accept it).

    An operator update is sent as a copy of its operators' documents, made before they are
    checked: what was checked is what the server gets, even if the caller's thread changes
    its own dicts meanwhile (a ``$set`` of ``app_id`` put in after the check)."""
    if type(update) is dict and update and limits.max_query_depth >= 2:
        sent: dict[str, Any] = {}
        for op, spec in update.items():
            if type(spec) is not dict or op not in _PLAIN_PATH_OPERATORS:
                break
            spec = spec.copy()
            for path, value in spec.items():
                if (
                    type(value) not in PLAIN_TYPES
                    or type(path) is not str
                    or path.startswith(_LOOKED_AT_PATHS)
                ):
                    break
            else:
                sent[op] = spec
                continue
            break
        else:
            return sent
    return _checked_update(update, write_scope, limits)


#: Path operators whose values are plain values, not paths ($rename's are paths).
_PLAIN_PATH_OPERATORS = PATH_OPERATORS - {"$rename"}
#: Paths the one-pass check leaves to the full checks: ``app_id`` and anything under or
#: beside it (``app_idx`` passes there), and ``$``-names (refused operators, ``$regex``).
_LOOKED_AT_PATHS = (APP_ID, "$")


def _checked_update(update: Any, write_scope: str, limits: QueryLimits) -> Any:
    """:func:`scoped_update`'s full checks: the ``app_id`` paths first, then the guards."""
    if type(update) is dict or isinstance(update, Mapping):
        if not update:
            raise ValueError("update cannot be empty")
        # Checked and sent: a copy down to the paths (the level app_id is refused at).
        update = {
            op: dict(spec) if type(spec) is dict or isinstance(spec, Mapping) else spec
            for op, spec in update.items()
        }
        for op, spec in update.items():
            if not isinstance(op, str) or not op.startswith("$"):
                raise ValueError("update only works with $ operators; use replace_one() to replace")
            if op in PATH_OPERATORS and (type(spec) is dict or isinstance(spec, Mapping)):
                for path, value in spec.items():
                    if (
                        path == APP_ID
                        or (isinstance(path, str) and path.startswith(_APP_ID_PATH))
                        or (op == "$rename" and touches_app_id(value))
                    ):
                        raise ScopeError(
                            f"{op} on {path!r} would change app_id, which the sandbox owns",
                            context={"operator": op},
                        )
        check_query(update, limits, "update")
        return update
    if isinstance(update, (list, tuple)):
        if not update:
            raise ValueError("update pipeline cannot be empty")
        if len(update) > limits.max_pipeline_stages:
            raise QueryValidationError(
                f"update pipeline has more than {limits.max_pipeline_stages} stages"
            )
        for stage in update:
            if not isinstance(stage, Mapping) or len(stage) != 1:
                raise QueryValidationError("each update pipeline stage must have one operator")
            (op,) = stage
            if op not in PIPELINE_UPDATE_STAGES:
                raise QueryValidationError(f"{op} is not allowed in an update pipeline")
        check_query(list(update), limits, "update pipeline")
        return [*update, {"$set": {APP_ID: write_scope}}]
    raise TypeError(f"update must be a mapping or a list, not {type(update).__name__}")


def scoped_replacement(replacement: Any, write_scope: str) -> dict[str, Any]:
    """A shallow copy of ``replacement`` carrying ``app_id``; another app's id is refused."""
    if not isinstance(replacement, Mapping):
        raise TypeError(f"replacement must be a mapping, not {type(replacement).__name__}")
    if any(isinstance(k, str) and k.startswith("$") for k in replacement):
        raise ValueError("replacement can not include $ operators")
    return tag_document(replacement, write_scope)


def tag_document(document: Any, write_scope: str) -> dict[str, Any]:
    """A shallow copy of ``document`` with ``app_id`` set to the write scope."""
    if type(document) is not dict and not isinstance(document, Mapping):
        raise TypeError(f"document must be a mapping, not {type(document).__name__}")
    owner = document.get(APP_ID, write_scope)
    if owner != write_scope:
        raise ScopeError(
            f"document carries app_id {owner!r}; app {write_scope!r} can only write its own "
            "documents",
            context={"app": write_scope},
        )
    tagged = dict(document)
    tagged[APP_ID] = write_scope
    return tagged
