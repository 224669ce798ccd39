"""Whether this process can serve sign-in through OAuth providers, and the startup check of
the apps whose manifests configure some (``auth.oauth``).

The OAuth views (:mod:`.oauth_views`) need the ``oauth`` extra (authlib for the protocol,
joserfc for ID tokens and key sets); the rest of the auth blueprint — passwords, sessions,
tokens, resets — does not. So the blueprint serves the ``/oauth/...`` routes only where the
extra is installed (elsewhere they answer 404 like any unknown URL), and an app that
configures a provider on a process without the extra is refused when its manifest is
loaded, with an error naming the app, its providers and the extra: never an ImportError at
``init_app`` for an app that signs in with passwords only, nor a bare one at request time.

This module imports neither library (it looks them up with :func:`importlib.util.find_spec`),
so the installer (:mod:`.setup`) and the blueprint (:mod:`.views`) import it at module level.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from flask import current_app

from mdb_sync.auth.oauth import OAuthSettings
from mdb_sync.exceptions import ConfigurationError

from ..links import require_external_base
from .urls import AUTH_BLUEPRINT

#: The extra that brings what the OAuth views import.
OAUTH_EXTRA = "oauth"
#: The top-level modules of that extra (distributions authlib and joserfc).
OAUTH_MODULES = ("authlib", "joserfc")
#: The endpoint whose presence says the blueprint serves the OAuth routes.
OAUTH_LOGIN_ENDPOINT = f"{AUTH_BLUEPRINT}.oauth_login"


def missing_oauth_modules() -> list[str]:
    """The modules of the ``oauth`` extra this interpreter cannot import (none: it can serve
    OAuth sign-in). Looked up, not imported: nothing of them loads here."""
    missing = []
    for name in OAUTH_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-imported module: not usable
            found = False
        if not found:
            missing.append(name)
    return missing


def oauth_available() -> bool:
    """Whether the ``oauth`` extra is installed (the blueprint then serves the OAuth
    routes)."""
    return not missing_oauth_modules()


def _unavailable(slug: str, settings: OAuthSettings, missing: list[str]) -> ConfigurationError:
    providers = sorted(settings.providers)
    paths = ", ".join(f"auth.oauth.providers.{name}" for name in providers) or "auth.oauth"
    return ConfigurationError(
        f"app {slug!r} configures sign-in through OAuth providers ({paths}) but "
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
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
        raise _unavailable(slug, settings, missing)


def require_oauth_routes(slug: str, settings: OAuthSettings | None) -> None:
    """In a request: refuse an app that configures OAuth providers when this Flask app does
    not serve the OAuth routes (the extra was missing when the blueprint was made). An app
    registered after ``init_app`` was not checked then; its login page, whose provider links
    need those routes, raises this clear error instead of a ``BuildError``."""
    if settings is None or OAUTH_LOGIN_ENDPOINT in current_app.view_functions:
        return
    raise _unavailable(slug, settings, missing_oauth_modules() or list(OAUTH_MODULES))


def check_oauth_startup(app: Any, cfg: Any) -> None:
    """Refuse to start an app with ``auth.oauth`` that this process cannot serve: the
    ``oauth`` extra missing, no configured public address to build callbacks from, or a
    client secret not in the environment — each error names what to install or set."""
    if cfg.oauth is None:
        return
    require_oauth_extra(cfg.slug, cfg.oauth)
    require_external_base(cfg.slug, app, needed_by="OAuth callback URLs")
    for provider in cfg.oauth.providers.values():
        provider.client_secret(cfg.slug)
