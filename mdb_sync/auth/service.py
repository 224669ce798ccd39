"""``AuthService``: one app's users, sessions, tokens, authorization and rate limits.

Framework-free, so scripts, notebooks and Celery workers use the same rules as the web app::

    from mdb_sync.auth import get_auth_service

    auth = get_auth_service(engine, "my_app")          # secret from $MDB_JWT_SECRET
    user = auth.register_user("ada@example.com", "correct horse battery")
    user = auth.authenticate("ada@example.com", "correct horse battery")
    tokens = auth.issue_tokens(user)                    # access + refresh
    auth.is_allowed(user, "reports", "read")            # casbin, from the manifest

Everything comes from the app's registered manifest (``auth``, ``token_management``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from pymongo.errors import DuplicateKeyError

from ..exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    TokenError,
    UserExistsError,
    UserInputError,
)
from . import revocation, signals, store
from .anonymous import AnonymousIdentities, UpgradeHook
from .config import AuthConfig, inert_settings
from .extras import casbin_request, casbin_unavailable, missing_casbin_modules
from .keys import NoKeys, resolve_keyset
from .lockout import AccountLockout, Reservation
from .passwords import PasswordHasher
from .platform import HandOffs
from .provider import AuthorizationProvider, CasbinProvider, OsoProvider
from .ratelimit import RateLimiter
from .resets import ResetTokens
from .sessions import SessionStore
from .tokens import TokenManager
from .twofactor import SecondFactor
from .users import (
    MAX_VERIFIED_VIA,
    AppUserStore,
    GlobalUserStore,
    check_profile,
    normalize_email,
    parse_user_id,
    public_view,
)
from .verification import EmailLinks

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger("mdb_sync.auth")

#: The one message for every failed login: unknown email, wrong password, inactive user.
INVALID_CREDENTIALS = "invalid email or password"
#: Reset links one account may get: (count, window in seconds).
RESET_LINKS_PER_EMAIL = (3, 3600)
#: The one message for every unusable reset token: unknown, expired, spent, voided.
INVALID_RESET = "this password-reset link is invalid or has expired"
#: Why a correct password does not sign in (``require_verification`` with ``refuse``).
UNVERIFIED = "this account's e-mail address is not verified yet: follow the link we sent"


class EmailNotVerified(AuthenticationError):
    """The password is right but the account's e-mail address is not verified yet, and the
    app refuses such sign-ins (``auth.users.require_verification.unverified: "refuse"``)."""


#: Fields of login tracking (Flask-Security's "trackable").
TRACKING = ("login_count", "last_login_at", "last_login_ip", "current_login_at", "current_login_ip")
#: The environment variable of the key that encrypts TOTP secrets (outside Flask).
TWO_FACTOR_ENV = "MDB_TWO_FACTOR_KEY"
#: Longest client address recorded.
MAX_IP = 64
#: Why an app's administration may not change a ``global_users`` account itself.
SHARED_ACCOUNT = (
    "{email} is a global_users account shared by several apps: an app's administration acts "
    "on its membership of the app (roles, active flag, sessions); {what} only through the "
    "account's own flows or a platform administrator (platform_admin=True, the mdb CLI)"
)


class AuthService:
    """The auth of app ``slug`` as its manifest configures it.

    :param secret: the HMAC secret of its tokens (else ``auth.jwt.secret_env``'s variable,
        else ``$MDB_JWT_SECRET``); required when the app enables ``token_management``.
    :param private_key: PEM (or path) for RS*/ES*/EdDSA; ``public_keys`` {kid: PEM} of
        older keys that may still verify; ``key_id`` names the current one.
    :param provider: an :class:`AuthorizationProvider` to use instead of the manifest's.
    :param hasher: a :class:`PasswordHasher` (its cost), default scrypt n=2**15.
    :param signing: False to administer users, roles and revocations without the token keys
        (issuing or verifying a token then raises :class:`ConfigurationError`).
    :param two_factor_key: the secret TOTP secrets are encrypted with (``auth.users.two_factor``;
        else ``$MDB_TWO_FACTOR_KEY``).
    """

    def __init__(
        self,
        engine: MongoDBEngine,
        slug: str,
        *,
        secret: Any = None,
        secret_fallbacks: tuple[Any, ...] = (),
        private_key: Any = None,
        public_keys: Mapping[str, Any] | None = None,
        key_id: str | None = None,
        secret_option: str = "secret=",
        provider: AuthorizationProvider | None = None,
        hasher: PasswordHasher | None = None,
        policy_reload_interval: float = 5.0,
        seed: bool = True,
        signing: bool = True,
        two_factor_key: Any = None,
    ) -> None:
        engine.require_initialized()
        record = engine.registry.require_usable(slug)
        self.engine = engine
        self.slug = slug
        manifest = record.get("manifest") or {"slug": slug}
        self.config = AuthConfig.from_manifest(manifest)
        for setting in inert_settings(manifest):
            log.warning("app %r: the manifest setting %s has no effect", slug, setting)
        self.hasher = hasher or PasswordHasher()
        self.limiter = RateLimiter(engine)
        self.policy_reload_interval = policy_reload_interval
        self._provider = provider
        self._provider_lock = threading.Lock()
        # pycasbin missing where the casbin provider would be built: an app whose manifest
        # asks for casbin is refused now, not at its first sign-up; any other runs on the
        # roles stored with its users (see extras.casbin_request).
        self._casbin_missing = (
            missing_casbin_modules()
            if provider is None and self.config.provider == "casbin"
            else []
        )
        casbin_path = casbin_request(self.config)
        if self._casbin_missing and casbin_path is not None:
            raise casbin_unavailable(slug, casbin_path, self._casbin_missing)
        self._audit_indexed = False
        cfg = self.config
        self.users: AppUserStore | None = None
        self.sessions: SessionStore | None = None
        shared = cfg.users_enabled and cfg.strategy == "global_users"
        self.lockout = (
            AccountLockout(engine, slug, cfg.lockout, shared=shared) if cfg.lockout else None
        )
        self.resets: ResetTokens | None = None
        if cfg.users_enabled:
            store_cls = GlobalUserStore if cfg.strategy == "global_users" else AppUserStore
            self.users = store_cls(engine, slug, cfg.users_collection)
            if cfg.password_reset_ttl is not None:
                self.resets = ResetTokens(engine, slug, cfg.password_reset_ttl)
            self.sessions = SessionStore(
                engine,
                slug,
                ttl=cfg.session_ttl,
                inactivity_timeout=cfg.session_inactivity_timeout,
                max_per_user=cfg.max_sessions_per_user,
            )
        self.tokens: TokenManager | None = None
        if cfg.tokens_enabled:
            keys: Any = NoKeys(slug)
            if signing:
                keys = resolve_keyset(
                    slug,
                    cfg.algorithm,
                    secret=secret,
                    secret_fallbacks=secret_fallbacks,
                    secret_env=cfg.secret_env,
                    private_key=private_key,
                    public_keys=public_keys,
                    key_id=key_id,
                    secret_option=secret_option,
                )
            self.tokens = TokenManager(
                engine,
                slug,
                keys,
                issuer=cfg.issuer,
                audience=cfg.audience,
                access_ttl=cfg.access_ttl,
                refresh_ttl=cfg.refresh_ttl,
                rotation=cfg.token_rotation,
                leeway=cfg.leeway,
                max_families_per_user=cfg.max_sessions_per_user,
            )
        #: Platform sign-on hand-offs (``auth.mode: "shared"``), else None.
        self.handoffs = HandOffs(self) if cfg.shared and self.users is not None else None
        #: Anonymous identities (``auth.policy.allow_anonymous``), else None.
        self.anonymous = (
            AnonymousIdentities(engine, slug, cfg.anonymous_ttl)
            if cfg.anonymous_identities
            else None
        )
        #: Verification and change-of-address links (``require_verification``), else None.
        self.email_links = (
            EmailLinks(self, cfg.verification.token_ttl) if cfg.verification is not None else None
        )
        #: The TOTP second factor (``auth.users.two_factor``), else None.
        self.second_factor = (
            SecondFactor(self, cfg.two_factor, two_factor_key or os.environ.get(TWO_FACTOR_ENV))
            if cfg.two_factor is not None and self.users is not None
            else None
        )
        if cfg.provider == "custom" and provider is None and cfg.policy_present:
            raise ConfigurationError(
                f"auth.policy.provider of {slug!r} is 'custom': pass provider= (flask_mdb: "
                "MDB_AUTH_PROVIDER)",
                context={"app": slug, "path": "auth.policy.provider"},
            )
        if seed:
            if cfg.policy_present and (cfg.initial_policies or cfg.initial_roles):
                authz = self.authz
                if isinstance(authz, CasbinProvider):
                    authz.seed(cfg.initial_policies, cfg.initial_roles)
            self._seed_demo_users()

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def authz(self) -> AuthorizationProvider:
        """The app's authorization provider (built on first use)."""
        if self._provider is None:
            with self._provider_lock:
                if self._provider is None:
                    self._provider = self._build_provider()
        return self._provider

    def _build_provider(self) -> AuthorizationProvider:
        cfg = self.config
        if cfg.provider == "oso":
            return OsoProvider(policy_file=cfg.model if cfg.model not in ("rbac", "acl") else None)
        if cfg.provider == "custom":
            raise ConfigurationError(f"app {self.slug!r} has no custom provider set")
        if self._casbin_missing:  # a permission check in code, on an app without casbin rules
            raise casbin_unavailable(
                self.slug,
                "auth.policy.provider",
                self._casbin_missing,
                remedy="set auth.policy.provider to another provider",
            )
        return CasbinProvider(
            self.engine,
            self.slug,
            model=cfg.model,
            collection=cfg.policies_collection,
            reload_interval=self.policy_reload_interval,
        )

    def require_users(self) -> AppUserStore:
        """The app's user store, or :class:`ConfigurationError` (no ``auth.users``)."""
        return self._require_users()

    def _require_users(self) -> AppUserStore:
        if self.users is None:
            raise ConfigurationError(
                f"app {self.slug!r} has no users: set auth.users.enabled in its manifest",
                context={"app": self.slug, "path": "auth.users.enabled"},
            )
        return self.users

    def _require_tokens(self) -> TokenManager:
        if self.tokens is None:
            raise ConfigurationError(
                f"app {self.slug!r} does not issue tokens: add token_management to its manifest",
                context={"app": self.slug, "path": "token_management"},
            )
        return self.tokens

    def _seed_demo_users(self) -> None:
        """Create the manifest's ``demo_users`` that do not exist yet. The registry keeps
        only their password hashes (hashed at registration); a clear password still found
        in an older record is hashed here. Their email counts as proven for this app only
        (the manifest's author vouches for it, as an administrator would)."""
        if self.users is None:
            return
        for demo in self.config.demo_users:
            stored, clear = demo.get("password_hash"), demo.get("password")
            if not stored and not clear:
                log.warning(
                    "app %r: demo user %r has no password; not created", self.slug, demo["email"]
                )
                continue
            email = normalize_email(demo["email"])
            if self.users.find_by_email(email) is not None:
                continue
            roles = list(demo.get("roles") or [demo.get("role", "user")])
            try:
                if not stored:
                    self.check_password(clear, email)
                    stored = self.hasher.hash(str(clear))
                self._create_user(
                    email,
                    stored,
                    self._check_roles(roles),
                    check_profile(dict(demo.get("extra_data") or {})),
                    verified_via="demo_users",
                )
            except UserExistsError:
                continue
            except UserInputError as exc:
                raise ConfigurationError(
                    f"auth.users.demo_users of {self.slug!r}: {email}: {exc}",
                    context={"app": self.slug, "path": "auth.users.demo_users"},
                ) from exc

    def audit(self, event: str, **fields: Any) -> None:
        """Record ``event`` in the app's audit collection when ``auth.audit`` is on."""
        cfg = self.config
        if cfg.audit_collection is None or (cfg.audit_events and event not in cfg.audit_events):
            return
        coll = self.engine.get_scoped_db(self.slug, auto_index=False)[cfg.audit_collection]
        try:
            if not self._audit_indexed:  # events expire after auth.audit.retention_days
                coll.create_index(
                    "at", name="retention", expireAfterSeconds=cfg.audit_retention_days * 86_400
                )
                self._audit_indexed = True
            coll.insert_one({"event": event, "at": store.now(), **fields})
        except Exception:  # auditing never breaks a login
            log.warning(
                "app %r: could not write the audit event %r", self.slug, event, exc_info=True
            )

    # --- users --------------------------------------------------------------------------------

    def _check_roles(self, roles: Any) -> list[str]:
        if isinstance(roles, str) or not isinstance(roles, Iterable):
            raise UserInputError("roles must be a list of strings")
        out = []
        for role in roles:
            if not isinstance(role, str) or not role or len(role) > 128:
                raise UserInputError("roles must be non-empty strings")
            if self.config.roles and role not in self.config.roles:
                raise UserInputError(
                    f"unknown role {role!r} (auth.roles: {', '.join(self.config.roles)})"
                )
            out.append(role)
        return list(dict.fromkeys(out))

    def check_password(self, password: Any, email: str | None = None) -> None:
        problems = self.config.password_policy.problems(password, email)
        if problems:
            raise UserInputError("; ".join(problems))

    def register_user(
        self, email: Any, password: Any, *, roles: Iterable[str] | None = None, **profile: Any
    ) -> dict[str, Any]:
        """Create a user with ``roles`` (default: the manifest's ``default_roles``).

        Raises UserInputError (bad email, weak password, unknown role, reserved profile
        field) or UserExistsError.

        A registration (the ``/auth/register`` form's) proves nothing about the email: the
        user does not count as the app's owner (``developer_id``) until the email is proven
        (:meth:`create_user`, :meth:`mark_email_verified`, or a completed password reset).
        """
        self._require_users()
        email = normalize_email(email)
        self.check_password(password, email)
        roles = self._check_roles(self.config.default_roles if roles is None else roles)
        check_profile(profile)
        return self._create_user(email, self.hasher.hash(password), roles, profile)

    def create_user(
        self,
        email: Any,
        password: Any,
        *,
        roles: Iterable[str] | None = None,
        verified_via: str = "admin",
        platform_admin: bool = False,
        **profile: Any,
    ) -> dict[str, Any]:
        """Create a user as an administrator does: like :meth:`register_user`, and the
        email counts as proven (``verified_via`` says by whom: ``"admin"``, ``"cli"``, ...),
        so this user may be the app's owner. For a ``global_users`` account the proof holds
        in this app only, unless ``platform_admin`` (the mdb CLI, a platform tool) vouches
        for the account itself."""
        self._require_users()
        email = normalize_email(email)
        via = self._check_via(verified_via)
        self.check_password(password, email)
        roles = self._check_roles(self.config.default_roles if roles is None else roles)
        check_profile(profile)
        return self._create_user(
            email, self.hasher.hash(password), roles, profile, verified_via=via,
            platform_admin=platform_admin,
        )  # fmt: skip

    @staticmethod
    def _check_via(via: Any) -> str:
        if not isinstance(via, str) or not via or len(via) > MAX_VERIFIED_VIA:
            raise UserInputError(f"verified_via must be a label of 1-{MAX_VERIFIED_VIA} chars")
        return via

    def _create_user(
        self,
        email: str,
        password_hash: str,
        roles: list[str],
        profile: dict[str, Any],
        *,
        verified_via: str | None = None,
        platform_admin: bool = False,
    ) -> dict[str, Any]:
        users = self._require_users()
        now = store.now()
        doc = {
            **profile,
            "email": email,
            "password_hash": password_hash,
            "auth_version": 0,
            "created_at": now,
            "updated_at": now,
            "password_changed_at": now,
        }
        try:
            if isinstance(users, GlobalUserStore) and users.find_by_email(email) is not None:
                raise DuplicateKeyError("email")
            created = users.insert(doc, roles)
        except DuplicateKeyError as exc:
            raise UserExistsError(
                "an account with this email already exists", context={"app": self.slug}
            ) from exc
        if verified_via is not None:
            fields = users.verified_fields(verified_via, account=platform_admin)
            created = users.update(created["_id"], fields) or created
        user = public_view(users, created)
        self._link_roles(user)
        signals.user_registered.send(self.engine, slug=self.slug, user=user)
        self.audit("register", user_id=user["user_id"])
        return user

    def mark_email_verified(
        self, user_id: Any, *, via: str = "admin", platform_admin: bool = False
    ) -> dict[str, Any]:
        """Record that the user's email is proven (an administrator checked it), so the
        user may be the app's owner. For a ``global_users`` account: in this app only,
        unless ``platform_admin``."""
        users = self._require_users()
        doc = self._doc(user_id)
        fields = users.verified_fields(self._check_via(via), account=platform_admin)
        updated = users.update(doc["_id"], fields)
        assert updated is not None
        self.audit("email_verified", user_id=str(doc["_id"]))
        return public_view(users, updated)

    def _links_roles(self) -> bool:
        """Whether users' roles are mirrored into casbin (``link_users_roles``): not without
        pycasbin, in an app that does not ask for casbin (it would have been refused)."""
        cfg = self.config
        return cfg.link_users_roles and cfg.provider == "casbin" and not self._casbin_missing

    def _link_roles(self, user: dict[str, Any]) -> None:
        if self._links_roles():
            authz = self.authz
            if isinstance(authz, CasbinProvider):
                authz.set_roles(user["email"], user["roles"])

    def authenticate(self, email: Any, password: Any) -> dict[str, Any]:
        """The user with this email and password, or AuthenticationError with one message
        for every failure, after the same amount of work (no user enumeration).

        With ``account_lockout``, each password check is reserved before it runs: an email
        that is locked, or whose checks for the window are all taken by requests in flight,
        is refused with :class:`~mdb_sync.exceptions.RateLimitExceeded` (``retry_after``)
        before its password is even checked — the same for every email, existing or not —
        and a correct password is refused too if a lock was set while it was checked."""
        users = self._require_users()
        try:
            normalized = normalize_email(email)
        except UserInputError:
            normalized = None
        reservation = self._reserve_check(normalized)
        doc = users.find_by_email(normalized) if normalized else None
        if doc is None or not isinstance(password, str):
            self.hasher.dummy_verify(password)
            return self._failed(reservation)
        ok = self.hasher.verify_evenly(password, doc.get("password_hash"))
        if not ok:
            return self._failed(reservation)
        self._settle_success(reservation)
        if not bool(doc.get("active", True)):
            return self._failed()
        if not users.is_member(doc):
            doc = users.join(doc, list(self.config.default_roles))
            self._link_roles(public_view(users, doc))
        if not users.is_active(doc):
            return self._failed()
        if self.hasher.needs_rehash(doc.get("password_hash")):
            users.update(doc["_id"], {"password_hash": self.hasher.hash(password)})
        user = public_view(users, doc)
        if self.refuses_unverified(user):
            self.audit("login_unverified", user_id=user["user_id"])
            raise EmailNotVerified(UNVERIFIED, context={"app": self.slug, "reason": "unverified"})
        signals.user_authenticated.send(self.engine, slug=self.slug, user=user)
        self.audit("login", user_id=user["user_id"])
        return user

    def _reserve_check(self, email: str | None) -> Reservation | None:
        """Reserve one password check of ``email`` with the account lockout (raises
        RateLimitExceeded when there is none left), or None without a lockout."""
        if self.lockout is None or not email:
            return None
        return self.lockout.reserve(email)

    def _settle_success(self, reservation: Reservation | None) -> None:
        if reservation is not None and self.lockout is not None:
            self.lockout.succeeded(reservation)

    def _settle_failure(self, reservation: Reservation | None) -> None:
        if reservation is None or self.lockout is None:
            return
        if self.lockout.failed(reservation):
            log.warning("app %r: an account was locked after repeated failed sign-ins", self.slug)
            self.audit("account_locked")

    def _failed(self, reservation: Reservation | None = None) -> NoReturn:
        """Refuse a login; a wrong password (or an unknown email) counts towards the email's
        lockout, whether or not an account has it."""
        self._settle_failure(reservation)
        signals.login_failed.send(self.engine, slug=self.slug, reason="invalid credentials")
        self.audit("login_failed")
        raise AuthenticationError(INVALID_CREDENTIALS, context={"app": self.slug})

    def unlock_account(self, email: Any, *, platform_admin: bool = False) -> None:
        """Lift ``account_lockout``'s lock on ``email`` and forget its failed sign-ins. The
        lock of a ``global_users`` account guards it in every app: only a platform
        administrator (``platform_admin``, the mdb CLI) lifts it (or the account's own
        password reset)."""
        normalized = normalize_email(email)
        if self.lockout is not None:
            if self.lockout.shared and not platform_admin:
                raise AuthorizationError(
                    SHARED_ACCOUNT.format(email=normalized, what="its lockout is lifted"),
                    context={"app": self.slug},
                )
            self.lockout.unlock(normalized)

    def get_user(self, user_id: Any) -> dict[str, Any] | None:
        """The user (public view) of this app with ``user_id``, or None."""
        users = self._require_users()
        doc = users.get(user_id)
        if doc is None or not users.is_member(doc):
            return None
        return public_view(users, doc)

    def get_user_by_email(self, email: Any) -> dict[str, Any] | None:
        users = self._require_users()
        doc = users.find_by_email(normalize_email(email))
        return public_view(users, doc) if doc is not None and users.is_member(doc) else None

    def list_users(self, limit: int = 1000) -> list[dict[str, Any]]:
        users = self._require_users()
        return [public_view(users, d) for d in users.list_docs(limit)]

    def _doc(self, user_id: Any) -> dict[str, Any]:
        users = self._require_users()
        oid = parse_user_id(user_id if not isinstance(user_id, Mapping) else user_id.get("_id"))
        doc = users.get(oid) if oid is not None else None
        if doc is None or not users.is_member(doc):
            raise UserInputError("no such user", context={"app": self.slug})
        return doc

    def user_document(self, user_id: Any) -> dict[str, Any]:
        """The stored document of a user of this app (with its secrets: never hand it out),
        or :class:`UserInputError`."""
        return self._doc(user_id)

    # --- e-mail verification ---------------------------------------------------------------------

    def refuses_unverified(self, user: Mapping[str, Any]) -> bool:
        """Whether ``user`` may not sign in yet: ``require_verification`` with ``refuse``
        and the address is not proven."""
        verify = self.config.verification
        return bool(verify and verify.unverified == "refuse" and not user.get("email_verified"))

    def read_only(self, user: Mapping[str, Any]) -> bool:
        """Whether ``user`` may only read (``require_verification`` with ``read_only`` and
        the address not proven yet)."""
        verify = self.config.verification
        return bool(verify and verify.unverified == "read_only" and not user.get("email_verified"))

    def _require_links(self) -> EmailLinks:
        if self.email_links is None:
            raise ConfigurationError(
                f"app {self.slug!r} does not enable auth.users.require_verification",
                context={"app": self.slug, "path": "auth.users.require_verification"},
            )
        return self.email_links

    def request_verification(self, email: Any) -> tuple[dict[str, Any], str] | None:
        """A verification link's token for the account with ``email`` (deliver it to that
        address only), or None — answer the same either way."""
        return self._require_links().request(email)

    def request_email_change(
        self, user_id: Any, new_email: Any
    ) -> tuple[dict[str, Any], str] | None:
        """Start changing a user's address: ``(user, token)`` — the token goes to the new
        address (``user["email"]``), a notice without it to ``user["previous_email"]``."""
        return self._require_links().request_change(user_id, new_email)

    def confirm_email(self, token: Any) -> tuple[dict[str, Any], str]:
        """Follow a verification or change-of-address link: ``(user, "verify"|"change")``."""
        return self._require_links().confirm(token)

    def email_changed(self, old_email: str, user: dict[str, Any]) -> None:
        """The user's address changed: casbin's rules name users by address."""
        if self._links_roles():
            authz = self.authz
            if isinstance(authz, CasbinProvider):
                authz.set_roles(old_email, [])
        self._link_roles(user)
        signals.email_changed.send(self.engine, slug=self.slug, user=user, old_email=old_email)

    # --- login tracking, re-authentication, app profiles ------------------------------------------

    def record_login(self, user: Mapping[str, Any], ip: str | None = None) -> dict[str, Any]:
        """Count a completed sign-in of ``user`` (password and second factor, a provider, a
        platform hand-off) from ``ip``: ``login_count``, ``current_login_at``/``_ip`` (now)
        and ``last_login_at``/``_ip`` (the previous sign-in's) — per app for a shared
        account. One atomic update; returns the tracking fields."""
        users = self._require_users()
        oid = parse_user_id(user.get("user_id"))
        if oid is None:
            return {}
        p = f"apps.{self.slug}." if isinstance(users, GlobalUserStore) else ""
        address = (ip or "")[:MAX_IP] or None
        now = store.now()
        tracked = {
            f"{p}last_login_at": {"$ifNull": [f"${p}current_login_at", now]},
            f"{p}last_login_ip": {"$ifNull": [f"${p}current_login_ip", address]},
            f"{p}current_login_at": now,
            f"{p}current_login_ip": address,
            f"{p}login_count": {"$add": [{"$ifNull": [f"${p}login_count", 0]}, 1]},
        }
        doc = users.coll.find_one_and_update(
            {"_id": oid}, [{"$set": tracked}], return_document=True
        )
        return tracking_of(users, doc or {})

    def reauthenticate(self, session_key: str, user_id: Any, password: Any) -> None:
        """The signed-in user of the session stored as ``session_key`` proves who they are
        again: the password (it counts towards the account lockout, like a sign-in), after
        which ``fresh_login_required`` views accept the session for
        ``auth.users.fresh_login_seconds``. :class:`AuthenticationError` when wrong."""
        doc = self._doc(user_id)
        reservation = self._reserve_check(doc.get("email"))
        if not isinstance(password, str) or not self.hasher.verify(
            password, doc.get("password_hash")
        ):
            self._settle_failure(reservation)
            raise AuthenticationError("the password is wrong", context={"app": self.slug})
        self._settle_success(reservation)
        if self.sessions is None or self.sessions.reauthenticated(session_key) is None:
            raise AuthenticationError("the session has ended", context={"app": self.slug})
        self.audit("reauthenticated", user_id=str(doc["_id"]))

    def set_app_profile(self, user_id: Any, **fields: Any) -> dict[str, Any]:
        """Set profile fields of the user *in this app* (``None`` removes one). With
        ``global_users`` they live with the app's membership (``apps.<slug>.profile``) —
        the hybrid of a platform identity and an app's own fields — and other apps never see
        them; with ``app_users`` under ``profile`` of the app's own user."""
        users = self._require_users()
        doc = self._doc(user_id)
        check_profile(fields)
        base = f"apps.{self.slug}.profile" if isinstance(users, GlobalUserStore) else "profile"
        update: dict[str, Any] = {}
        for key, value in fields.items():
            update.setdefault("$unset" if value is None else "$set", {})[f"{base}.{key}"] = value
        if update:
            users.coll.update_one({"_id": doc["_id"]}, update)
        return public_view(users, users.get(doc["_id"]) or doc)

    # --- anonymous identities ------------------------------------------------------------------

    def upgrade_anonymous(
        self, token: Any, user: Mapping[str, Any], hook: UpgradeHook | None = None
    ) -> str | None:
        """Upgrade the anonymous identity of ``token`` to ``user``: ``hook(anonymous_id, user)``
        carries over what the app chooses, then the identity ends. The anonymous id, or None
        when there was none to upgrade."""
        if self.anonymous is None:
            return None
        carried = self.anonymous.upgrade(token, user, hook)
        if carried is not None:
            signals.anonymous_upgraded.send(
                self.engine, slug=self.slug, anonymous_id=carried, user=dict(user)
            )
            self.audit("anonymous_upgraded", user_id=str(user["user_id"]))
        return carried

    def _revoke_everything(self, doc: dict[str, Any]) -> None:
        """End the user's sessions and refuse their tokens (new ``auth_version``)."""
        user_id = str(doc["_id"])
        shared = isinstance(self.users, GlobalUserStore)
        if self.sessions is not None:
            self.sessions.delete_for_user(user_id, all_apps=shared)
        if self.tokens is not None:
            self.tokens.revoke_user(user_id, int(doc.get("auth_version", 0)))
        else:
            store.collection(self.engine, store.DENYLIST).update_one(
                {"_id": f"user:{user_id}"},
                {
                    "$max": {
                        "min_version": int(doc.get("auth_version", 0)),
                        "expires_at": store.now() + dt.timedelta(days=400),
                    },
                    "$setOnInsert": {"app_id": self.slug},
                },
                upsert=True,
            )
        apps = (doc.get("app_ids") or [self.slug]) if shared else [self.slug]
        revocation.user_revoked(self.engine, apps, user_id, int(doc.get("auth_version", 0)))

    def logout_everywhere(self, user_id: Any, *, every_app: bool = False) -> dict[str, Any]:
        """Sign the user out of every browser and client: the user's ``auth_version`` moves
        on (the revocable part of every credential issued so far), so every session —
        Flask-Login's remember cookies included — and every token of the user ends, in
        every process, and their websockets close. Returns the user.

        A ``global_users`` account's logins end in this app only — its sessions and refresh
        tokens here (access tokens run out by their short TTL) — unless ``every_app``: the
        account holder's own act (``flask_mdb.auth.logout_user(everywhere=True)``) or a
        platform administrator's ends them in every app that shares it."""
        users = self._require_users()
        doc = self._doc(user_id)
        if isinstance(users, GlobalUserStore) and not every_app:
            self._revoke_membership(doc)
        else:
            updated = users.update(doc["_id"], {"updated_at": store.now()}, bump_version=True)
            assert updated is not None
            self._revoke_everything(updated)
            doc = updated
        self.audit("logout_everywhere", user_id=str(doc["_id"]))
        return public_view(users, doc)

    def _shared_account(self, doc: Mapping[str, Any], platform_admin: bool, what: str) -> None:
        """Refuse an app's administration a change to a ``global_users`` account itself."""
        if isinstance(self.users, GlobalUserStore) and not platform_admin:
            raise AuthorizationError(
                SHARED_ACCOUNT.format(email=doc.get("email"), what=what),
                context={"app": self.slug},
            )

    def set_password(
        self, user_id: Any, new_password: Any, *, platform_admin: bool = False
    ) -> dict[str, Any]:
        """Set a new password (an admin reset): every session and token of the user ends.

        A ``global_users`` account's password opens every app sharing it, so one app's
        administration may not set it: :class:`AuthorizationError` unless
        ``platform_admin`` (the mdb CLI, a platform tool)."""
        doc = self._doc(user_id)
        self._shared_account(doc, platform_admin, "its password changes")
        return self._store_password(doc, new_password)

    def _store_password(
        self, doc: dict[str, Any], new_password: Any, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        users = self._require_users()
        self.check_password(new_password, doc.get("email"))
        now = store.now()
        updated = users.update(
            doc["_id"],
            {
                "password_hash": self.hasher.hash(new_password),
                "password_changed_at": now,
                "updated_at": now,
                **(extra or {}),
            },
            bump_version=True,
        )
        assert updated is not None
        self._revoke_everything(updated)
        user = public_view(users, updated)
        signals.password_changed.send(self.engine, slug=self.slug, user=user)
        self.audit("password_changed", user_id=user["user_id"])
        return user

    def change_password(
        self, user_id: Any, current_password: Any, new_password: Any
    ) -> dict[str, Any]:
        """Change a password after checking the current one (AuthenticationError if wrong);
        every session and token of the user ends. Returns the updated user.

        The check of the current password counts towards the account lockout like a
        sign-in (a stolen session must not become a password oracle):
        :class:`~mdb_sync.exceptions.RateLimitExceeded` while the account is locked."""
        doc = self._doc(user_id)
        reservation = self._reserve_check(doc.get("email"))
        if not isinstance(current_password, str) or not self.hasher.verify(
            current_password, doc.get("password_hash")
        ):
            self._settle_failure(reservation)
            raise AuthenticationError("the current password is wrong", context={"app": self.slug})
        self._settle_success(reservation)
        return self._store_password(doc, new_password)

    def request_password_reset(self, email: Any) -> tuple[dict[str, Any], str] | None:
        """Start a "forgot password" for ``email``: ``(user, token)`` — a single-use token
        (valid ``auth.users.password_reset.token_ttl_seconds``), also sent with the
        ``password_reset_requested`` signal — or None when no active account has this email.
        Callers must answer the same either way (no user enumeration) and deliver the token
        only to the account's email. At most :data:`RESET_LINKS_PER_EMAIL` links per account
        and hour: beyond, None too (nobody can flood a mailbox)."""
        resets = self._require_resets()
        try:
            normalized = normalize_email(email)
        except UserInputError:
            return None
        users = self._require_users()
        doc = users.find_by_email(normalized)
        if doc is None or not users.is_member(doc) or not users.is_active(doc):
            return None
        # However many addresses ask, one mailbox gets a bounded number of links.
        max_links, window = RESET_LINKS_PER_EMAIL
        if not self.limiter.hit(self.slug, "reset_email", normalized, max_links, window).allowed:
            log.warning("app %r: reset links for one account are over the limit", self.slug)
            return None
        token = resets.issue(str(doc["_id"]), int(doc.get("auth_version", 0)))
        user = public_view(users, doc)
        signals.password_reset_requested.send(self.engine, slug=self.slug, user=user, token=token)
        self.audit("password_reset_requested", user_id=user["user_id"])
        return user, token

    def reset_password(self, token: Any, new_password: Any) -> dict[str, Any]:
        """Set a new password with a reset token; every session and token of the user ends
        and an account lockout on the email is lifted. :class:`TokenError` for a token that
        is unknown, expired, spent or voided by a later password change;
        :class:`UserInputError` for a password the policy refuses (the token stays valid)."""
        resets = self._require_resets()
        record = resets.peek(token)
        users = self._require_users()
        doc = users.get(record["user_id"]) if record is not None else None
        if (
            record is None
            or doc is None
            or not users.is_member(doc)
            or not users.is_active(doc)
            or int(doc.get("auth_version", 0)) != int(record.get("auth_version", 0))
        ):
            raise TokenError(INVALID_RESET, context={"app": self.slug})
        self.check_password(new_password, doc.get("email"))
        if not resets.spend(token):
            raise TokenError(INVALID_RESET, context={"app": self.slug})
        # The link went to the account's email: following it proves that mailbox.
        proof = users.verified_fields("password_reset", account=True)
        user = self._store_password(doc, new_password, proof)
        if self.lockout is not None:
            self.lockout.unlock(user["email"])
        self.audit("password_reset", user_id=user["user_id"])
        return user

    def _require_resets(self) -> ResetTokens:
        if self.resets is None:
            raise ConfigurationError(
                f"app {self.slug!r} does not enable auth.users.password_reset",
                context={"app": self.slug},
            )
        return self.resets

    def deactivate(
        self, user_id: Any, *, everywhere: bool = False, platform_admin: bool = False
    ) -> None:
        """Disable a user in this app and end their sessions and tokens here.

        A ``global_users`` account stays usable in the other apps that share it (its
        membership of this app is disabled, this app's sessions and refresh tokens end);
        ``everywhere`` disables the account itself, in every app — a platform
        administrator's act (``platform_admin``)."""
        users = self._require_users()
        doc = self._doc(user_id)
        shared = isinstance(users, GlobalUserStore)
        if everywhere:
            self._shared_account(doc, platform_admin, "it is disabled in every app")
        if shared and not everywhere:
            fields = users.app_fields({"active": False})
            updated = users.update(doc["_id"], {**fields, "updated_at": store.now()})
            assert updated is not None
            self._revoke_membership(updated)
        else:
            fields = {"active": False} if everywhere else users.app_fields({"active": False})
            updated = users.update(
                doc["_id"], {**fields, "updated_at": store.now()}, bump_version=True
            )
            assert updated is not None
            self._revoke_everything(updated)
        signals.user_deactivated.send(self.engine, slug=self.slug, user_id=str(doc["_id"]))
        self.audit("deactivated", user_id=str(doc["_id"]))

    def _revoke_membership(self, doc: dict[str, Any]) -> None:
        """End a shared account's sessions and refresh tokens in this app only (its access
        tokens here are refused from now on: the membership is inactive)."""
        user_id = str(doc["_id"])
        if self.sessions is not None:
            self.sessions.delete_for_user(user_id)
        if self.tokens is not None:
            self.tokens.revoke_user_in_app(user_id)
        # Every credential of the account in this app, whatever its version, is void here.
        revocation.user_revoked(
            self.engine, [self.slug], user_id, int(doc.get("auth_version", 0)) + 1
        )

    def activate(
        self, user_id: Any, *, everywhere: bool = False, platform_admin: bool = False
    ) -> None:
        """Enable a user in this app again (``everywhere``: also a disabled shared account
        itself, a platform administrator's act)."""
        users = self._require_users()
        doc = self._doc(user_id)
        fields = users.app_fields({"active": True})
        if everywhere:
            self._shared_account(doc, platform_admin, "it is enabled in every app")
            fields = {"active": True, **fields}
        users.update(doc["_id"], {**fields, "updated_at": store.now()})

    def set_roles(self, user_id: Any, roles: Iterable[str]) -> dict[str, Any]:
        users = self._require_users()
        doc = self._doc(user_id)
        checked = self._check_roles(roles)
        updated = users.update(doc["_id"], users.app_fields({"roles": checked}))
        assert updated is not None
        user = public_view(users, updated)
        self._link_roles(user)
        revocation.roles_changed(self, user)
        return user

    # --- sessions -------------------------------------------------------------------------------

    def start_session(
        self,
        user: dict[str, Any],
        *,
        remember: bool = False,
        fingerprint: dict[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        sessions = self.sessions
        if sessions is None:
            raise ConfigurationError(f"app {self.slug!r} has no users (auth.users.enabled)")
        return sessions.create(user, remember=remember, fingerprint=fingerprint)

    def load_session(
        self, sid: Any, fingerprint: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(session, user)`` of a live session id, or None. A session whose user changed
        password or was deactivated since is ended here. One database round trip (the
        session with its user), read fresh: see :meth:`SessionStore.get_with_user`."""
        sessions, users = self.sessions, self.users
        key = SessionStore.key_of(sid)
        if sessions is None or users is None or key is None:
            return None
        session, doc = sessions.get_with_user(key, users, fingerprint)
        if session is None:
            return None
        user = public_view(users, doc) if doc is not None and users.is_member(doc) else None
        if (
            user is None
            or not user["active"]
            or int(user.get("auth_version", 0)) != int(session.get("auth_version", 0))
        ):
            sessions.delete(sid)
            return None
        return session, user

    def end_session(self, sid: Any) -> bool:
        ended = self.sessions.delete(sid) if self.sessions is not None else False
        if ended:  # its open websockets close too, in every process
            revocation.session_ended(self.engine, self.slug, [store.digest("session", sid)])
        return ended

    # --- tokens -----------------------------------------------------------------------------------

    def issue_tokens(self, user: dict[str, Any]) -> dict[str, Any]:
        """A new access + refresh token pair (a new refresh family) for ``user``."""
        pair = self._require_tokens().issue(user)
        self.audit("tokens_issued", user_id=user["user_id"])
        return pair

    def user_from_token(self, token: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(user, claims)`` of a valid, unrevoked access token of this app, else TokenError.
        One database round trip: the user with the token's deny-list entries
        (:meth:`TokenManager.user_and_revoked`)."""
        tokens, users = self._require_tokens(), self.users
        if users is None:  # a token-only app: the token is the user
            claims = tokens.verify(token)
            return {"user_id": claims["sub"], "roles": [], "app": self.slug, "active": True}, claims
        claims = tokens.decode(token)
        doc, revoked = tokens.user_and_revoked(claims, users)
        if revoked:
            raise TokenError("the token has been revoked", context={"app": self.slug})
        user = public_view(users, doc) if doc is not None and users.is_member(doc) else None
        if user is None or not user["active"]:
            raise TokenError("the token's user is unknown or inactive", context={"app": self.slug})
        return user, claims

    def refresh(self, refresh_token: Any) -> dict[str, Any]:
        """New tokens for a refresh token (which is spent when rotation is on)."""
        tokens = self._require_tokens()
        try:
            claims, next_jti = tokens.rotate(refresh_token)
        except TokenError as exc:
            if exc.context.get("reuse"):
                signals.token_reuse_detected.send(self.engine, slug=self.slug, user_id=None)
                self.audit("refresh_reuse")
            raise
        user = self.get_user(claims["sub"]) if self.users is not None else None
        if self.users is None:
            user = {"user_id": claims["sub"], "auth_version": claims.get("ver", 0)}
        if user is None or not user.get("active", True):
            tokens.revoke_family(claims["fam"])
            raise TokenError("the token's user is unknown or inactive", context={"app": self.slug})
        if isinstance(claims.get("auth_time"), int):
            user = {**user, "auth_time": claims["auth_time"]}
        pair = tokens.issue(user, family=claims["fam"], refresh_jti=next_jti)
        if next_jti is None:
            pair["refresh_token"] = refresh_token
        return pair

    def revoke_token(self, token: Any) -> dict[str, Any]:
        """Revoke a token and its family (logout of one login)."""
        return self._require_tokens().revoke(token)

    # --- authorization ------------------------------------------------------------------------

    def check(self, subject: str, resource: str, action: str) -> bool:
        return bool(self.authz.check(subject, resource, action))

    def roles_of(self, user: Mapping[str, Any]) -> set[str]:
        """The user's roles here: stored ones, plus those inherited through casbin (where
        the app can use it)."""
        roles = set(user.get("roles") or ())
        if (self.config.policy_present or self._provider is not None) and not self._casbin_missing:
            authz = self.authz
            if isinstance(authz, CasbinProvider):
                for subject in [user.get("email"), *list(roles)]:
                    if subject:
                        roles.update(authz.roles_for(str(subject)))
        return roles

    def is_owner(self, user: Mapping[str, Any]) -> bool:
        """The user is the app's ``developer_id`` (with ``owner_can_access``) *and* has
        proven that email (created by an administrator, the CLI or ``demo_users``, or a
        completed password reset): holding the address in a self-registered account is
        not enough."""
        owner = self.config.owner
        return bool(
            self.config.owner_can_access
            and owner
            and user.get("email") == owner.lower()
            and user.get("email_verified") is True
        )

    def is_allowed(self, user: Mapping[str, Any], resource: str, action: str) -> bool:
        """May ``user`` (by email, or through any of its roles) ``action`` on ``resource``?"""
        subjects = [user.get("email"), user.get("user_id"), *sorted(user.get("roles") or ())]
        return any(self.check(str(s), resource, action) for s in subjects if s)

    def access_problem(self, user: Mapping[str, Any]) -> str | None:
        """Why the manifest's policy (``allowed_*``, ``denied_users``, ``require_role``,
        ``required_permissions``) refuses ``user`` on protected routes, or None."""
        cfg = self.config
        email = str(user.get("email") or "")
        if email and email in {u.lower() for u in cfg.denied_users}:
            return "this account is denied access to the app"
        if self.is_owner(user):
            return None
        listed = email in {u.lower() for u in cfg.allowed_users}
        if cfg.allowed_users and not listed and not cfg.allowed_roles:
            return "this account is not allowed to use the app"
        roles = self.roles_of(user) if (cfg.allowed_roles or cfg.require_role) else set()
        if cfg.allowed_roles and not (roles & set(cfg.allowed_roles)) and not listed:
            return "none of the account's roles may use the app"
        if cfg.require_role and cfg.require_role not in roles:
            return f"the role {cfg.require_role!r} is required"
        for resource, action in cfg.required_permissions:
            if not self.is_allowed(user, resource, action):
                return f"the permission {resource}:{action} is required"
        return None


def tracking_of(users: AppUserStore, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The login-tracking fields of ``doc`` in ``users``' app."""
    source = doc
    if isinstance(users, GlobalUserStore):
        source = (doc.get("apps") or {}).get(users.slug) or {}
    return {key: source.get(key) for key in TRACKING if key in source}


# --- the app's service for scripts and workers ---------------------------------------------------


def get_auth_service(engine: MongoDBEngine, slug: str, **options: Any) -> AuthService:
    """The :class:`AuthService` of ``slug`` from the engine's per-app cache
    (:mod:`mdb_sync.app_services`): one object per app state and options, shared with the
    Flask extension on the same engine (without ``options``, the extension's — when one is
    installed — are used), rebuilt when the app's record changes in any process."""
    engine.require_initialized()
    defaults = engine.app_services.auth_defaults
    if not options and defaults is not None:
        key, options = defaults(slug)
        return auth_service_of(engine, slug, key, options)
    return auth_service_of(engine, slug, options_key(options), options)


def options_key(options: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable key of keyword ``options`` (by ``repr``: objects by identity)."""
    return tuple(sorted((k, repr(v)) for k, v in options.items()))


def auth_service_of(
    engine: MongoDBEngine, slug: str, key: Hashable, options: Mapping[str, Any]
) -> AuthService:
    """The one :class:`AuthService` of ``slug`` with ``options`` (identified by ``key``) on
    ``engine``, from its per-app cache: what ``get_auth_service`` and the Flask extension
    return."""
    record = engine.registration.require_usable(slug)
    return engine.app_services.auth_service(
        record, lambda: AuthService(engine, slug, **options), key
    )
