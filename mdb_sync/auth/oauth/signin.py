"""Signing in, linking and unlinking through OAuth 2.0 / OpenID Connect providers.

::

    from mdb_sync.auth import get_auth_service
    from mdb_sync.auth.oauth import oauth_for

    oauth = oauth_for(get_auth_service(engine, "my_app"))
    start = oauth.begin("google", redirect_uri=CALLBACK, browser_key=KEY, next_url="/tasks")
    # ... send the browser to start.url; the provider sends it back to CALLBACK ...
    result = oauth.complete("google", state=..., code=..., browser_key=KEY)
    result.user, result.outcome          # "signed_in", "created" or "linked"

Which account an identity signs in to:

1. The account the identity (issuer, subject) is linked to — never one found by e-mail.
2. Linking (``begin(..., link_user_id=...)``, which the web layer allows only to a signed-in
   user): the identity is added to that account, unless it belongs to another one.
3. A new identity whose e-mail an account already has: linked to that account only when the
   provider is trusted for e-mail (``trust_email``), the provider asserts the address is
   verified, ``link_by_email`` is on and the account's own address is proven (verified);
   otherwise refused (409: sign in to that account and
   link the provider from there) — an unverified address is how accounts are taken over.
4. Otherwise a new account (when sign-up is allowed): its e-mail is the provider's only when
   trusted and verified (and then counts as proven); else the account gets a placeholder
   address of its own (``<provider>-<hash>@oauth.invalid``), so an address nobody proved
   neither blocks its owner's registration nor is reachable by a password reset.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from ...exceptions import ConfigurationError
from .. import signals, store
from ..users import normalize_email, public_view
from . import protocol
from .errors import IdentityConflict, OAuthError, no_providers
from .identities import MAX_PER_USER, IdentityLinks, public_identity
from .metadata import DEFAULT_CACHE, ProviderCache
from .settings import OAuthSettings, ProviderSettings
from .states import PendingSignIns, new_key

if TYPE_CHECKING:
    from ..service import AuthService

log = logging.getLogger("mdb_sync.auth.oauth")

#: Seconds after which a reserved identity with no account (a sign-in that died half-way)
#: is taken over by the next sign-in.
RESERVATION_TIMEOUT = 30
PLACEHOLDER_DOMAIN = "oauth.invalid"
MAX_NEXT = 2048


@dataclass(frozen=True)
class Authorization:
    """Where to send the browser to sign in at a provider."""

    url: str
    state: str
    provider: str
    expires_in: int


@dataclass(frozen=True)
class SignInResult:
    """A completed callback."""

    user: dict[str, Any]
    outcome: str  # "signed_in" | "created" | "linked"
    provider: str
    identity: dict[str, Any]
    next_url: str = "/"
    remember: bool = False
    tokens: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class OAuthSignIn:
    """OAuth sign-in for one app (its :class:`AuthService` and ``auth.oauth``)."""

    def __init__(
        self, auth: AuthService, settings: OAuthSettings, cache: ProviderCache | None = None
    ) -> None:
        if auth.users is None:
            raise ConfigurationError(
                f"app {auth.slug!r}: auth.oauth needs auth.users.enabled",
                context={"app": auth.slug, "path": "auth.oauth"},
            )
        self.auth = auth
        self.settings = settings
        self.cache = cache or DEFAULT_CACHE
        self.pending = PendingSignIns(auth.engine, auth.slug, settings.state_ttl)
        scope = "global" if auth.users.kind == "global" else f"app:{auth.slug}"
        self.identities = IdentityLinks(auth.engine, auth.slug, scope)

    @property
    def slug(self) -> str:
        return self.auth.slug

    @property
    def providers(self) -> dict[str, ProviderSettings]:
        return self.settings.providers

    def provider(self, name: Any) -> ProviderSettings:
        provider = self.providers.get(name) if isinstance(name, str) else None
        if provider is None:
            raise OAuthError("no such sign-in provider", reason="unknown_provider", status=404)
        return provider

    # --- step 1: to the provider -------------------------------------------------------------

    def begin(
        self,
        name: str,
        *,
        redirect_uri: str,
        browser_key: str,
        next_url: str = "/",
        link_user_id: str | None = None,
        remember: bool = False,
        tokens: bool = False,
    ) -> Authorization:
        """Record a pending sign-in for the browser holding ``browser_key`` and return the
        provider's authorization URL (the callback must be ``redirect_uri``, built by the
        caller from the site's configured address — never from the request)."""
        provider = self.provider(name)
        where = protocol.endpoints(provider, self.cache, self.settings.http_timeout)
        nonce, verifier = new_key(), new_key()
        state = self.pending.create(
            provider.name,
            browser_key,
            nonce=nonce,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            next=str(next_url)[:MAX_NEXT],
            link_user_id=link_user_id,
            remember=bool(remember),
            tokens=bool(tokens),
        )
        url = protocol.authorization_url(
            provider,
            where,
            redirect_uri=redirect_uri,
            state=state,
            nonce=nonce,
            code_verifier=verifier,
        )
        return Authorization(url, state, provider.name, self.settings.state_ttl)

    # --- step 2: back from the provider ----------------------------------------------------------

    def complete(
        self,
        name: str,
        *,
        state: Any,
        code: Any = None,
        error: Any = None,
        browser_key: Any = None,
        signed_in_user_id: str | None = None,
    ) -> SignInResult:
        """Finish the sign-in the provider sent the browser back from. :class:`OAuthError`
        (with ``reason`` and ``status``) for anything refused."""
        provider = self.provider(name)
        pending = self.pending.consume(state, provider.name, browser_key)
        if pending is None:
            self._failed(provider, "invalid_state")
            raise OAuthError(
                "this sign-in is unknown, expired, already used or was started in another "
                "browser: start again",
                reason="invalid_state",
                status=400,
            )
        if error is not None or not isinstance(code, str) or not code or len(code) > 2048:
            self._failed(provider, "denied")
            raise OAuthError(
                f"{provider.label} did not sign you in"
                + (" (you declined)" if error == "access_denied" else ""),
                reason="denied",
                status=401,
            )
        try:
            profile = self._profile(provider, pending, code)
        except OAuthError as exc:
            self._failed(provider, exc.reason)
            raise
        common: dict[str, Any] = {
            "provider": provider.name,
            "next_url": pending.get("next") or "/",
            "remember": bool(pending.get("remember")),
            "tokens": bool(pending.get("tokens")),
        }
        link_user = pending.get("link_user_id")
        if link_user is not None:
            if signed_in_user_id != link_user:
                raise OAuthError(
                    "sign in to the account you are linking, then link again",
                    reason="link_requires_sign_in",
                    status=403,
                )
            user, ident = self._link(provider, profile, link_user)
            return SignInResult(user, "linked", identity=ident, **common)
        user, ident, outcome = self._sign_in(provider, profile)
        return SignInResult(user, outcome, identity=ident, **common)

    def _profile(self, provider: ProviderSettings, pending: dict[str, Any], code: str) -> Any:
        timeout = self.settings.http_timeout
        where = protocol.endpoints(provider, self.cache, timeout)
        tokens = protocol.exchange_code(
            provider,
            where,
            code=code,
            redirect_uri=pending["redirect_uri"],
            code_verifier=pending["code_verifier"],
            client_secret=provider.client_secret(self.slug),
            timeout=timeout,
        )
        if provider.kind == "github":
            return protocol.github_profile(provider, tokens, timeout=timeout)
        return protocol.oidc_profile(
            provider, where, tokens, nonce=pending["nonce"], cache=self.cache, timeout=timeout
        )

    def _failed(self, provider: ProviderSettings, reason: str) -> None:
        signals.login_failed.send(self.auth.engine, slug=self.slug, reason=f"oauth:{reason}")
        self.auth.audit("oauth_login_failed", provider=provider.name, reason=reason)

    # --- accounts --------------------------------------------------------------------------------

    def _trusted_email(self, provider: ProviderSettings, profile: Any) -> str | None:
        """The profile's e-mail when it may stand for the account's (trusted provider,
        verified address), normalised; else None."""
        if not (provider.trust_email and profile.email_verified and profile.email):
            return None
        try:
            return normalize_email(profile.email)
        except Exception:
            return None

    def _sign_in(
        self, provider: ProviderSettings, profile: Any
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        users = self.auth.users
        assert users is not None
        found = self.identities.find(profile.issuer, profile.subject)
        if found is not None and found.get("user_id"):
            doc = users.get(found["user_id"])
            if doc is None:
                raise OAuthError(
                    "this sign-in's account no longer exists", reason="no_account", status=401
                )
            self.identities.seen(found["_id"], profile.asserted())
            return self._login(doc, provider), public_identity(found), "signed_in"
        trusted = self._trusted_email(provider, profile)
        email = trusted
        if email is None and profile.email:
            try:
                email = normalize_email(profile.email)
            except Exception:
                email = None
        existing = users.find_by_email(email) if email else None
        if existing is not None and existing.get("oauth_identity") != self.identities.id_for(
            profile.issuer, profile.subject
        ):
            # Only an account whose own address is proven: an address someone registered
            # without proving it may be an attacker's (pre-hijacking), who would keep the
            # password to the account the provider's user is then signed in to.
            if trusted is not None and provider.link_by_email and users.is_email_verified(existing):
                _user, ident = self._attach_existing(provider, profile, existing, found)
                return self._login(existing, provider), ident, "linked"
            self.auth.audit("oauth_email_collision", provider=provider.name)
            raise IdentityConflict(
                f"an account with the e-mail address {provider.label} gave already exists: "
                f"sign in to it, then link {provider.label} from your account",
                reason="email_in_use",
            )
        return self._create(provider, profile, trusted, found, existing)

    def _attach_existing(
        self,
        provider: ProviderSettings,
        profile: Any,
        doc: dict[str, Any],
        found: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Link the identity to the account with its (trusted, verified) e-mail."""
        user_id = str(doc["_id"])
        if found is not None:  # a reservation left by a sign-in that died half-way
            self._take_reservation(found)
            attached = self.identities.attach(found["_id"], user_id)
            if attached is None:
                raise IdentityConflict(
                    "this sign-in is already in progress: try again", reason="in_progress"
                )
            users = self.auth.users
            assert users is not None  # OAuth sign-in needs accounts (the schema says so)
            return public_view(users, doc), public_identity(attached)
        user, ident = self._link(provider, profile, user_id)
        return user, ident

    def _take_reservation(self, found: dict[str, Any]) -> None:
        reserved = store.aware(found.get("reserved_at"))
        if reserved is not None and (store.now() - reserved).total_seconds() < RESERVATION_TIMEOUT:
            raise IdentityConflict(
                "this sign-in is already in progress: try again", reason="in_progress"
            )

    def _create(
        self,
        provider: ProviderSettings,
        profile: Any,
        trusted: str | None,
        found: dict[str, Any] | None,
        existing: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """A new account for a new identity (reserved first: see :meth:`IdentityLinks.reserve`)."""
        users = self.auth.users
        assert users is not None
        if not provider.allow_signup:
            raise OAuthError(
                f"no account here is linked to this {provider.label} account, and new "
                "accounts cannot be created through it",
                reason="signup_closed",
                status=403,
            )
        if found is None:
            try:
                ident_id = self.identities.reserve(
                    profile.issuer, profile.subject, provider.name, profile.asserted()
                )
            except DuplicateKeyError as exc:
                raise IdentityConflict(
                    "this sign-in is already in progress: try again", reason="in_progress"
                ) from exc
        else:
            self._take_reservation(found)
            ident_id = found["_id"]
        doc = existing  # an account this identity created before a crash: adopt it
        if doc is None:
            doc = self._insert_user(provider, profile, trusted, ident_id)
        attached = self.identities.attach(ident_id, str(doc["_id"]))
        if attached is None:
            raise IdentityConflict(
                "this sign-in is already in progress: try again", reason="in_progress"
            )
        self.auth.audit("oauth_linked", user_id=str(doc["_id"]), provider=provider.name)
        return self._login(doc, provider), public_identity(attached), "created"

    def _insert_user(
        self, provider: ProviderSettings, profile: Any, trusted: str | None, ident_id: str
    ) -> dict[str, Any]:
        users = self.auth.users
        assert users is not None
        now = store.now()
        email = trusted or f"{provider.name}-{ident_id[:20]}@{PLACEHOLDER_DOMAIN}"
        doc: dict[str, Any] = {
            "email": email,
            "auth_version": 0,
            "created_at": now,
            "updated_at": now,
            "oauth_identity": ident_id,
        }
        if profile.name:
            doc["display_name"] = profile.name
        if trusted:
            # The provider vouched for the mailbox: the same record a proven e-mail gets.
            doc["email_verified_via"] = f"oauth:{provider.name}"
            doc["email_verified_at"] = now
        roles = list(self.auth.config.default_roles)
        try:
            created = users.insert(doc, roles)
        except DuplicateKeyError:
            # Same placeholder (this identity's own, from a sign-in that died half-way)
            # or a trusted address registered meanwhile: adopt only our own.
            again = users.find_by_email(email)
            if again is None or again.get("oauth_identity") != ident_id:
                raise IdentityConflict(
                    "an account with this e-mail address was just created: sign in to it",
                    reason="email_in_use",
                ) from None
            return again
        # Through set_roles: the roles are checked and linked to the policy like a
        # registration's.
        user = self.auth.set_roles(created["_id"], roles) if roles else public_view(users, created)
        signals.user_registered.send(self.auth.engine, slug=self.slug, user=user)
        self.auth.audit("register", user_id=user["user_id"], via=f"oauth:{provider.name}")
        return users.get(created["_id"]) or created

    def _login(self, doc: dict[str, Any], provider: ProviderSettings) -> dict[str, Any]:
        """Sign ``doc`` in (as a password check would), or refuse an inactive account."""
        users = self.auth.users
        assert users is not None
        if not bool(doc.get("active", True)):
            raise OAuthError("this account is disabled", reason="inactive", status=403)
        if not users.is_member(doc):
            doc = users.join(doc, list(self.auth.config.default_roles))
            if self.auth.config.default_roles:
                self.auth.set_roles(doc["_id"], list(self.auth.config.default_roles))
        if not users.is_active(doc):
            raise OAuthError("this account is disabled", reason="inactive", status=403)
        users.update(doc["_id"], {"last_login_at": store.now()})
        user = public_view(users, users.get(doc["_id"]) or doc)
        signals.user_authenticated.send(self.auth.engine, slug=self.slug, user=user)
        self.auth.audit("login", user_id=user["user_id"], via=f"oauth:{provider.name}")
        return user

    def _link(
        self, provider: ProviderSettings, profile: Any, user_id: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Add the identity to ``user_id``'s account (409 when another account has it, or
        this account already has one of this provider)."""
        users = self.auth.users
        assert users is not None
        doc = users.get(user_id)
        if doc is None or not users.is_member(doc):
            raise OAuthError("no such account", reason="no_account", status=401)
        found = self.identities.find(profile.issuer, profile.subject)
        if found is not None:
            if found.get("user_id") == user_id:
                self.identities.seen(found["_id"], profile.asserted())
                return public_view(users, doc), public_identity(found)
            raise IdentityConflict(
                f"this {provider.label} account is already linked to another account",
                reason="identity_in_use",
            )
        mine = self.identities.for_user(user_id)
        if any(i.get("provider") == provider.name for i in mine):
            raise IdentityConflict(
                f"this account is already linked to a {provider.label} account: unlink it first",
                reason="provider_already_linked",
            )
        if len(mine) >= MAX_PER_USER:
            raise IdentityConflict(
                f"an account links at most {MAX_PER_USER} identities", reason="too_many_identities"
            )
        try:
            linked = self.identities.link(
                profile.issuer, profile.subject, provider.name, user_id, profile.asserted()
            )
        except DuplicateKeyError as exc:
            raise IdentityConflict(
                f"this {provider.label} account is already linked to another account",
                reason="identity_in_use",
            ) from exc
        self.auth.audit("oauth_linked", user_id=user_id, provider=provider.name)
        return public_view(users, doc), public_identity(linked)

    # --- the user's identities -------------------------------------------------------------------

    def identities_of(self, user_id: str) -> list[dict[str, Any]]:
        return [public_identity(d) for d in self.identities.for_user(user_id) if d.get("user_id")]

    def unlink(self, user_id: str, name: str) -> None:
        """Remove the user's identity at provider ``name`` — unless it is the account's last
        way in (no password, no other identity): :class:`IdentityConflict` (409)."""
        provider = self.provider(name)
        users = self.auth.users
        assert users is not None
        mine = [i for i in self.identities.for_user(user_id) if i.get("provider") == name]
        if not mine:
            raise OAuthError(
                f"this account is not linked to {provider.label}", reason="not_linked", status=404
            )
        ident = mine[0]
        # Mark first, then count what is left: two concurrent unlinks of an account's last
        # two identities both see the other one marked, and both give up.
        if not self.identities.mark_unlinking(ident["_id"], user_id):
            raise OAuthError(
                f"this account is not linked to {provider.label}", reason="not_linked", status=404
            )
        doc = users.get(user_id)
        has_password = bool((doc or {}).get("password_hash"))
        others = self.identities.count_for_user(user_id, usable_only=True)
        if not has_password and others == 0:
            self.identities.unmark(ident["_id"])
            raise IdentityConflict(
                f"{provider.label} is this account's only way to sign in: set a password or "
                "link another provider first",
                reason="last_sign_in_method",
            )
        self.identities.delete(ident["_id"], user_id)
        self.auth.audit("oauth_unlinked", user_id=user_id, provider=name)


# --- one per AuthService -----------------------------------------------------------------------

_lock = threading.Lock()
_instances: weakref.WeakKeyDictionary[Any, OAuthSignIn] = weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def oauth_for(auth: AuthService) -> OAuthSignIn:
    """The :class:`OAuthSignIn` of an app's :class:`AuthService` (built once per service,
    so per manifest version); :class:`ConfigurationError` when the app has no
    ``auth.oauth``."""
    with _lock:
        found = _instances.get(auth)
    if found is not None:
        return found
    settings = auth.config.oauth
    if settings is None:
        raise no_providers(auth.slug)
    made = OAuthSignIn(auth, settings)
    with _lock:
        return _instances.setdefault(auth, made)
