"""Client sessions handed to apps: transactions without a path to the raw client.

A pymongo :class:`~pymongo.client_session.ClientSession` exposes ``.client``, the unscoped
:class:`~pymongo.MongoClient`. Apps get a :class:`ScopedSession` instead: the same
transaction and causal-consistency API, and scoped objects unwrap it when they forward
``session=`` to pymongo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.client_session import ClientSession

from ..deprecation import renamed_parameters

T = TypeVar("T")


class ScopedSession:
    """A client session for one app's scoped database (use as a context manager)."""

    __slots__ = ("__session", "_app_slug")

    @renamed_parameters(app_slug="slug")
    def __init__(self, session: ClientSession, slug: str) -> None:
        self.__session = session
        self._app_slug = slug

    def _raw(self) -> ClientSession:
        return self.__session

    # pymongo reads the transaction's read preference through this method when a cursor
    # carries the session (Cursor.session / CommandCursor.session).
    def _txn_read_preference(self) -> Any:
        return self.__session._txn_read_preference()

    def __enter__(self) -> ScopedSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.__session.__exit__(*exc)

    def __repr__(self) -> str:
        return f"<ScopedSession app={self._app_slug!r} ended={self.has_ended}>"

    # --- transactions -------------------------------------------------------------------------

    def start_transaction(self, *args: Any, **kwargs: Any) -> Any:
        """Start a transaction; see pymongo's ``ClientSession.start_transaction``."""
        self.__session.start_transaction(*args, **kwargs)
        return _TransactionContext(self)

    def commit_transaction(self) -> None:
        self.__session.commit_transaction()

    def abort_transaction(self) -> None:
        self.__session.abort_transaction()

    def with_transaction(
        self, callback: Callable[[ScopedSession], T], *args: Any, **kwargs: Any
    ) -> T:
        """Run ``callback(session)`` in a transaction, retrying on transient errors.

        ``callback`` receives this scoped session, never the raw one.
        """
        return self.__session.with_transaction(lambda _raw: callback(self), *args, **kwargs)

    @property
    def in_transaction(self) -> bool:
        return self.__session.in_transaction

    # --- session state ------------------------------------------------------------------------

    def end_session(self) -> None:
        self.__session.end_session()

    @property
    def has_ended(self) -> bool:
        return self.__session.has_ended

    @property
    def session_id(self) -> Any:
        return self.__session.session_id

    @property
    def options(self) -> Any:
        return self.__session.options

    @property
    def cluster_time(self) -> Any:
        return self.__session.cluster_time

    @property
    def operation_time(self) -> Any:
        return self.__session.operation_time

    def advance_cluster_time(self, cluster_time: Any) -> None:
        self.__session.advance_cluster_time(cluster_time)

    def advance_operation_time(self, operation_time: Any) -> None:
        self.__session.advance_operation_time(operation_time)


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
