"""Two-factor sign-in with TOTP (RFC 6238, through pyotp): enrolment, codes, recovery codes,
the pending second step of a sign-in, remembered devices.

* **Enrolment** (:meth:`SecondFactor.begin`, :meth:`SecondFactor.confirm`): a random
  160-bit secret, shown once as a provisioning URI (``otpauth://...``, for a QR code) and as
  text; it becomes active only when a code from the authenticator proves it was copied.
  Then ten recovery codes are shown, once. Stored on the account (``two_factor``, never in a
  public view): the secret encrypted (AES-256-GCM, the key derived from the configured
  secret; the ciphertext is bound to the account's id), the recovery codes as SHA-256
  hashes — each works once (removed atomically).
* **Codes** are checked within one 30-second step either way (clock drift), in constant
  time, and a code — or any code of an earlier step — is refused once one was accepted (the
  last accepted step is stored and moved forward atomically): an observed code cannot be
  replayed. Checks go through an account lockout of their own (``max_failed_attempts`` per
  ``lockout_duration_seconds``, reserved before each check as for passwords), from any
  client, however many at once.
* **The second step** of a sign-in: after the password, the server keeps a *pending*
  sign-in (``mdb_auth_second_factor``: the hash of a random token held in the browser's
  cookie, five minutes, five codes at most) that only a code can complete — no session
  exists until then.
* **Remembered devices** (``remember_device_days`` > 0): a random token in a cookie, its
  hash stored with the account and its ``auth_version``, so a password change forgets them.

With ``global_users`` the second factor belongs to the account, for every app sharing it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import AuthenticationError, ConfigurationError, UserInputError
from . import store
from .config import TwoFactor
from .lockout import AccountLockout, LockoutPolicy
from .users import public_view

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .service import AuthService

#: Seconds a pending second step lives, and the codes it accepts.
PENDING_TTL = 300
PENDING_ATTEMPTS = 5
RECOVERY_CODES = 10
STEP = 30
DIGITS = 6
FIELD = "two_factor"


def _pyotp() -> Any:
    try:
        import pyotp
    except ImportError as exc:  # pragma: no cover - pyotp is in the auth extra
        raise ConfigurationError(
            "two-factor sign-in needs the pyotp package: pip install 'mdb-sync[auth]'"
        ) from exc
    return pyotp


def derive_key(secret: str | bytes, scope: str) -> bytes:
    """The 256-bit key that encrypts TOTP secrets of ``scope`` (an app, or global users)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(raw, f"mdb-sync totp secrets\x1f{scope}".encode(), hashlib.sha256).digest()


def _recovery_hash(user_id: str, code: str) -> str:
    normalized = code.replace("-", "").replace(" ", "").lower()
    return store.digest("recovery", user_id, normalized)


def new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()  # 80 bits
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:16]}"


class SecondFactor:
    """TOTP second factor of one app's accounts.

    :param key: the secret TOTP secrets are encrypted with (``MDB_TWO_FACTOR_KEY``, else the
        Flask ``SECRET_KEY``); without one, enrolling raises :class:`ConfigurationError`.
    """

    def __init__(self, auth: AuthService, settings: TwoFactor, key: Any = None) -> None:
        self.auth = auth
        self.settings = settings
        shared = auth.users is not None and auth.users.kind == "global"
        self.scope = "global_users" if shared else auth.slug
        self._key = derive_key(key, self.scope) if key else None
        self.lockout = AccountLockout(
            auth.engine,
            auth.slug,
            LockoutPolicy(settings.max_failed_attempts, settings.lockout_seconds, True),
            shared=shared,
        )

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.auth.engine, store.SECOND_FACTOR)

    # --- the secret at rest -------------------------------------------------------------------

    def _aead(self) -> Any:
        if self._key is None:
            raise ConfigurationError(
                f"app {self.auth.slug!r}: two-factor secrets are encrypted with a key: set "
                "MDB_TWO_FACTOR_KEY (or the Flask SECRET_KEY), or pass key= to SecondFactor",
                context={"app": self.auth.slug, "option": "MDB_TWO_FACTOR_KEY"},
            )
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self._key)

    def seal(self, user_id: str, secret: str) -> str:
        """``secret`` encrypted for storage (AES-256-GCM, bound to ``user_id``)."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead().encrypt(nonce, secret.encode("ascii"), user_id.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def unseal(self, user_id: str, sealed: Any) -> str | None:
        """The secret :meth:`seal` stored for ``user_id``, or None (tampered, another
        user's, or sealed under another key)."""
        from cryptography.exceptions import InvalidTag

        if not isinstance(sealed, str):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed)
            secret: bytes = self._aead().decrypt(raw[:12], raw[12:], user_id.encode())
            return secret.decode("ascii")
        except (InvalidTag, ValueError):
            return None

    # --- enrolment ------------------------------------------------------------------------------

    def enabled_for(self, doc: Mapping[str, Any] | None) -> bool:
        return bool(((doc or {}).get(FIELD) or {}).get("enabled"))

    def begin(self, user_id: Any) -> dict[str, str]:
        """Start enrolling: ``{secret, provisioning_uri}`` — show them once; nothing changes
        until :meth:`confirm` gets a code made from it. Starting again replaces the secret
        being enrolled (an enabled second factor stays as it is until then)."""
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        secret = _pyotp().random_base32(32)
        users.update(doc["_id"], {f"{FIELD}.pending": self.seal(str(doc["_id"]), secret)})
        issuer = self.settings.issuer_name or self.auth.slug
        uri = _pyotp().TOTP(secret).provisioning_uri(name=doc["email"], issuer_name=issuer)
        return {"secret": secret, "provisioning_uri": uri}

    def confirm(self, user_id: Any, code: Any) -> list[str]:
        """Finish enrolling with a code of the new secret: the recovery codes (shown once).
        :class:`AuthenticationError` for a wrong code (it counts towards the lockout)."""
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        uid = str(doc["_id"])
        secret = self.unseal(uid, (doc.get(FIELD) or {}).get("pending"))
        if secret is None:
            raise UserInputError("start enrolling first (no secret is being enrolled)")
        step = self._checked(uid, secret, code, last=None)
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        users.update(
            doc["_id"],
            {
                FIELD: {
                    "enabled": True,
                    "secret": self.seal(uid, secret),
                    "last_step": step,
                    "recovery": [_recovery_hash(uid, c) for c in codes],
                    "enabled_at": store.now(),
                }
            },
        )
        self.auth.audit("two_factor_enabled", user_id=uid)
        return codes

    def new_recovery_codes(self, user_id: Any) -> list[str]:
        """Replace the recovery codes (the old ones stop working)."""
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        if not self.enabled_for(doc):
            raise UserInputError("two-factor sign-in is not enabled for this account")
        uid = str(doc["_id"])
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        users.update(doc["_id"], {f"{FIELD}.recovery": [_recovery_hash(uid, c) for c in codes]})
        self.auth.audit("two_factor_recovery_codes", user_id=uid)
        return codes

    def disable(self, user_id: Any) -> None:
        """Turn the second factor off (callers ask for a fresh sign-in and a code first);
        remembered devices are forgotten."""
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        users.coll.update_one({"_id": doc["_id"]}, {"$unset": {FIELD: ""}})
        self.coll.delete_many({"kind": "device", "user_id": str(doc["_id"])})
        self.auth.audit("two_factor_disabled", user_id=str(doc["_id"]))

    # --- checking codes ---------------------------------------------------------------------------

    def _checked(self, uid: str, secret: str, code: Any, last: int | None) -> int:
        """The step of ``code`` for ``secret`` (reserved against the lockout first), or
        :class:`AuthenticationError`; a step at or before ``last`` is a replay."""
        reservation = self.lockout.reserve(f"2fa:{uid}")  # RateLimitExceeded when locked
        step = None
        if isinstance(code, str):
            digits = code.replace(" ", "")
            if len(digits) == DIGITS and digits.isdigit():
                totp = _pyotp().TOTP(secret)
                now = int(time.time()) // STEP
                for candidate in (now - 1, now, now + 1):
                    if hmac.compare_digest(totp.generate_otp(candidate), digits) and (
                        last is None or candidate > last
                    ):
                        step = candidate
        if step is None:
            self.lockout.failed(reservation)
            raise AuthenticationError("the code is wrong or was already used")
        self.lockout.succeeded(reservation)
        return step

    def verify(self, user_id: Any, *, code: Any = None, recovery_code: Any = None) -> None:
        """Check a second factor of an enrolled account: a TOTP ``code`` (never one of a step
        already used) or a ``recovery_code`` (spent). :class:`AuthenticationError` when wrong,
        :class:`~mdb_sync.exceptions.RateLimitExceeded` while the checks are locked."""
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        uid = str(doc["_id"])
        state = doc.get(FIELD) or {}
        if not state.get("enabled"):
            raise AuthenticationError("two-factor sign-in is not enabled for this account")
        if recovery_code is not None:
            reservation = self.lockout.reserve(f"2fa:{uid}")
            hashed = _recovery_hash(uid, recovery_code) if isinstance(recovery_code, str) else ""
            spent = users.coll.update_one(
                {"_id": doc["_id"], f"{FIELD}.recovery": hashed},
                {"$pull": {f"{FIELD}.recovery": hashed}},
            ).modified_count
            if not spent:
                self.lockout.failed(reservation)
                raise AuthenticationError("the recovery code is wrong or was already used")
            self.lockout.succeeded(reservation)
            self.auth.audit("two_factor_recovery_code_used", user_id=uid)
            return
        secret = self.unseal(uid, state.get("secret"))
        if secret is None:
            raise AuthenticationError("this account's second factor cannot be read")
        last = int(state.get("last_step", -1))
        step = self._checked(uid, secret, code, last)
        # Move the last step forward atomically: two requests with the same code, one wins.
        moved = users.coll.update_one(
            {"_id": doc["_id"], f"{FIELD}.last_step": {"$lt": step}},
            {"$set": {f"{FIELD}.last_step": step}},
        ).modified_count
        if not moved:
            raise AuthenticationError("the code is wrong or was already used")

    def remaining_recovery_codes(self, doc: Mapping[str, Any]) -> int:
        return len((doc.get(FIELD) or {}).get("recovery") or [])

    # --- the pending second step ------------------------------------------------------------------

    def _key_of(self, kind: str, token: str) -> str:
        return store.digest("second-factor", kind, self.scope, token)

    def start(self, user: Mapping[str, Any], **fields: Any) -> str:
        """A pending sign-in of ``user`` waiting for its second factor: the browser's token."""
        token = secrets.token_urlsafe(32)
        now = store.now()
        self.coll.insert_one(
            {
                "_id": self._key_of("pending", token),
                "kind": "pending",
                "app_id": self.auth.slug,
                "user_id": str(user["user_id"]),
                "auth_version": int(user.get("auth_version", 0)),
                "attempts": 0,
                **fields,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=PENDING_TTL),
            }
        )
        return token

    def attempt(self, token: Any) -> dict[str, Any] | None:
        """Count one code against the pending sign-in of ``token``: its record, or None when
        there is none (unknown, expired, another app's, out of attempts)."""
        if not isinstance(token, str) or not 20 <= len(token) <= 128:
            return None
        doc = self.coll.find_one_and_update(
            {
                "_id": self._key_of("pending", token),
                "kind": "pending",
                "app_id": self.auth.slug,
                "attempts": {"$lt": PENDING_ATTEMPTS},
                "expires_at": {"$gt": store.now()},
            },
            {"$inc": {"attempts": 1}},
            return_document=True,
        )
        return doc

    def finish(self, token: str) -> bool:
        """Spend the pending sign-in (False: another request finished it first)."""
        key = self._key_of("pending", token)
        return self.coll.delete_one({"_id": key, "kind": "pending"}).deleted_count == 1

    # --- remembered devices -----------------------------------------------------------------------

    def remember(self, user: Mapping[str, Any]) -> tuple[str, int] | None:
        """A token for this device (``(token, max_age)``), or None when devices are not
        remembered here."""
        days = self.settings.remember_device_days
        if days <= 0:
            return None
        token = secrets.token_urlsafe(32)
        now = store.now()
        self.coll.insert_one(
            {
                "_id": self._key_of("device", token),
                "kind": "device",
                "app_id": self.auth.slug,
                "user_id": str(user["user_id"]),
                "auth_version": int(user.get("auth_version", 0)),
                "created_at": now,
                "expires_at": now + dt.timedelta(days=days),
            }
        )
        return token, days * 86_400

    def remembered(self, token: Any, user: Mapping[str, Any]) -> bool:
        """Whether ``token`` is a remembered device of ``user`` (same password since)."""
        if self.settings.remember_device_days <= 0 or not isinstance(token, str):
            return False
        if not 20 <= len(token) <= 128:
            return False
        doc = self.coll.find_one({"_id": self._key_of("device", token), "kind": "device"})
        expires = store.aware((doc or {}).get("expires_at"))
        return (
            doc is not None
            and expires is not None
            and expires > store.now()
            and doc.get("user_id") == str(user["user_id"])
            and int(doc.get("auth_version", -1)) == int(user.get("auth_version", 0))
        )

    def public(self, user_id: Any) -> dict[str, Any]:
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        return {
            "enabled": self.enabled_for(doc),
            "recovery_codes_left": self.remaining_recovery_codes(doc),
            "user": public_view(users, doc),
        }
