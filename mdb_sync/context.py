"""The current app, correlation id and engine of this thread or task: one ``ContextVar``.

Everything that asks "which app is this for?" reads the same variable: log records
(:mod:`mdb_sync.observability.logging`), custom metrics (``engine.record_operation``,
:func:`mdb_sync.observability.record_operation`), Celery messages (:mod:`mdb_sync.celery`)
and flask_mdb's request binding. A Flask request, a Celery task, ``mdb.bind(slug)`` or
:func:`bound` set it and always reset it, so a pooled thread never carries the previous
request's app or id.

The value is an immutable :class:`Context`; changing it means binding a new one
(:func:`bind` / :func:`reset`, or :func:`bound` for a block). A ``ContextVar`` belongs to
one thread (or asyncio task): a thread started by the code sees nothing unless the
context is handed over (``contextvars.copy_context().run(...)``, or :func:`bound` with the
values of :func:`current`).

:func:`current_engine` answers "which engine?" for code that is given none: the engine
bound to the context (a request's, a task's), else the process's one initialized engine.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import weakref
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .deprecation import renamed_parameters
from .exceptions import EngineNotInitializedError

if TYPE_CHECKING:
    from .engine import MongoDBEngine

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: Correlation ids and app ids accepted in the context: they often come from request headers
#: (``X-Request-ID``) or message headers that a client controls, and they end up in log lines,
#: so anything that could forge a line or carry markup (spaces, quotes, newlines, ``<>``) is
#: refused, and so is anything longer than 128 characters.
ID_PATTERN = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Context:
    """What the current thread (or task) is working for.

    ``binding`` is a framework's own record of how the app was bound (flask_mdb's request
    binding): it belongs to ``app_id`` and is dropped when the app changes without a new one.
    """

    app_id: str | None = None
    correlation_id: str | None = None
    engine: MongoDBEngine | None = None
    binding: Any = None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def as_log_fields(self) -> dict[str, Any]:
        """``{"app_id": ..., "correlation_id": ..., **fields}``: what log records carry."""
        return {"app_id": self.app_id, "correlation_id": self.correlation_id, **self.fields}


EMPTY = Context()

_current: ContextVar[Context] = ContextVar("mdb_context", default=EMPTY)

_UNSET: Any = object()


# --- ids -----------------------------------------------------------------------------------------


def check_id(value: Any, what: str) -> str:
    """``value`` if it is 1-128 characters of ``[A-Za-z0-9._:+/=@-]``, else ValueError."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid {what} {str(value)[:40]!r}: use 1-128 characters among letters, digits "
            "and . _ : + / = @ -"
        )
    return value


def new_correlation_id() -> str:
    """A fresh random correlation id (32 hex characters; ``secrets.token_hex`` costs a third
    of ``uuid4().hex``, and one is made per request)."""
    return secrets.token_hex(16)


def accept_correlation_id(candidate: Any) -> str:
    """``candidate`` if it is an acceptable correlation id (an ``X-Request-ID`` header, a
    message header), else a new one: an untrusted value is never refused loudly nor logged
    as it is."""
    if isinstance(candidate, str) and ID_PATTERN.fullmatch(candidate):
        return candidate
    return new_correlation_id()


# --- reading and binding -------------------------------------------------------------------------


def current() -> Context:
    """The context of the current thread or task (:data:`EMPTY` when nothing is bound)."""
    return _current.get()


def get_app_id() -> str | None:
    """The app of the current context, or None."""
    return _current.get().app_id


def get_correlation_id() -> str | None:
    """The correlation id of the current context, or None."""
    return _current.get().correlation_id


def changed(
    base: Context,
    *,
    app_id: str | None = _UNSET,
    correlation_id: str | None = _UNSET,
    engine: MongoDBEngine | None = _UNSET,
    binding: Any = _UNSET,
    fields: Mapping[str, Any] | None = None,
    replace_fields: bool = False,
) -> Context:
    """``base`` with the given values (validated); arguments left out keep ``base``'s.
    ``correlation_id=None`` makes a new id; ``fields`` are added to ``base``'s (or replace
    them with ``replace_fields``). Changing the app drops a binding not given anew."""
    changes: dict[str, Any] = {}
    if app_id is not _UNSET:
        if app_id is not None:
            check_id(app_id, "app id")
        changes["app_id"] = app_id
        if binding is _UNSET and app_id != base.app_id:
            changes["binding"] = None
    if correlation_id is not _UNSET:
        changes["correlation_id"] = (
            new_correlation_id()
            if correlation_id is None
            else check_id(correlation_id, "correlation id")
        )
    if engine is not _UNSET:
        changes["engine"] = engine
    if binding is not _UNSET:
        changes["binding"] = binding
    if fields or replace_fields:
        check_fields(fields or {})
        merged = dict(fields or {}) if replace_fields else {**base.fields, **(fields or {})}
        changes["fields"] = MappingProxyType(merged) if merged else _EMPTY
    return replace(base, **changes) if changes else base


def bind(context: Context) -> Token[Context]:
    """Make ``context`` the current one; give the token to :func:`reset` (in ``finally``)."""
    return _current.set(context)


def reset(token: Token[Context]) -> None:
    """Undo the :func:`bind` that returned ``token``. A token from another context (a copied
    one) cannot be reset there: the context is emptied instead, never left as it was."""
    try:
        _current.reset(token)
    except ValueError:
        _current.set(EMPTY)


def replace_current(context: Context) -> None:
    """Bind ``context`` with no way back: for the bare ``set_*`` functions of the logging
    API (prefer :func:`bound` on pooled threads)."""
    _current.set(context)


@contextlib.contextmanager
def bound(
    app_id: str | None = _UNSET,
    correlation_id: str | None = _UNSET,
    *,
    engine: MongoDBEngine | None = _UNSET,
    binding: Any = _UNSET,
    **fields: Any,
) -> Iterator[Context]:
    """Bind app, correlation id, engine and log fields for the block; the previous context
    comes back on exit (also on an exception). Arguments left out keep the enclosing
    values; ``correlation_id=None`` makes a new id. Yields the context."""
    context = changed(
        _current.get(),
        app_id=app_id,
        correlation_id=correlation_id,
        engine=engine,
        binding=binding,
        fields=fields,
    )
    token = _current.set(context)
    try:
        yield context
    finally:
        reset(token)


#: Attributes every ``logging.LogRecord`` has (and those the formatters add): a log field may
#: not overwrite them.
_RESERVED_FIELDS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, __file__, 0, "", None, None))
) | {"message", "asctime", "taskName"}


def check_fields(fields: Mapping[str, Any]) -> None:
    """Refuse field names that are not identifiers or would overwrite a log record's own."""
    for key in fields:
        if not isinstance(key, str) or not key.isidentifier() or key in _RESERVED_FIELDS:
            raise ValueError(f"{key!r} cannot be a log context field (reserved or not a name)")


# --- engines -------------------------------------------------------------------------------------

#: Every engine of the process (weakly: an engine nobody references is gone). A WeakSet
#: copes with threads adding while another iterates, and holds no lock a fork could leave held.
_engines: weakref.WeakSet[MongoDBEngine] = weakref.WeakSet()


class NoCurrentEngineError(EngineNotInitializedError, LookupError):
    """Code that was given no engine asked for the current one, and there is none (or
    several, and nothing says which)."""


def track_engine(engine: MongoDBEngine) -> None:
    """Count ``engine`` among the process's engines (every engine does, when built)."""
    _engines.add(engine)


def live_engines() -> list[MongoDBEngine]:
    """Every engine of this process that is still referenced (initialized or not)."""
    return list(_engines)


@renamed_parameters(app="slug")
def find_current_engine(slug: str | None = None) -> MongoDBEngine | None:
    """:func:`current_engine`, or None where it would raise."""
    engine = _current.get().engine
    if engine is not None:
        return engine
    engines = [e for e in live_engines() if e.is_initialized]
    if len(engines) > 1 and slug is not None:
        engines = [e for e in engines if e.registry.get_record(slug) is not None]
    return engines[0] if len(engines) == 1 else None


@renamed_parameters(app="slug")
def current_engine(slug: str | None = None) -> MongoDBEngine:
    """The engine of the current context (a Flask request's, a Celery task's, one bound
    with ``bound(engine=...)``), else this process's one initialized engine; with several,
    the only one that has ``slug`` registered. Raises :class:`NoCurrentEngineError` saying
    which case it is when none fits."""
    engine = find_current_engine(slug)
    if engine is not None:
        return engine
    count = sum(1 for e in live_engines() if e.is_initialized)
    if count == 0:
        raise NoCurrentEngineError(
            "no initialized engine in this process: pass engine=..., or initialize one first "
            "(a Celery worker with MDBCelery has one in every pool process; flask_mdb starts "
            "its engine on the first request)"
        )
    which = f"serve app {slug!r}" if slug is not None else "are initialized"
    raise NoCurrentEngineError(
        f"several engines in this process {which} and none is bound to this context: pass "
        "engine=..., or bind one with mdb_sync.context.bound(engine=...)",
        context={"app": slug} if slug is not None else None,
    )


__all__ = [
    "EMPTY",
    "ID_PATTERN",
    "MAX_ID_LENGTH",
    "Context",
    "NoCurrentEngineError",
    "accept_correlation_id",
    "bind",
    "bound",
    "changed",
    "check_fields",
    "check_id",
    "current",
    "current_engine",
    "find_current_engine",
    "get_app_id",
    "get_correlation_id",
    "live_engines",
    "new_correlation_id",
    "replace_current",
    "reset",
    "track_engine",
]
