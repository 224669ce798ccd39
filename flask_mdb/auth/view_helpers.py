"""What the auth views share: the bound app's auth, request bodies, rate limits, CSRF, forms.

Public names so that the blueprint's view modules (:mod:`.views`, :mod:`.fresh`,
:mod:`.platform_views`, ...) share one implementation.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, render_template, request

from mdb_sync.auth import AuthService
from mdb_sync.exceptions import RateLimitExceeded

from . import current
from .decorators import hit_limit
from .responses import auth_error


def home() -> str:
    return str(current_app.extensions["mdb"].config["MDB_AUTH_HOME"])


def service_or_404(need_users: bool = True) -> AuthService:
    auth = current.current_service()
    if auth is None or (need_users and auth.users is None):
        abort(auth_error(404, "this app has no sign-in"))
    return auth


def payload() -> dict[str, Any]:
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            abort(auth_error(400, "the body must be a JSON object"))
        return data
    return request.form.to_dict()


def text_field(data: dict[str, Any], key: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        abort(auth_error(400, f"{key}: a string is required"))
    return value


def flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "on", "yes"))


def limit(auth: AuthService, name: str) -> None:
    rule = auth.config.limit(name)
    if rule is not None:
        refused = hit_limit(name, rule.max_attempts, rule.window_seconds)
        if refused is not None:
            raise refused


def refusal_status(exc: Exception) -> tuple[int, dict[str, str]]:
    """Status and headers of a refused sign-in: 401, or 429 for a locked account."""
    if isinstance(exc, RateLimitExceeded):
        return 429, {"Retry-After": str(exc.retry_after)}
    return 401, {}


def check_csrf(auth: AuthService) -> None:
    if auth.config.csrf_enabled:
        problem = current.csrf_problem(auth)
        if problem is not None:
            abort(auth_error(*problem))


def form(template: str, status: int = 200, **context: Any) -> Any:
    return render_template(template, **context), status
