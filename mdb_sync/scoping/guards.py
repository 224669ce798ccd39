"""Query guards: operators the sandbox refuses, nesting depth, and regular-expression checks.

Applied to every filter, update and pipeline a scoped object sends. Server-side JavaScript
(``$where``, ``$function``, ``$accumulator``, ``$eval``) is refused anywhere it appears, at
any depth; nesting is bounded so a hostile filter cannot exhaust the server or this process;
regular expressions are bounded in length and refused when they nest unbounded repetitions
(``(a+)+``), the shape behind catastrophic backtracking.
"""

from __future__ import annotations

import datetime
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any

from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Timestamp
from bson.regex import Regex

from ..exceptions import QueryValidationError
from .limits import QueryLimits

if sys.version_info >= (3, 11):
    # The regex parser's modules: private in typeshed (hence the ignores), stable in CPython.
    from re import _constants as _sre_constants  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
else:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_constants
    import sre_parse as _sre_parser

FORBIDDEN_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$eval"})

_REPEATS = tuple(
    getattr(_sre_constants, name)
    for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(_sre_constants, name)
)
_MAXREPEAT = _sre_constants.MAXREPEAT
_SUBPATTERN = _sre_constants.SUBPATTERN
_BRANCH = _sre_constants.BRANCH
_ASSERTS = (_sre_constants.ASSERT, _sre_constants.ASSERT_NOT)
_LITERAL = _sre_constants.LITERAL
_NOT_LITERAL = _sre_constants.NOT_LITERAL
_IN = _sre_constants.IN
_ANY = _sre_constants.ANY
_NEGATE = _sre_constants.NEGATE
_RANGE = _sre_constants.RANGE
_CATEGORY = _sre_constants.CATEGORY
_ANY_CHAR = re.compile(r"(?s).")
_CATEGORY_TESTS = {
    _sre_constants.CATEGORY_DIGIT: re.compile(r"\d"),
    _sre_constants.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    _sre_constants.CATEGORY_SPACE: re.compile(r"\s"),
    _sre_constants.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    _sre_constants.CATEGORY_WORD: re.compile(r"\w"),
    _sre_constants.CATEGORY_NOT_WORD: re.compile(r"\W"),
}
# A textual fallback for patterns Python's parser cannot read (PCRE-only syntax).
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{]")
_UNBOUNDED = 100  # a repeat allowing more than this many iterations counts as unbounded


#: Value types that hold nothing to check (looked up by exact type, before any
#: ``isinstance``: most values of a filter or an update are one of these).
_PLAIN = frozenset(
    {
        str, int, float, bool, type(None), bytes, ObjectId, datetime.datetime, Decimal128,
        Int64, Timestamp, uuid.UUID, MinKey, MaxKey, Binary,
    }
)  # fmt: skip


_CONTAINERS = frozenset({dict, list, tuple})
#: The value types with nothing to check inside (public for the fused checks of updates.py).
PLAIN_TYPES = _PLAIN
#: Keys a guard must look at even when their value is plain.
LOOKED_AT_KEYS = FORBIDDEN_OPERATORS | {"$regex"}


def check_query(value: Any, limits: QueryLimits, where: str = "filter") -> None:
    """Raise :class:`QueryValidationError` if ``value`` uses a refused operator, nests too
    deeply or holds a dangerous regular expression. ``where`` names the checked part."""
    if type(value) is dict and limits.max_query_depth >= 2:
        # The commonest filters and stage bodies — plain values, or operator documents of
        # plain values ({"n": {"$gte": 0}}, {"total": {"$sum": "$n"}}), no refused key, no
        # $regex — have nothing to refuse: two plain loops, no walk.
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                for inner_key, inner in item.items():
                    if type(inner) not in _PLAIN or inner_key in LOOKED_AT_KEYS:
                        return _walk(value, limits, where, 0, 0)
            elif kind not in _PLAIN:
                return _walk(value, limits, where, 0, 0)
            if key in LOOKED_AT_KEYS:
                return _walk(value, limits, where, 0, 0)
        return None
    return _walk(value, limits, where, 0, 0)


def _walk(value: Any, limits: QueryLimits, where: str, depth: int, nesting: int) -> None:
    kind = type(value)
    if kind in _PLAIN:
        return
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
        depth += 1
        if depth > limits.max_query_depth:
            raise QueryValidationError(
                f"{where} nests deeper than {limits.max_query_depth} levels",
                context={"where": where, "limit": limits.max_query_depth},
            )
        nesting += 1
        for key, item in value.items():
            if key in FORBIDDEN_OPERATORS:
                raise QueryValidationError(
                    f"{key} is not allowed in a {where}: server-side JavaScript is refused",
                    context={"where": where, "operator": key},
                )
            item_kind = type(item)
            if item_kind in _PLAIN:
                if key == "$regex" and item_kind is str:
                    check_regex(item, limits, where)
            elif item_kind in _CONTAINERS or isinstance(item, (Mapping, list, tuple)):
                _walk(item, limits, where, depth, nesting)
            elif isinstance(item, (Regex, re.Pattern)):
                check_regex(item.pattern, limits, where)
            elif key == "$regex" and isinstance(item, str):  # a str subclass
                check_regex(item, limits, where)
    elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
        nesting += 1
        if nesting > 4 * limits.max_query_depth:
            raise QueryValidationError(f"{where} nests arrays too deeply", context={"where": where})
        for item in value:
            item_kind = type(item)
            if item_kind in _PLAIN:
                continue
            if item_kind in _CONTAINERS or isinstance(item, (Mapping, list, tuple)):
                _walk(item, limits, where, depth, nesting)
            elif isinstance(item, (Regex, re.Pattern)):
                check_regex(item.pattern, limits, where)
    elif isinstance(value, (Regex, re.Pattern)):
        check_regex(value.pattern, limits, where)


def check_regex(pattern: str | bytes, limits: QueryLimits, where: str = "filter") -> None:
    """Refuse over-long patterns and nested unbounded repetition (catastrophic backtracking)."""
    if isinstance(pattern, bytes):
        pattern = pattern.decode("utf-8", "replace")
    if len(pattern) > limits.max_regex_length:
        raise QueryValidationError(
            f"regular expression in {where} is longer than {limits.max_regex_length} characters",
            context={"where": where, "limit": limits.max_regex_length},
        )
    if _catastrophic(pattern):
        raise QueryValidationError(
            f"regular expression in {where} nests unbounded repetitions (like '(a+)+'), "
            "which can backtrack catastrophically; rewrite it without the nested quantifier",
            context={"where": where},
        )


def _catastrophic(pattern: str) -> bool:
    try:
        tree = _sre_parser.parse(pattern)
    except Exception:
        return bool(_NESTED_QUANTIFIER.search(pattern))
    return _nested_repeat(tree, inside=False)


def _nested_repeat(items: Any, inside: bool) -> bool:
    for op, av in items:
        if op in _REPEATS:
            _low, high, sub = av
            unbounded = high == _MAXREPEAT or high > _UNBOUNDED
            if unbounded and inside and len(sub) > 0:
                return True
            if unbounded and _separated(sub):
                # ``(\.[a-z]+)*``: each iteration starts with a literal the inner repeats cannot
                # match, so iterations cannot trade characters: no backtracking blow-up.
                continue
            if _nested_repeat(sub, inside or unbounded):
                return True
        elif op == _SUBPATTERN:
            if _nested_repeat(av[-1], inside):
                return True
        elif op == _BRANCH:
            if any(_nested_repeat(alt, inside) for alt in av[1]):
                return True
        elif op in _ASSERTS and _nested_repeat(av[1], inside):
            return True
    return False


def _separated(sub: Any) -> bool:
    """True when ``sub`` (a repeated body) starts or ends with a literal that no inner repeat
    matches, and its inner repeats are single characters or classes, not nested groups."""
    body = list(sub)
    while len(body) == 1 and body[0][0] == _SUBPATTERN:
        body = list(body[0][1][-1])
    if body and body[0][0] == _LITERAL:
        sep, rest = chr(body[0][1]), body[1:]
    elif body and body[-1][0] == _LITERAL:
        sep, rest = chr(body[-1][1]), body[:-1]
    else:
        return False
    for op, av in rest:
        if op in _REPEATS:
            inner = list(av[2])
            if len(inner) != 1 or not _single_char_excludes(inner[0], sep):
                return False
        elif op not in (_LITERAL, _IN, _NOT_LITERAL, _ANY):
            return False
    return True


def _single_char_excludes(item: Any, ch: str) -> bool:
    op, av = item
    if op == _LITERAL:
        return chr(av) != ch
    if op == _NOT_LITERAL:
        return chr(av) == ch
    if op != _IN:
        return False
    negate = False
    hit = False
    for kind, val in av:
        if kind == _NEGATE:
            negate = True
        elif kind == _LITERAL:
            hit = hit or chr(val) == ch
        elif kind == _RANGE:
            hit = hit or val[0] <= ord(ch) <= val[1]
        elif kind == _CATEGORY:
            hit = hit or bool(_CATEGORY_TESTS.get(val, _ANY_CHAR).match(ch))
        else:
            return False
    return hit == negate
