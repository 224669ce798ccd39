"""Client sessions handed to apps: transactions without a path to the raw client.

A pymongo :class:`~pymongo.client_session.ClientSession` exposes ``.client``, the unscoped
:class:`~pymongo.MongoClient`. Apps get a :class:`ScopedSession` instead: the same
transaction and causal-consistency API. A scoped session holds no reference to its pymongo
session: this module keeps the pair in a weak mapping, and the scoped objects that forward
``session=`` to pymongo get the pymongo session through :func:`unwrap_session`, which also
checks that the session belongs to their app.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.client_session import ClientSession

from .._pymongo_seam import txn_read_preference
from ..deprecation import renamed_parameters
from ..exceptions import ScopeError

T = TypeVar("T")

#: Each live scoped session -> its pymongo session (dropped with the scoped session).
_RAW: weakref.WeakKeyDictionary[ScopedSession, ClientSession] = weakref.WeakKeyDictionary()


class ScopedSession:
    """A client session for one app's scoped database (use as a context manager)."""

    __slots__ = ("__weakref__", "_app_slug")

    @renamed_parameters(app_slug="slug")
    def __init__(self, session: ClientSession, slug: str) -> None:
        self._app_slug = slug
        _RAW[self] = session

    @property
    def app_slug(self) -> str:
        """The app whose scoped database started this session."""
        return self._app_slug

    # pymongo reads the transaction's read preference through this method when a cursor
    # carries the session (Cursor.session / CommandCursor.session).
    def _txn_read_preference(self) -> Any:
        return txn_read_preference(_RAW[self])

    def __enter__(self) -> ScopedSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        _RAW[self].__exit__(*exc)

    def __repr__(self) -> str:
        return f"<ScopedSession app={self._app_slug!r} ended={self.has_ended}>"

    # --- transactions -------------------------------------------------------------------------

    def start_transaction(self, *args: Any, **kwargs: Any) -> Any:
        """Start a transaction; see pymongo's ``ClientSession.start_transaction``."""
        _RAW[self].start_transaction(*args, **kwargs)
        return _TransactionContext(self)

    def commit_transaction(self) -> None:
        _RAW[self].commit_transaction()

    def abort_transaction(self) -> None:
        _RAW[self].abort_transaction()

    def with_transaction(
        self, callback: Callable[[ScopedSession], T], *args: Any, **kwargs: Any
    ) -> T:
        """Run ``callback(session)`` in a transaction, retrying on transient errors.

        ``callback`` receives this scoped session, never the raw one.
        """
        return _RAW[self].with_transaction(lambda _raw: callback(self), *args, **kwargs)

    @property
    def in_transaction(self) -> bool:
        return _RAW[self].in_transaction

    # --- session state ------------------------------------------------------------------------

    def end_session(self) -> None:
        _RAW[self].end_session()

    @property
    def has_ended(self) -> bool:
        return _RAW[self].has_ended

    @property
    def session_id(self) -> Any:
        return _RAW[self].session_id

    @property
    def options(self) -> Any:
        return _RAW[self].options

    @property
    def cluster_time(self) -> Any:
        return _RAW[self].cluster_time

    @property
    def operation_time(self) -> Any:
        return _RAW[self].operation_time

    def advance_cluster_time(self, cluster_time: Any) -> None:
        _RAW[self].advance_cluster_time(cluster_time)

    def advance_operation_time(self, operation_time: Any) -> None:
        _RAW[self].advance_operation_time(operation_time)


def unwrap_session(session: object, slug: str) -> ClientSession | None:
    """Internal to the sandbox: the pymongo session to forward for ``session=`` — None for
    None, the pymongo session of a :class:`ScopedSession` of app ``slug``. A session of
    another app's database raises :class:`ScopeError`; anything else (a raw pymongo session
    included) raises ``TypeError``."""
    if session is None:
        return None
    if isinstance(session, ScopedSession):
        if session.app_slug != slug:
            raise ScopeError(
                "this session belongs to another app's database", context={"app": slug}
            )
        return _RAW[session]
    raise TypeError(
        "session must be a session from this scoped database's client_session(), "
        f"not {type(session).__name__}"
    )


class _TransactionContext:
    """``with session.start_transaction():`` commits on success, aborts on error."""

    __slots__ = ("_session",)

    def __init__(self, session: ScopedSession) -> None:
        self._session = session

    def __enter__(self) -> _TransactionContext:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._session.in_transaction:
            if exc_type is None:
                self._session.commit_transaction()
            else:
                self._session.abort_transaction()
