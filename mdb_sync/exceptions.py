"""One exception hierarchy for the whole library.

Every error the library raises on purpose derives from :class:`MongoDBEngineError`, so a
caller can catch them all in one place; where a standard or pymongo exception has the same
meaning, ours derives from it too (``ValueError``, ``PermissionError``, ``LookupError``,
:class:`pymongo.errors.ConnectionFailure`), so code written against those keeps working.

Messages say *what* went wrong and *where* (an app slug, a collection, a JSON path, a host);
they never contain credentials or document contents.
"""

from __future__ import annotations

import warnings
from typing import Any

from pymongo.errors import ConnectionFailure


class MongoDBEngineError(Exception):
    """Base class of every error raised by mdb-sync.

    :param message: human readable explanation.
    :param context: machine readable details (app slug, collection, path, ...), never secrets.
    """

    def __init__(self, message: str, *, context: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = dict(context or {})

    def __str__(self) -> str:
        return self.message


# --- configuration and lifecycle -------------------------------------------------------------


class ConfigurationError(MongoDBEngineError, ValueError):
    """An engine, extension or service option is missing or has a bad value."""


class AuthNotConfiguredError(ConfigurationError):
    """Something needs an app's auth (a ``@login_required`` view, say) but the app's
    manifest has no ``auth`` block; ``context["app"]`` names the app."""


class EngineNotInitializedError(MongoDBEngineError, RuntimeError):
    """The engine was used before :meth:`MongoDBEngine.initialize` or after ``shutdown``."""


class EngineConnectionError(MongoDBEngineError, ConnectionFailure):
    """The MongoDB server could not be reached (or the URI naming it is malformed)."""


class InvalidMongoURI(EngineConnectionError, ValueError):
    """The MongoDB connection string is malformed."""


class EmbeddedServerError(MongoDBEngineError, RuntimeError):
    """The embedded server could not be started, found or stopped."""


class EmbeddedServerNotInstalled(EmbeddedServerError):
    """No MongoDB URI was given and the embedded server package is not installed."""


class EmbeddedServerUnavailable(EngineConnectionError, EmbeddedServerError):
    """The engine's embedded server is gone and could not be brought back (it died and a
    restart failed, it was stopped with ``mdb embedded stop``, or a private in-memory server
    exited). The message says which, and what to do; a pymongo ``ConnectionFailure``."""


# --- apps and manifests -------------------------------------------------------------------------


class AppNotFoundError(MongoDBEngineError, LookupError):
    """No app with this slug is registered."""


class AppNotActiveError(MongoDBEngineError, PermissionError):
    """The app is registered but its status is not ``active``."""


class AppConflictError(MongoDBEngineError, ValueError):
    """An app cannot be registered because its physical names could collide with another's."""


class AppVersionConflictError(AppConflictError):
    """An app's registry record changed (another process or thread wrote it) after the
    version a compare-and-set change was computed from."""


class ManifestValidationError(MongoDBEngineError, ValueError):
    """A manifest is invalid.

    ``errors`` maps each bad JSON path (``managed_indexes.tasks[1].keys``) to its messages.
    """

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, list[str]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, context=context)
        self.errors: dict[str, list[str]] = dict(errors or {})

    @property
    def paths(self) -> list[str]:
        """The JSON paths that failed validation, in order."""
        return list(self.errors)


# --- the sandbox ----------------------------------------------------------------------------------


class ScopeError(MongoDBEngineError, PermissionError):
    """An operation would read, write or reveal data outside the app's scopes."""


#: The name the seed documents use for the same error.
IsolationError = ScopeError


class QueryValidationError(MongoDBEngineError, ValueError):
    """A filter, update or pipeline uses something the sandbox refuses ($where, too deep, ...)."""


class InvalidCollectionName(QueryValidationError):
    """A collection name is empty, too long, reserved or contains forbidden characters."""


class ResourceLimitExceeded(MongoDBEngineError):
    """A document, result or request is larger than the configured limit."""


# --- calls to other servers -----------------------------------------------------------------------


class NetworkError(MongoDBEngineError, OSError):
    """A call to another server (an identity provider, a file server) failed: it could not
    be reached, broke off, or answered more than allowed. The message names the call."""


class NetworkTimeout(NetworkError, TimeoutError):
    """A call to another server did not finish within its total deadline (name lookup,
    connection, TLS, the answer's headers and body together), or was refused at once
    because too many earlier calls that timed out are still stuck in this process."""


# --- warnings -------------------------------------------------------------------------------------


class ManifestWarning(UserWarning):
    """A manifest is valid but sets something that has no effect (yet): the message names
    the key's path. Filter it like any warning (``warnings.simplefilter("error",
    ManifestWarning)`` makes such manifests fail in CI)."""


# --- indexes --------------------------------------------------------------------------------------


class IndexError_(MongoDBEngineError):
    """Base class for index management errors (named with a trailing underscore so it does not
    shadow the builtin ``IndexError``)."""


class _IndexConflictError(IndexError_):
    """Deprecated, never raised: a declared index that conflicts with an existing one is
    reported with status ``conflict`` by registration (see :doc:`/indexes`)."""


class _IndexNotSupportedError(IndexError_):
    """Deprecated, never raised: an index the server cannot build is reported with status
    ``not_supported`` by registration."""


_IndexConflictError.__name__ = _IndexConflictError.__qualname__ = "IndexConflictError"
_IndexNotSupportedError.__name__ = _IndexNotSupportedError.__qualname__ = "IndexNotSupportedError"
#: Public names kept importable (with a DeprecationWarning) though nothing raises them.
_DEPRECATED = {
    "IndexConflictError": _IndexConflictError,
    "IndexNotSupportedError": _IndexNotSupportedError,
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        warnings.warn(
            f"mdb_sync.exceptions.{name} is deprecated and never raised; catch IndexError_ "
            "or MongoDBEngineError",
            DeprecationWarning,
            stacklevel=2,
        )
        return _DEPRECATED[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- auth -----------------------------------------------------------------------------------------


class AuthError(MongoDBEngineError):
    """Base class for authentication and authorization errors."""


class AuthenticationError(AuthError):
    """Missing or invalid identity: maps to HTTP 401."""


class AuthorizationError(AuthError, PermissionError):
    """Identity known, action denied: maps to HTTP 403."""


class TokenError(AuthenticationError):
    """A JWT is malformed, expired, revoked, or signed with the wrong key or algorithm."""


class UserInputError(AuthError, ValueError):
    """A malformed email, a password that breaks the app's rules, an unknown role: HTTP 400."""


class UserExistsError(AuthError):
    """An account with this email already exists for the app: HTTP 409."""


class RateLimitExceeded(ResourceLimitExceeded):
    """Too many attempts in the window; ``retry_after`` is the number of seconds to wait."""

    def __init__(
        self, message: str, *, retry_after: int, context: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, context=context)
        self.retry_after = retry_after


# --- portability ----------------------------------------------------------------------------------


class PortabilityError(MongoDBEngineError, ValueError):
    """An export or import cannot proceed: a malformed dump file, a refused collection
    option, a target that already holds the app's data, an existing export directory."""


# --- schemas --------------------------------------------------------------------------------------


class SchemaError(MongoDBEngineError, ValueError):
    """A schema cannot be inferred (no documents to sample), is malformed, or would refuse
    documents already stored (``context["failed"]``: how many) when applied."""


# --- AI services ----------------------------------------------------------------------------------


class AIServiceError(MongoDBEngineError):
    """A language-model or embedding provider failed or is misconfigured."""


class AIProviderError(AIServiceError):
    """The provider answered an error, or kept failing after the retries.

    ``status`` is the HTTP status (None for timeouts and connection errors) and
    ``retry_after`` the seconds the provider asked to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, context=context)
        self.status = status
        self.retry_after = retry_after


class AIRateLimitError(AIProviderError):
    """The provider kept answering 429 (or asked to wait longer than the retry budget)."""


class AIBudgetExceededError(AIServiceError, ResourceLimitExceeded):
    """The app's monthly LLM budget (``llm_config.monthly_budget_usd``) has no room for the
    call; nothing was sent to the provider.

    ``budget_usd``, ``spent_usd`` and ``reserved_usd`` (calls in flight) describe the month
    ``month`` (``YYYY-MM``, UTC); ``needed_usd`` is what the call would have reserved and
    ``resets_at`` when the next month starts.
    """

    def __init__(
        self,
        message: str,
        *,
        budget_usd: float,
        spent_usd: float,
        reserved_usd: float,
        needed_usd: float,
        month: str,
        resets_at: Any = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, context=context)
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.needed_usd = needed_usd
        self.month = month
        self.resets_at = resets_at


class ModelNotFoundError(AIServiceError, LookupError):
    """The provider does not know the model (or deployment) that was asked for."""


class StructuredOutputError(AIServiceError, ValueError):
    """The model's reply did not validate against the requested schema, even after re-asking.

    ``errors`` holds the last validation errors and ``reply`` the last raw reply.
    """

    def __init__(
        self,
        message: str,
        *,
        errors: Any = None,
        reply: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, context=context)
        self.errors = errors
        self.reply = reply


# --- realtime -------------------------------------------------------------------------------------


class RealtimeError(MongoDBEngineError):
    """A realtime event could not be published or listened to (see :mod:`mdb_sync.realtime`)."""


class InvalidMessageError(RealtimeError, ValueError):
    """A realtime message cannot be sent: JSON cannot carry it, or it lacks what is required."""


class InvalidChannelError(InvalidMessageError):
    """A channel name is not acceptable (see :func:`mdb_sync.realtime.validate_channel`)."""


class ChannelRefused(RealtimeError, PermissionError):
    """A connection may not join a channel: the app's channel authorization refused it."""


class ChannelLimitExceeded(RealtimeError, ResourceLimitExceeded):
    """A connection is in as many channels as allowed, or the app has as many channels in
    this process as allowed."""


class ConnectionLimitExceeded(RealtimeError, ResourceLimitExceeded):
    """A websocket client was refused: the app, the user or the client address already has
    as many live connections as allowed (in this process, or in every process when the
    limits are counted in the database). ``limit`` names which one (``"app"``, ``"user"``
    or ``"address"``)."""

    def __init__(self, message: str, *, limit: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(message, context=context)
        self.limit = limit


__all__ = [
    "AIBudgetExceededError",
    "AIProviderError",
    "AIRateLimitError",
    "AIServiceError",
    "AppConflictError",
    "AppNotActiveError",
    "AppNotFoundError",
    "AppVersionConflictError",
    "AuthError",
    "AuthNotConfiguredError",
    "AuthenticationError",
    "AuthorizationError",
    "ChannelLimitExceeded",
    "ChannelRefused",
    "ConfigurationError",
    "ConnectionLimitExceeded",
    "EmbeddedServerError",
    "EmbeddedServerNotInstalled",
    "EngineConnectionError",
    "EngineNotInitializedError",
    "IndexError_",
    "InvalidChannelError",
    "InvalidCollectionName",
    "InvalidMessageError",
    "InvalidMongoURI",
    "IsolationError",
    "ManifestValidationError",
    "ManifestWarning",
    "ModelNotFoundError",
    "MongoDBEngineError",
    "NetworkError",
    "NetworkTimeout",
    "PortabilityError",
    "QueryValidationError",
    "RateLimitExceeded",
    "RealtimeError",
    "ResourceLimitExceeded",
    "ScopeError",
    "StructuredOutputError",
    "TokenError",
    "UserExistsError",
    "UserInputError",
]
