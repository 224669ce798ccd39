"""Which optional extras of auth this interpreter has, and the errors that name them.

``pip install "mdb-sync[flask]"`` brings PyJWT but neither pycasbin (the ``auth`` extra) nor
authlib and joserfc (the ``oauth`` extra). An app's manifest says which it needs: an app
that asks for what is missing is refused when its manifest is loaded (``init_app``,
:func:`~mdb_sync.auth.get_auth_service`) with a :class:`ConfigurationError` naming the app,
the manifest path that asks and the extra to install — never an ``ImportError`` there, nor a
500 at the first sign-up or sign-in.

Nothing here imports an extra: modules are looked up with :func:`importlib.util.find_spec`,
so every layer (the auth service, the Flask installer) imports this module at module level.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .config import AuthConfig
    from .oauth.settings import OAuthSettings

#: The extra that brings what the OAuth sign-in imports.
OAUTH_EXTRA = "oauth"
#: The top-level modules of that extra (distributions authlib and joserfc).
OAUTH_MODULES = ("authlib", "joserfc")
#: The extra that brings pycasbin (with PyJWT's crypto and pyotp).
CASBIN_EXTRA = "auth"
#: The top-level module of pycasbin.
CASBIN_MODULES = ("casbin",)


def missing_modules(names: Iterable[str]) -> list[str]:
    """The modules of ``names`` this interpreter cannot import. Looked up, not imported:
    nothing of them loads here."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-imported module: not usable
            found = False
        if not found:
            missing.append(name)
    return missing


def _are(missing: list[str]) -> str:
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}"


# --- OAuth (the oauth extra) -----------------------------------------------------------------


def missing_oauth_modules() -> list[str]:
    """The modules of the ``oauth`` extra this interpreter cannot import (none: it can serve
    OAuth sign-in)."""
    return missing_modules(OAUTH_MODULES)


def oauth_unavailable(slug: str, settings: OAuthSettings, missing: list[str]) -> ConfigurationError:
    """The error of app ``slug``, whose OAuth providers (``settings``) need the ``missing``
    modules of the ``oauth`` extra."""
    providers = sorted(settings.providers)
    paths = ", ".join(f"auth.oauth.providers.{name}" for name in providers) or "auth.oauth"
    return ConfigurationError(
        f"app {slug!r} configures sign-in through OAuth providers ({paths}) but "
        f"{_are(missing)} not installed: "
        f'pip install "mdb-sync[{OAUTH_EXTRA}]" (or remove auth.oauth from the manifest)',
        context={
            "app": slug,
            "path": "auth.oauth",
            "providers": providers,
            "extra": OAUTH_EXTRA,
            "missing": missing,
        },
    )


def require_oauth_extra(slug: str, settings: OAuthSettings | None) -> None:
    """Refuse an app that configures OAuth providers (``settings``) when the ``oauth`` extra
    is missing: a :class:`ConfigurationError` naming the app, the providers and the extra."""
    if settings is None:
        return
    missing = missing_oauth_modules()
    if missing:
        raise oauth_unavailable(slug, settings, missing)


# --- casbin (the auth extra) -----------------------------------------------------------------


def casbin_request(cfg: AuthConfig) -> str | None:
    """The manifest path by which an app asks for casbin authorization, or None.

    An app asks for it when it gives casbin something to decide with: rules to add
    (``auth.policy.authorization.initial_policies`` / ``initial_roles``), a model other than
    the default (``acl`` or a model file), or permissions every request must hold
    (``auth.policy.required_permissions``) — with the casbin provider (the default). An app
    with no policy, or one of access lists and roles only (``allowed_roles``,
    ``allowed_users``, ``require_role``, ``default_roles``, ...), decides on the roles
    stored with its users and needs no casbin (where pycasbin is installed, roles inherited
    through casbin rules count too)."""
    if not cfg.policy_present or cfg.provider != "casbin":
        return None
    base = "auth.policy.authorization"
    if cfg.initial_policies:
        return f"{base}.initial_policies"
    if cfg.initial_roles:
        return f"{base}.initial_roles"
    if cfg.model != "rbac":
        return f"{base}.model"
    if cfg.required_permissions:
        return "auth.policy.required_permissions"
    return None


def missing_casbin_modules() -> list[str]:
    """``["casbin"]`` when pycasbin cannot be imported here, else ``[]``."""
    return missing_modules(CASBIN_MODULES)


def casbin_unavailable(
    slug: str, path: str, missing: list[str], remedy: str | None = None
) -> ConfigurationError:
    """The error of app ``slug``, whose manifest asks for casbin at ``path`` where pycasbin
    (the ``missing`` module) is not installed; ``remedy`` replaces the default alternative
    to installing it (removing ``path`` from the manifest)."""
    alternative = remedy or f"remove {path} from the manifest"
    return ConfigurationError(
        f"app {slug!r} uses casbin authorization ({path}) but pycasbin is not installed: "
        f'pip install "mdb-sync[{CASBIN_EXTRA}]" (or {alternative})',
        context={"app": slug, "path": path, "extra": CASBIN_EXTRA, "missing": missing},
    )


def require_casbin_extra(cfg: AuthConfig) -> None:
    """Refuse an app whose manifest asks for casbin authorization (:func:`casbin_request`)
    when pycasbin is missing: a :class:`ConfigurationError` naming the app, the manifest
    path and the extra."""
    path = casbin_request(cfg)
    if path is None:
        return
    missing = missing_casbin_modules()
    if missing:
        raise casbin_unavailable(cfg.slug, path, missing)
