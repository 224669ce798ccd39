"""Where users are stored: per app (``app_users``) or shared by apps (``global_users``).

``app_users`` keep each app's users in its own scoped ``users`` collection (unique on
``app_id`` + ``email``): a user of app A does not exist for app B. ``global_users`` keep
one account per email in the engine-internal ``mdb_auth_users`` collection, shared by the
apps that choose that strategy, with roles and an active flag *per app* under
``apps.<slug>``; an account joins an app (with the app's default roles) on its first login
there.

A user also records whether its email is *proven* (``email_verified_via``: by whom or what),
which owner access requires; in a shared store, a proof given by one app (its administrator,
its ``demo_users``) is kept with that app's membership and holds there only, while a proof
of the mailbox itself (a completed password reset, a platform administrator) holds for the
account everywhere.

Stores only read and write documents; hashing, password rules and revocation are the
:class:`~mdb_sync.auth.service.AuthService`'s business.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument

from ..exceptions import UserInputError
from ..scoping.names import physical_name, validate_collection_name
from . import store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine
    from ..scoping import ScopedCollection

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
MAX_EMAIL = 254
#: Fields a caller may not set through ``profile``: they carry identity or security state.
RESERVED_FIELDS = frozenset(
    {
        "_id", "app_id", "app_ids", "apps", "email", "password_hash", "roles", "active",
        "auth_version", "created_at", "updated_at", "password_changed_at", "last_login_at",
        "user_id", "app", "email_verified", "email_verified_via", "email_verified_at",
        "two_factor", "two_factor_enabled", "login_count", "last_login_ip", "current_login_at",
        "current_login_ip", "profile", "previous_email",
    }
)  # fmt: skip
#: Longest ``verified_via`` label (who or what proved a user's email).
MAX_VERIFIED_VIA = 64
_INTERNAL = ("password_hash", "app_id", "app_ids", "apps", "two_factor")
#: Login tracking fields, kept per app for a shared account.
_TRACKED = ("login_count", "last_login_at", "last_login_ip", "current_login_at", "current_login_ip")


def normalize_email(email: Any) -> str:
    """``email`` trimmed, NFKC-normalised and lower-cased; UserInputError if it is not
    an email address (a dict such as ``{"$ne": null}`` is refused here, never queried)."""
    if not isinstance(email, str):
        raise UserInputError("email must be a string")
    value = unicodedata.normalize("NFKC", email).strip().lower()
    if len(value) > MAX_EMAIL or not EMAIL_RE.fullmatch(value):
        raise UserInputError("email is not a valid address")
    return value


def parse_user_id(user_id: Any) -> ObjectId | None:
    if isinstance(user_id, ObjectId):
        return user_id
    try:
        return ObjectId(user_id) if isinstance(user_id, str) else None
    except InvalidId:
        return None


def check_profile(profile: dict[str, Any]) -> dict[str, Any]:
    for key in profile:
        if not isinstance(key, str) or key in RESERVED_FIELDS or key.startswith("$") or "." in key:
            raise UserInputError(f"profile field {str(key)[:64]!r} cannot be set")
    return profile


class AppUserStore:
    """Users in the app's own scoped collection."""

    kind = "app"

    def __init__(self, engine: MongoDBEngine, slug: str, collection: str = "users") -> None:
        self.engine = engine
        self.slug = slug
        self.collection = collection
        #: The physical collection of the app's own users (what a ``$lookup`` reads).
        self.source = physical_name(slug, validate_collection_name(collection))
        self.coll.create_index([("email", 1)], unique=True, name="email_unique")

    @property
    def coll(self) -> ScopedCollection | Collection[dict[str, Any]]:
        # Looked up on each use: after an engine restart or a fork, the engine's new client.
        return self.engine.get_scoped_db(self.slug, auto_index=False)[self.collection]

    def find_by_email(self, email: str) -> dict[str, Any] | None:
        return self.coll.find_one({"email": email})

    def get(self, user_id: Any) -> dict[str, Any] | None:
        oid = parse_user_id(user_id)
        return self.coll.find_one({"_id": oid}) if oid is not None else None

    def owns(self, doc: dict[str, Any]) -> bool:
        """Whether ``doc``, read from :attr:`source` without the scoped API (a ``$lookup``),
        is a user of this app: the scope a scoped read would have applied."""
        return doc.get("app_id") == self.slug

    def scope(self) -> dict[str, Any]:
        """The filter that restricts a read of :attr:`source` to this app's users."""
        return {"app_id": self.slug}

    def insert(self, doc: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        doc = {**doc, "roles": roles, "active": True}
        doc["_id"] = self.coll.insert_one(doc).inserted_id
        return doc

    def update(
        self, user_id: ObjectId, fields: dict[str, Any], *, bump_version: bool = False
    ) -> dict[str, Any] | None:
        update: dict[str, Any] = {"$set": fields}
        if bump_version:
            update["$inc"] = {"auth_version": 1}
        return self.coll.find_one_and_update(
            {"_id": user_id}, update, return_document=ReturnDocument.AFTER
        )

    def join(self, doc: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        return doc  # app users always belong to their app

    def app_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Per-app fields (``roles``, ``active``) as they are named in this store."""
        return fields

    def roles_of(self, doc: dict[str, Any]) -> list[str]:
        return list(doc.get("roles") or [])

    def verified_fields(self, via: str, *, account: bool = True) -> dict[str, Any]:
        """The fields that record a proof of the user's email (``via``: who or what
        proved it), for the account or (``account=False``) for this app only."""
        return {"email_verified_via": via, "email_verified_at": store.now()}

    def is_email_verified(self, doc: dict[str, Any]) -> bool:
        return bool(doc.get("email_verified_via"))

    def is_active(self, doc: dict[str, Any]) -> bool:
        return bool(doc.get("active", True))

    def is_member(self, doc: dict[str, Any]) -> bool:
        return True

    def list_docs(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self.coll.find({}, {"password_hash": 0}).sort("email", 1).limit(limit).to_list()


class GlobalUserStore(AppUserStore):
    """Users shared by the apps that use the ``global_users`` strategy."""

    kind = "global"

    def __init__(self, engine: MongoDBEngine, slug: str, collection: str = "users") -> None:
        self.engine = engine
        self.slug = slug
        self.collection = store.GLOBAL_USERS
        self.source = store.GLOBAL_USERS

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.GLOBAL_USERS)

    def owns(self, doc: dict[str, Any]) -> bool:
        return True  # one account per email, shared: membership is is_member's business

    def scope(self) -> dict[str, Any]:
        return {}

    def insert(self, doc: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        doc = {
            **doc,
            "active": True,
            "app_ids": [self.slug],
            "apps": {self.slug: {"roles": roles, "active": True, "joined_at": store.now()}},
        }
        doc["_id"] = self.coll.insert_one(doc).inserted_id
        return doc

    def join(self, doc: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        if self.is_member(doc):
            return doc
        updated = self.coll.find_one_and_update(
            {"_id": doc["_id"], f"apps.{self.slug}": {"$exists": False}},
            {
                "$set": {
                    f"apps.{self.slug}": {"roles": roles, "active": True, "joined_at": store.now()}
                },
                "$addToSet": {"app_ids": self.slug},
            },
            return_document=ReturnDocument.AFTER,
        )
        return updated or self.coll.find_one({"_id": doc["_id"]}) or doc

    def app_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in fields.items():
            out[f"apps.{self.slug}.{key}" if key in ("roles", "active") else key] = value
        return out

    def roles_of(self, doc: dict[str, Any]) -> list[str]:
        return list(((doc.get("apps") or {}).get(self.slug) or {}).get("roles") or [])

    def verified_fields(self, via: str, *, account: bool = True) -> dict[str, Any]:
        # Another app's administrator may not vouch for an email here: an app's own proof
        # (its administrator, its demo_users) is kept with its membership.
        fields = super().verified_fields(via)
        if account:
            return fields
        return {f"apps.{self.slug}.{key}": value for key, value in fields.items()}

    def is_email_verified(self, doc: dict[str, Any]) -> bool:
        membership = (doc.get("apps") or {}).get(self.slug) or {}
        return super().is_email_verified(doc) or bool(membership.get("email_verified_via"))

    def is_active(self, doc: dict[str, Any]) -> bool:
        membership = (doc.get("apps") or {}).get(self.slug) or {}
        return bool(doc.get("active", True)) and bool(membership.get("active", True))

    def is_member(self, doc: dict[str, Any]) -> bool:
        return self.slug in (doc.get("apps") or {})

    def list_docs(self, limit: int = 1000) -> list[dict[str, Any]]:
        return list(
            self.coll.find({"app_ids": self.slug}, {"password_hash": 0})
            .sort("email", 1)
            .limit(limit)
        )


def public_view(user_store: AppUserStore, doc: dict[str, Any]) -> dict[str, Any]:
    """The user as callers see it: no password hash, roles and status for this app, and
    timezone-aware (UTC) datetimes."""
    out: dict[str, Any] = store.aware_values({k: v for k, v in doc.items() if k not in _INTERNAL})
    out["user_id"] = str(doc["_id"])
    out["roles"] = user_store.roles_of(doc)
    out["active"] = user_store.is_active(doc)
    out["email_verified"] = user_store.is_email_verified(doc)
    out["app"] = user_store.slug
    out["two_factor_enabled"] = bool((doc.get("two_factor") or {}).get("enabled"))
    if user_store.kind == "global":  # the app's own view: its tracking, its profile fields
        membership = (doc.get("apps") or {}).get(user_store.slug) or {}
        for key in _TRACKED:
            out.pop(key, None)
            if key in membership:
                out[key] = membership[key]
        if membership.get("profile"):
            out["profile"] = dict(membership["profile"])
    out.setdefault("auth_version", 0)
    return out
