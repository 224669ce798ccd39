"""Every use of Flask-Login's internals, in one module.

The extension uses Flask-Login's public API where it has one — ``LoginManager.user_loader``,
``request_loader`` and its ``request_callback`` property, ``unauthorized_handler``,
``flask_login.login_user``/``logout_user``, ``current_user``, the ``user_logged_in`` /
``user_logged_out`` signals, ``flask_login.config.COOKIE_NAME``. Two things it has no
public way to do, and they are here:

* make ``current_user`` a given user for the rest of the request without writing Flask's
  session (the library's sessions are server-side: ``flask_login.login_user`` would put the
  user id in Flask's cookie), or forget the user Flask-Login resolved (the request now
  serves another app): Flask-Login keeps the request's user in ``g._login_user``;
* tell whether Flask's session names a user signed in with ``flask_login.login_user``, and
  replace that id by one naming the login's server-side session (so a logout can revoke
  it): Flask-Login keeps the id under the session key ``_user_id`` — and writes the remember
  cookie from it;
* tell whether that sign-in asked for the remember cookie, and for how long: Flask-Login
  keeps ``"set"`` under ``_remember`` until the response writes the cookie, and a
  ``duration`` given to ``login_user`` under ``_remember_seconds``.

``tests/test_dependency_seams.py`` checks both on the installed Flask-Login (and fails naming
the one a release changed); ``setup.cfg`` keeps Flask-Login below its next minor version.
"""

from __future__ import annotations

from typing import Any

from flask import g, session

#: Each private name used: what the seam test checks.
PRIVATES: dict[str, tuple[str, ...]] = {
    "flask.g": ("_login_user",),  # current_user's cache for the request
    "flask.session": ("_user_id", "_remember", "_remember_seconds"),
}

_REQUEST_USER = "_login_user"
_SESSION_USER_ID = "_user_id"
_SESSION_REMEMBER = "_remember"
_SESSION_REMEMBER_SECONDS = "_remember_seconds"


def set_request_user(user: Any) -> None:
    """Make ``current_user`` be ``user`` for the rest of the request (nothing is written
    to Flask's session)."""
    setattr(g, _REQUEST_USER, user)


def forget_request_user() -> None:
    """Make Flask-Login resolve ``current_user`` again on its next use in this request."""
    g.pop(_REQUEST_USER, None)


def session_user_id() -> Any:
    """The user id ``flask_login.login_user`` stored in Flask's session, or None."""
    return session.get(_SESSION_USER_ID)


def set_session_user_id(user_id: str) -> None:
    """Replace the user id ``flask_login.login_user`` just stored in Flask's session (the
    remember cookie, written at the end of the request, carries the new one)."""
    session[_SESSION_USER_ID] = user_id


def forget_session_user_id() -> None:
    """Take the user id out of Flask's session (a login that ended)."""
    session.pop(_SESSION_USER_ID, None)


def remember_requested() -> bool:
    """True while the request's ``flask_login.login_user(..., remember=True)`` has not yet
    written its remember cookie."""
    return session.get(_SESSION_REMEMBER) == "set"


def remember_seconds() -> float | None:
    """The ``duration`` (seconds) given to ``flask_login.login_user``, or None (then the
    remember cookie lasts ``REMEMBER_COOKIE_DURATION``)."""
    value = session.get(_SESSION_REMEMBER_SECONDS)
    return float(value) if isinstance(value, int | float) else None


__all__ = [
    "PRIVATES",
    "forget_request_user",
    "forget_session_user_id",
    "remember_requested",
    "remember_seconds",
    "session_user_id",
    "set_request_user",
    "set_session_user_id",
]
