"""HTTP errors of the library, and one renderer for all of them.

Two kinds of errors reach a Flask app from the library:

* :class:`MDBHTTPError` — what the auth decorators, guards and views raise: an HTTP
  exception (a subclass of werkzeug's for its status: ``MDBUnauthorized`` is an
  ``Unauthorized``) carrying its status, message, a stable ``type`` and ``reason`` for
  clients, and headers (``WWW-Authenticate``, ``Retry-After``). Its response comes from
  :func:`render_error`.
* the engine's own exceptions (:class:`~mdb_sync.exceptions.MongoDBEngineError` and its
  subclasses, ``AppNotBoundError`` included): a handler that is **always on** maps each to a
  status (:data:`STATUS_BY_EXCEPTION`) and answers like an :class:`MDBHTTPError`.
  ``MDB_ERROR_HANDLERS`` adds pymongo's and bson's exceptions (duplicate key, timeouts, an
  unreachable server, a malformed ``ObjectId``).

The app's own error handlers win: one registered for the exception's class (or a parent,
``HTTPException`` included) or for its status is used instead of the library's renderer, and
a handler registered for an engine exception class replaces the library's (before or after
``init_app``). Library errors are turned into :class:`MDBHTTPError` and handed to Flask's
``handle_http_exception``, so a handler for ``403`` also answers a ``ScopeError``; it receives
the :class:`MDBHTTPError`, whose ``original`` is the engine's exception.

The body is ``{"error": {"status": 400, "type": "QueryValidationError", "message": "..."}}``
(plus ``reason`` and ``errors`` when there are any), or a small HTML page for a browser
navigation; errors are never cached (``Cache-Control: no-store``). Client errors carry the
exception's message (the library's messages name what and where, never credentials or
document contents); server errors say only what kind of failure it was and are logged with
their traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from bson.errors import InvalidDocument, InvalidId
from flask import Flask, Response, current_app, jsonify, request
from markupsafe import escape
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, WriteError
from werkzeug.exceptions import HTTPException, default_exceptions

from mdb_sync.exceptions import (
    AppConflictError,
    AppNotActiveError,
    AppNotFoundError,
    AuthenticationError,
    AuthorizationError,
    ChannelRefused,
    EngineConnectionError,
    EngineNotInitializedError,
    InvalidMessageError,
    ManifestValidationError,
    MongoDBEngineError,
    PortabilityError,
    QueryValidationError,
    RateLimitExceeded,
    ResourceLimitExceeded,
    SchemaError,
    ScopeError,
    UserExistsError,
    UserInputError,
)

from .binding import AppNotBoundError

log = logging.getLogger("flask_mdb")

#: (exception class, HTTP status), most specific first: the first match wins.
STATUS_BY_EXCEPTION: list[tuple[type[BaseException], int]] = [
    (RateLimitExceeded, 429),
    (ResourceLimitExceeded, 413),
    (AuthenticationError, 401),
    (AuthorizationError, 403),
    (ChannelRefused, 403),
    (UserInputError, 400),
    (UserExistsError, 409),
    (AppNotBoundError, 404),
    (AppNotFoundError, 404),
    (AppNotActiveError, 404),
    (ScopeError, 403),
    (ManifestValidationError, 400),
    (QueryValidationError, 400),
    (InvalidId, 400),
    (InvalidDocument, 400),
    (AppConflictError, 409),
    (DuplicateKeyError, 409),
    (ExecutionTimeout, 504),
    (EngineConnectionError, 503),
    (EngineNotInitializedError, 503),
    (ConnectionFailure, 503),
    (WriteError, 400),
    (SchemaError, 400),
    (PortabilityError, 400),
    (InvalidMessageError, 400),
    (MongoDBEngineError, 500),
]

#: The library's own exceptions: always answered (subclasses by Flask's MRO lookup).
LIBRARY_EXCEPTIONS: tuple[type[Exception], ...] = (MongoDBEngineError,)
#: pymongo's and bson's exceptions, answered with ``MDB_ERROR_HANDLERS``.
THIRD_PARTY_EXCEPTIONS: tuple[type[Exception], ...] = (
    InvalidId,
    InvalidDocument,
    ConnectionFailure,
    ExecutionTimeout,
    WriteError,
)
#: Both (what :func:`register_error_handlers` registers by default).
HANDLED = LIBRARY_EXCEPTIONS + THIRD_PARTY_EXCEPTIONS

_SERVER_MESSAGES = {
    500: "internal error",
    503: "the database is unavailable; retry later",
    504: "the database operation timed out",
}

#: ``type`` of an error that names none, by status.
_TYPES = {
    400: "BadRequest",
    401: "AuthenticationError",
    403: "AuthorizationError",
    404: "NotFound",
    409: "Conflict",
    413: "ResourceLimitExceeded",
    429: "RateLimitExceeded",
}


# --- the HTTP errors -----------------------------------------------------------------------------


class MDBHTTPError(HTTPException):
    """An HTTP error raised by the library. Subclasses exist for every status werkzeug
    knows, each also a subclass of werkzeug's class for it (use :func:`http_error`).

    :param message: what went wrong, for the client (becomes ``description``).
    :param type: a stable name for clients (default: by status, e.g. ``AuthenticationError``).
    :param reason: a stable machine-readable code (``error.reason`` in JSON).
    :param headers: extra response headers (``WWW-Authenticate``, ``Retry-After``...).
    :param errors: details of a validation failure (``error.errors`` in JSON).
    :param original: the engine exception this error answers, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
        errors: Any = None,
        original: BaseException | None = None,
    ) -> None:
        HTTPException.__init__(self, description=message)
        self.message = message
        self.type = type or _TYPES.get(self.code or 500, "Error")
        self.reason = reason
        self.headers = dict(headers or {})
        self.errors = errors
        self.original = original

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [*self.headers.items(), ("Cache-Control", "no-store")]

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        """The library's rendering (:func:`render_error`); the app's handlers come first."""
        return render_error(self)


_ERROR_CLASSES: dict[int, type[MDBHTTPError]] = {
    status: type(f"MDB{base.__name__}", (MDBHTTPError, base), {"code": status})
    for status, base in default_exceptions.items()
}


def http_error(status: int, message: str, **options: Any) -> MDBHTTPError:
    """The :class:`MDBHTTPError` of ``status`` (``raise http_error(403, "...")``); options:
    see :class:`MDBHTTPError`."""
    try:
        cls = _ERROR_CLASSES[status]
    except KeyError:
        raise ValueError(f"no HTTP error class for status {status}") from None
    return cls(message, **options)


def wants_html() -> bool:
    """True for a browser navigation (HTML preferred over JSON, not a fetch/XHR)."""
    if request.is_json or request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]
    )


def render_error(error: MDBHTTPError, *, html: bool | None = None) -> Response:
    """The response of ``error``: a small page for a browser navigation (``html=None``:
    decided by the request's ``Accept``), else ``{"error": {"status", "type", "message"}}``
    (with ``reason`` and ``errors`` when set); its headers, and ``Cache-Control: no-store``."""
    status = error.code or 500
    if html if html is not None else wants_html():
        body = "<!doctype html><title>{0} {1}</title><h1>{0} {1}</h1><p>{2}</p>".format(
            status, escape(error.type), escape(error.message)
        )
        response = Response(body, status, mimetype="text/html")
    else:
        payload: dict[str, Any] = {"status": status, "type": error.type, "message": error.message}
        if error.reason is not None:
            payload["reason"] = error.reason
        if error.errors:
            payload["errors"] = error.errors
        response = jsonify(error=payload)
        response.status_code = status
    for name, value in error.headers.items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- the engine's exceptions ---------------------------------------------------------------------


def status_for(exc: BaseException) -> int:
    """The HTTP status of ``exc`` (500 when nothing more specific applies)."""
    for cls, status in STATUS_BY_EXCEPTION:
        if isinstance(exc, cls):
            return status
    return 500


def _client_message(exc: BaseException, status: int) -> str:
    if isinstance(exc, DuplicateKeyError):
        return "a document with the same unique key already exists"
    if isinstance(exc, WriteError):
        if exc.code == 121:
            return "the document was rejected by the collection's validation rules"
        return str((exc.details or {}).get("errmsg") or "the write was rejected")
    return str(exc) or type(exc).__name__


def to_http_error(exc: BaseException) -> MDBHTTPError:
    """``exc`` (an engine, pymongo or bson exception) as the :class:`MDBHTTPError` that
    answers it; a server error is logged here with its traceback, a client error at info."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status >= 500:
        message = _SERVER_MESSAGES.get(status, _SERVER_MESSAGES[500])
        log.error("%s %s failed: %s", request.method, request.path, exc, exc_info=exc)
    else:
        message = _client_message(exc, status)
        log.info("%s %s -> %d %s", request.method, request.path, status, type(exc).__name__)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitExceeded) and retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    errors = exc.errors if isinstance(exc, ManifestValidationError) and exc.errors else None
    return http_error(
        status, message, type=type(exc).__name__, headers=headers, errors=errors, original=exc
    )


def error_response(exc: BaseException) -> tuple[Response, int]:
    """The library's response for ``exc`` (also usable from the app's own handlers)."""
    error = to_http_error(exc)
    return render_error(error), error.code or 500


def handle_error(exc: BaseException) -> Any:
    """The handler of the library's exceptions: the matching :class:`MDBHTTPError`, through
    Flask's HTTP error handling, so the app's handler for its status (or for
    ``HTTPException``) answers it when there is one, and :func:`render_error` otherwise."""
    return current_app.handle_http_exception(to_http_error(exc))


def register_error_handlers(app: Flask, *, third_party: bool = True) -> None:
    """Answer the engine's exceptions (and, with ``third_party``, pymongo's and bson's) on
    ``app``. Classes the app already has a handler for keep theirs, and a handler it
    registers later for one of these classes replaces the library's."""
    existing = app.error_handler_spec.get(None, {}).get(None, {})
    for cls in HANDLED if third_party else LIBRARY_EXCEPTIONS:
        if cls not in existing:
            app.register_error_handler(cls, handle_error)


__all__ = [
    "HANDLED",
    "LIBRARY_EXCEPTIONS",
    "STATUS_BY_EXCEPTION",
    "THIRD_PARTY_EXCEPTIONS",
    "MDBHTTPError",
    "error_response",
    "handle_error",
    "http_error",
    "register_error_handlers",
    "render_error",
    "status_for",
    "to_http_error",
    "wants_html",
]
