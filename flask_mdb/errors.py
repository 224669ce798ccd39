"""JSON error responses for the engine's exceptions (opt in with ``MDB_ERROR_HANDLERS``).

The body is ``{"error": {"status": 400, "type": "QueryValidationError", "message": "..."}}``.
Client errors carry the exception's message (the library's messages name what and where,
never credentials or document contents); server errors say only what kind of failure it
was and are logged with their traceback. Handlers are added only for exception classes the
app has no handler for yet, and a handler the app registers later wins.
"""

from __future__ import annotations

import logging
from typing import Any

from bson.errors import InvalidDocument, InvalidId
from flask import Flask, Response, jsonify, request
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, WriteError

from mdb_sync.exceptions import (
    AppConflictError,
    AppNotActiveError,
    AppNotFoundError,
    AuthenticationError,
    AuthorizationError,
    EngineConnectionError,
    EngineNotInitializedError,
    ManifestValidationError,
    MongoDBEngineError,
    QueryValidationError,
    RateLimitExceeded,
    ResourceLimitExceeded,
    SchemaError,
    ScopeError,
)

from .binding import AppNotBoundError

log = logging.getLogger("flask_mdb")

#: (exception class, HTTP status), most specific first: the first match wins.
STATUS_BY_EXCEPTION: list[tuple[type[BaseException], int]] = [
    (RateLimitExceeded, 429),
    (ResourceLimitExceeded, 413),
    (AuthenticationError, 401),
    (AuthorizationError, 403),
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
    (MongoDBEngineError, 500),
]

#: The classes handlers are registered for (their subclasses are covered by Flask's MRO lookup).
HANDLED = (
    MongoDBEngineError,
    InvalidId,
    InvalidDocument,
    ConnectionFailure,
    ExecutionTimeout,
    WriteError,
)

_SERVER_MESSAGES = {
    500: "internal error",
    503: "the database is unavailable; retry later",
    504: "the database operation timed out",
}


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


def error_response(exc: BaseException) -> tuple[Response, int]:
    """The JSON response for ``exc`` (also usable from the app's own handlers)."""
    status = status_for(exc)
    body: dict[str, Any] = {"status": status, "type": type(exc).__name__}
    if status >= 500:
        body["message"] = _SERVER_MESSAGES.get(status, _SERVER_MESSAGES[500])
        log.error("%s %s failed: %s", request.method, request.path, exc, exc_info=exc)
    else:
        body["message"] = _client_message(exc, status)
        if isinstance(exc, ManifestValidationError) and exc.errors:
            body["errors"] = exc.errors
        log.info("%s %s -> %d %s", request.method, request.path, status, type(exc).__name__)
    response = jsonify(error=body)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitExceeded) and retry_after is not None:
        response.headers["Retry-After"] = str(int(retry_after))
    return response, status


def register_error_handlers(app: Flask) -> None:
    """Answer the engine's (and pymongo's) exceptions with JSON errors on ``app``."""
    existing = app.error_handler_spec.get(None, {}).get(None, {})
    for cls in HANDLED:
        if cls not in existing:
            app.register_error_handler(cls, error_response)
