"""Signals of authentication events (sender: the engine; ``slug`` and details as keywords).

::

    from mdb_sync.auth.signals import login_failed

    @login_failed.connect
    def alert(engine, slug, reason, **extra): ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A user registered: ``slug``, ``user``.
user_registered = _signals.signal("auth-user-registered")
#: A password check succeeded: ``slug``, ``user``.
user_authenticated = _signals.signal("auth-user-authenticated")
#: A password check failed: ``slug`` (no email: failures must not become an oracle).
login_failed = _signals.signal("auth-login-failed")
#: A password was changed or reset: ``slug``, ``user``.
password_changed = _signals.signal("auth-password-changed")
#: A password-reset link was requested for an existing account: ``slug``, ``user``,
#: ``token`` (deliver it to the user's email, nowhere else).
password_reset_requested = _signals.signal("auth-password-reset-requested")
#: A verification link was made for an account: ``slug``, ``user``, ``token``.
verification_requested = _signals.signal("auth-verification-requested")
#: An account's e-mail address changed (confirmed at the new address): ``slug``, ``user``,
#: ``old_email``.
email_changed = _signals.signal("auth-email-changed")
#: An anonymous identity became an account: ``slug``, ``anonymous_id``, ``user``.
anonymous_upgraded = _signals.signal("auth-anonymous-upgraded")
#: A user was deactivated: ``slug``, ``user_id``.
user_deactivated = _signals.signal("auth-user-deactivated")
#: A spent refresh token was presented again and its family revoked: ``slug``, ``user_id``.
token_reuse_detected = _signals.signal("auth-token-reuse-detected")

__all__ = [
    "anonymous_upgraded",
    "email_changed",
    "login_failed",
    "password_changed",
    "password_reset_requested",
    "token_reuse_detected",
    "user_authenticated",
    "user_deactivated",
    "user_registered",
    "verification_requested",
]
