"""Error responses of the auth layer: JSON for API clients, a small page for browsers.

The JSON body is the extension's usual ``{"error": {"status", "type", "message"}}``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from markupsafe import escape

_TYPES = {
    400: "BadRequest",
    401: "AuthenticationError",
    403: "AuthorizationError",
    404: "NotFound",
    409: "UserExistsError",
    429: "RateLimitExceeded",
}


def wants_html() -> bool:
    """True for a browser navigation (HTML preferred over JSON, not a fetch/XHR)."""
    if request.is_json or request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]
    )


def auth_error(
    status: int,
    message: str,
    *,
    type: str | None = None,
    headers: dict[str, str] | None = None,
    html: bool | None = None,
    reason: str | None = None,
) -> Response:
    """A finished error response (``abort(auth_error(...))`` stops a view with it);
    ``reason``: a stable code for clients (``error.reason`` in JSON)."""
    if html if html is not None else wants_html():
        body = "<!doctype html><title>{0} {1}</title><h1>{0} {1}</h1><p>{2}</p>".format(
            status, escape(_TYPES.get(status, "Error")), escape(message)
        )
        response = Response(body, status, mimetype="text/html")
    else:
        error: dict[str, Any] = {
            "status": status,
            "type": type or _TYPES.get(status, "Error"),
            "message": message,
        }
        if reason is not None:
            error["reason"] = reason
        response = jsonify(error=error)
        response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")
    return response
