"""Provider identities linked to users: (issuer, subject) -> user.

A user signs in through a provider as the *identity* the provider vouches for: its issuer
and its subject (``sub``, GitHub's numeric id) — never its e-mail, which a provider may let
anyone set, and which may change hands. ``mdb_auth_identities`` keeps one document per
identity and account store, its ``_id`` the hash of (scope, issuer, subject), so one identity
can belong to one user only (a second link is a duplicate key, not a race). The scope is the
app (``app:<slug>``, for ``app_users``) or ``global`` (``global_users``: an identity linked
through one app signs in to the same shared account in every app).

Documents also keep what the provider asserted at the last sign-in (e-mail, whether it was
verified, a display name), the provider's name in the app's manifest, and when.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from .. import store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ...engine import MongoDBEngine

#: Identities one user may link at most.
MAX_PER_USER = 20


def identity_id(scope: str, issuer: str, subject: str) -> str:
    return store.digest("identity", scope, issuer, subject)


class IdentityLinks:
    """The identities of one account store (``scope``), used by app ``slug``."""

    def __init__(self, engine: MongoDBEngine, slug: str, scope: str) -> None:
        self.engine = engine
        self.slug = slug
        self.scope = scope

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.IDENTITIES)

    def id_for(self, issuer: str, subject: str) -> str:
        return identity_id(self.scope, issuer, subject)

    def find(self, issuer: str, subject: str) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": self.id_for(issuer, subject)})

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        query = {"scope": self.scope, "user_id": user_id}
        return list(self.coll.find(query).sort("linked_at", 1).limit(MAX_PER_USER * 2))

    def count_for_user(self, user_id: str, *, usable_only: bool = False) -> int:
        query: dict[str, Any] = {"scope": self.scope, "user_id": user_id}
        if usable_only:
            query["unlinking"] = {"$ne": True}
        return int(self.coll.count_documents(query))

    def reserve(self, issuer: str, subject: str, provider: str, asserted: dict[str, Any]) -> str:
        """Insert the identity with no user yet (``DuplicateKeyError`` when it exists):
        the first step of creating an account for it, so a crash between the two steps
        leaves a record the next sign-in completes, never a second account."""
        now = store.now()
        _id = self.id_for(issuer, subject)
        self.coll.insert_one(
            {
                "_id": _id,
                "scope": self.scope,
                "app_id": self.slug,
                "issuer": issuer,
                "subject": subject,
                "provider": provider,
                "user_id": None,
                "reserved_at": now,
                **asserted,
            }
        )
        return _id

    def attach(self, identity: str, user_id: str) -> dict[str, Any] | None:
        """Give a reserved identity its user (only if it has none)."""
        return self.coll.find_one_and_update(
            {"_id": identity, "user_id": None},
            {"$set": {"user_id": user_id, "linked_at": store.now()}, "$unset": {"reserved_at": ""}},
            return_document=ReturnDocument.AFTER,
        )

    def link(
        self, issuer: str, subject: str, provider: str, user_id: str, asserted: dict[str, Any]
    ) -> dict[str, Any]:
        """Link the identity to ``user_id`` (``DuplicateKeyError`` when it is linked)."""
        now = store.now()
        doc = {
            "_id": self.id_for(issuer, subject),
            "scope": self.scope,
            "app_id": self.slug,
            "issuer": issuer,
            "subject": subject,
            "provider": provider,
            "user_id": user_id,
            "linked_at": now,
            **asserted,
        }
        self.coll.insert_one(doc)
        return doc

    def seen(self, identity: str, asserted: dict[str, Any]) -> None:
        """Record a sign-in and what the provider asserted this time."""
        self.coll.update_one(
            {"_id": identity}, {"$set": {**asserted, "last_login_at": store.now()}}
        )

    def mark_unlinking(self, identity: str, user_id: str) -> bool:
        result = self.coll.update_one(
            {"_id": identity, "scope": self.scope, "user_id": user_id},
            {"$set": {"unlinking": True}},
        )
        return result.matched_count == 1

    def unmark(self, identity: str) -> None:
        self.coll.update_one({"_id": identity}, {"$unset": {"unlinking": ""}})

    def delete(self, identity: str, user_id: str) -> bool:
        result = self.coll.delete_one({"_id": identity, "scope": self.scope, "user_id": user_id})
        return result.deleted_count == 1


def public_identity(doc: dict[str, Any]) -> dict[str, Any]:
    """An identity as the user and the app see it."""
    return {
        "provider": doc.get("provider"),
        "issuer": doc.get("issuer"),
        "subject": doc.get("subject"),
        "email": doc.get("email"),
        "email_verified": bool(doc.get("email_verified")),
        "name": doc.get("name"),
        "linked_at": doc.get("linked_at"),
        "last_login_at": doc.get("last_login_at"),
    }
