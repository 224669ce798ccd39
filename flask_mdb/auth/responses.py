"""Error responses of the auth layer: JSON for API clients, a small page for browsers.

Both come from the extension's one renderer (:func:`flask_mdb.errors.render_error`): the
JSON body is the usual ``{"error": {"status", "type", "message"}}``. Decorators and guards
raise the error (:func:`refusal`); views that answer with it return :func:`auth_error`.
"""

from __future__ import annotations

from flask import Response

from ..errors import MDBHTTPError, http_error, render_error, wants_html

#: The ``type`` the auth layer's errors have always carried, by status.
_TYPES = {
    400: "BadRequest",
    401: "AuthenticationError",
    403: "AuthorizationError",
    404: "NotFound",
    409: "UserExistsError",
    429: "RateLimitExceeded",
}


def refusal(
    status: int,
    message: str,
    *,
    type: str | None = None,
    headers: dict[str, str] | None = None,
    reason: str | None = None,
) -> MDBHTTPError:
    """The HTTP error of a refused request (``raise refusal(403, "...")``): the app's error
    handler for its status or class answers it if there is one, the library's otherwise.
    ``reason``: a stable code for clients (``error.reason`` in JSON)."""
    return http_error(
        status, message, type=type or _TYPES.get(status), headers=headers, reason=reason
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
    error = refusal(status, message, type=type, headers=headers, reason=reason)
    return render_error(error, html=html)


__all__ = ["auth_error", "refusal", "wants_html"]
