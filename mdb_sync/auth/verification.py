"""E-mail verification and change of e-mail: single-use links sent to the address itself.

A link carries a random token (256 bits); ``mdb_auth_email_tokens`` keeps its hash, the app,
the user, the *address* it was sent to, its purpose and the expiry
(``auth.users.require_verification.token_ttl_seconds``). Following it proves that mailbox:

* ``verify`` — the account's address is proven (``email_verified_via: "email_link"``, for the
  account: it proves the mailbox, so it holds in every app sharing a ``global_users``
  account) — but only while the account still has *that* address: a link sent to one
  address never verifies another.
* ``change`` — the account's address becomes the new one (proven), when nobody took it
  meanwhile. The link goes to the *new* address only; the old one gets a notice without any
  link, so the holder of the old mailbox (or of a stolen session) cannot confirm a change
  alone.

A token is spent atomically (two clicks cannot both use it), and every token of a user is
void once its address changes or its ``auth_version`` moves (a password change).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from ..exceptions import TokenError, UserExistsError, UserInputError
from . import signals, store
from .users import GlobalUserStore, normalize_email, public_view

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .service import AuthService

VERIFY = "verify"
CHANGE = "change"
#: Links one account may be sent per hour (each purpose), however many clients ask.
LINKS_PER_EMAIL = (3, 3600)
MAX_TOKEN_LENGTH = 128
#: The one message for every unusable link.
INVALID_LINK = "this confirmation link is invalid or has expired"
#: Who proved an address by following a link.
VIA = "email_link"


class EmailLinks:
    """The verification and change-of-address links of one app."""

    def __init__(self, auth: AuthService, ttl: int = 86_400) -> None:
        self.auth = auth
        self.ttl = ttl

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.auth.engine, store.EMAIL_TOKENS)

    def _id(self, token: str) -> str:
        return store.digest("email-link", self.auth.slug, token)

    def _issue(self, doc: dict[str, Any], email: str, purpose: str) -> str | None:
        max_links, window = LINKS_PER_EMAIL
        capped = self.auth.limiter.hit(self.auth.slug, f"email_{purpose}", email, max_links, window)
        if not capped.allowed:
            return None
        token = secrets.token_urlsafe(32)
        now = store.now()
        self.coll.insert_one(
            {
                "_id": self._id(token),
                "app_id": self.auth.slug,
                "user_id": str(doc["_id"]),
                "email": email,
                "previous_email": doc.get("email"),
                "purpose": purpose,
                "auth_version": int(doc.get("auth_version", 0)),
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=self.ttl),
            }
        )
        return token

    # --- verification -----------------------------------------------------------------------

    def request(self, email: Any) -> tuple[dict[str, Any], str] | None:
        """A verification link for the account with ``email``: ``(user, token)``, or None
        when there is nothing to send (no such active account, already verified, or over
        :data:`LINKS_PER_EMAIL`). Callers answer the same either way."""
        users = self.auth.users
        try:
            normalized = normalize_email(email)
        except UserInputError:
            return None
        doc = users.find_by_email(normalized) if users is not None else None
        if doc is None or users is None or not users.is_member(doc) or not users.is_active(doc):
            return None
        if users.is_email_verified(doc) and doc.get("email_verified_via"):
            return None
        token = self._issue(doc, normalized, VERIFY)
        if token is None:
            return None
        user = public_view(users, doc)
        signals.verification_requested.send(
            self.auth.engine, slug=self.auth.slug, user=user, token=token
        )
        return user, token

    def request_change(self, user_id: Any, new_email: Any) -> tuple[dict[str, Any], str] | None:
        """Start changing the account's address to ``new_email``: ``(user as the new address
        sees it, token)`` — deliver the token to the *new* address — or None when over the
        hourly cap. :class:`UserInputError` for a bad address or the account's own,
        :class:`UserExistsError` when another account has it."""
        users = self.auth.require_users()
        doc = self.auth.user_document(user_id)
        normalized = normalize_email(new_email)
        if normalized == doc.get("email"):
            raise UserInputError("this is already the account's e-mail address")
        if users.find_by_email(normalized) is not None:
            raise UserExistsError("an account with this email already exists")
        token = self._issue(doc, normalized, CHANGE)
        if token is None:
            return None
        user = {**public_view(users, doc), "email": normalized, "previous_email": doc["email"]}
        self.auth.audit("email_change_requested", user_id=str(doc["_id"]))
        return user, token

    # --- following a link ---------------------------------------------------------------------

    def peek(self, token: Any) -> dict[str, Any] | None:
        if not isinstance(token, str) or not 20 <= len(token) <= MAX_TOKEN_LENGTH:
            return None
        doc = self.coll.find_one({"_id": self._id(token), "app_id": self.auth.slug})
        expires = store.aware((doc or {}).get("expires_at"))
        if doc is None or expires is None or expires <= store.now():
            return None
        return doc

    def confirm(self, token: Any) -> tuple[dict[str, Any], str]:
        """Follow a link: ``(user, purpose)``. :class:`TokenError` (one message) for a link
        that is unknown, expired, spent, for an address the account no longer has, or voided
        by a password change; :class:`UserExistsError` when the new address was taken
        meanwhile (the link stays usable once it is free again)."""
        users = self.auth.require_users()
        record = self.peek(token)
        doc = users.get(record["user_id"]) if record is not None else None
        if (
            record is None
            or doc is None
            or not users.is_member(doc)
            or not users.is_active(doc)
            or int(doc.get("auth_version", 0)) != int(record.get("auth_version", 0))
        ):
            raise TokenError(INVALID_LINK, context={"app": self.auth.slug})
        purpose = record.get("purpose")
        # The link names the address it was sent to: the account must be that address's
        # (verify) or still have the address it had when the change was asked (change).
        current = record["email"] if purpose == VERIFY else record.get("previous_email")
        if doc.get("email") != current:
            raise TokenError(INVALID_LINK, context={"app": self.auth.slug})
        if purpose == CHANGE and users.find_by_email(record["email"]) is not None:
            raise UserExistsError("an account with this email already exists")
        if self.coll.delete_one({"_id": record["_id"]}).deleted_count != 1:
            raise TokenError(INVALID_LINK, context={"app": self.auth.slug})
        proof = users.verified_fields(VIA, account=True)
        fields: dict[str, Any] = {**proof, "updated_at": store.now()}
        if purpose == CHANGE:
            fields["email"] = record["email"]
        try:
            updated = users.update(doc["_id"], fields)
        except DuplicateKeyError as exc:  # taken between the check and the update
            raise UserExistsError("an account with this email already exists") from exc
        assert updated is not None
        if purpose == CHANGE and isinstance(users, GlobalUserStore):
            # Proofs apps gave were about the old address.
            stale = {
                f"apps.{slug}.{key}": ""
                for slug in (doc.get("apps") or {})
                for key in ("email_verified_via", "email_verified_at")
            }
            if stale:
                refreshed = users.coll.find_one_and_update(
                    {"_id": doc["_id"]}, {"$unset": stale}, return_document=True
                )
                if refreshed is not None:  # else deleted meanwhile: the view before the unset
                    updated = refreshed
        user = public_view(users, updated)
        if purpose == CHANGE:
            # Every outstanding link of the old address is void; casbin knows users by email.
            self.coll.delete_many({"app_id": self.auth.slug, "user_id": str(doc["_id"])})
            self.auth.email_changed(str(doc["email"]), user)
        self.auth.audit("email_verified" if purpose == VERIFY else "email_changed",
                        user_id=user["user_id"])  # fmt: skip
        return user, str(purpose)
