"""mdb-sync: a synchronous, thread-safe multi-app runtime on PyMongo.

Each app gets a sandboxed database (collections prefixed with its slug, documents tagged
with ``app_id``, reads filtered by it), a validated manifest, managed indexes, and services.
Importing this package does no I/O; :meth:`MongoDBEngine.initialize` connects.
"""

from .context import current_engine
from .engine import MongoDBEngine
from .exceptions import (
    AppConflictError,
    AppNotActiveError,
    AppNotFoundError,
    AppVersionConflictError,
    AuthenticationError,
    AuthError,
    AuthNotConfiguredError,
    AuthorizationError,
    ConfigurationError,
    EmbeddedServerError,
    EmbeddedServerNotInstalled,
    EmbeddedServerUnavailable,
    EngineConnectionError,
    EngineNotInitializedError,
    InvalidCollectionName,
    ManifestValidationError,
    ManifestWarning,
    MongoDBEngineError,
    QueryValidationError,
    RateLimitExceeded,
    ResourceLimitExceeded,
    ScopeError,
    TokenError,
    UserExistsError,
    UserInputError,
)
from .manifest import ManifestValidator
from .scoping import QueryLimits, ScopedCollection, ScopedDatabase

__version__ = "0.1.0"

__all__ = [
    "AppConflictError",
    "AppNotActiveError",
    "AppNotFoundError",
    "AppVersionConflictError",
    "AuthError",
    "AuthNotConfiguredError",
    "AuthenticationError",
    "AuthorizationError",
    "ConfigurationError",
    "EmbeddedServerError",
    "EmbeddedServerNotInstalled",
    "EmbeddedServerUnavailable",
    "EngineConnectionError",
    "EngineNotInitializedError",
    "InvalidCollectionName",
    "ManifestValidationError",
    "ManifestValidator",
    "ManifestWarning",
    "MongoDBEngine",
    "MongoDBEngineError",
    "QueryLimits",
    "QueryValidationError",
    "RateLimitExceeded",
    "ResourceLimitExceeded",
    "ScopeError",
    "ScopedCollection",
    "ScopedDatabase",
    "TokenError",
    "UserExistsError",
    "UserInputError",
    "__version__",
    "current_engine",
]
