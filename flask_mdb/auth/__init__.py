"""Authentication and authorization for Flask apps on mdb-sync.

::

    from flask_mdb.auth import login_required, require_role, get_current_user

    @bp.get("/admin")
    @require_role("admin")
    def admin(): ...

Turned on by the manifest (``auth``, ``token_management``; ``MDB_AUTH`` to force it):
Flask-Login with server-side sessions in MongoDB, JWT access/refresh tokens, casbin RBAC,
MongoDB-backed rate limits, CSRF protection and security headers. See the README,
"Authentication and authorization".
"""

from .anonymous import AnonymousVisitor, caller_key, get_anonymous
from .current import (
    csrf_token,
    current_service,
    get_current_user,
    login_user,
    logout_user,
    register_user,
    require_service,
)
from .decorators import (
    csrf_exempt,
    login_required,
    public,
    rate_limit_auth,
    require_admin,
    require_auth,
    require_permission,
    require_role,
    token_security,
)
from .fresh import fresh_login_required, is_fresh
from .security import SecurityMiddleware
from .setup import init_auth, setup_auth_from_manifest
from .urls import auth_url, safe_next
from .user import AnonymousUser, AuthUser


def get_authz_provider() -> object:
    """The authorization provider of the request's app (``check(subject, resource, action)``)."""
    return require_service().authz


__all__ = [
    "AnonymousUser",
    "AnonymousVisitor",
    "AuthUser",
    "SecurityMiddleware",
    "auth_url",
    "caller_key",
    "csrf_exempt",
    "csrf_token",
    "current_service",
    "fresh_login_required",
    "get_anonymous",
    "get_authz_provider",
    "get_current_user",
    "init_auth",
    "is_fresh",
    "login_required",
    "login_user",
    "logout_user",
    "public",
    "rate_limit_auth",
    "register_user",
    "require_admin",
    "require_auth",
    "require_permission",
    "require_role",
    "safe_next",
    "setup_auth_from_manifest",
    "token_security",
]
