"""Whether this process can serve sign-in through OAuth providers, and the startup check of
the apps whose manifests configure some (``auth.oauth``).

The OAuth views (:mod:`.oauth_views`) need the ``oauth`` extra (authlib for the protocol,
joserfc for ID tokens and key sets); the rest of the auth blueprint — passwords, sessions,
tokens, resets — does not. So the blueprint serves the ``/oauth/...`` routes only where the
extra is installed (elsewhere they answer 404 like any unknown URL), and an app that
configures a provider on a process without the extra is refused when its manifest is
loaded, with an error naming the app, its providers and the extra: never an ImportError at
``init_app`` for an app that signs in with passwords only, nor a bare one at request time.

This module imports neither library (:mod:`mdb_sync.auth.extras` looks them up with
:func:`importlib.util.find_spec`, and builds the error that ``oauth_for`` raises too), so the
installer (:mod:`.setup`) and the blueprint (:mod:`.views`) import it at module level.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from mdb_sync.auth.extras import (
    OAUTH_EXTRA,
    OAUTH_MODULES,
    missing_oauth_modules,
    oauth_unavailable,
    require_oauth_extra,
)
from mdb_sync.auth.oauth import OAuthSettings

from ..links import require_external_base
from .urls import AUTH_BLUEPRINT

__all__ = [
    "OAUTH_EXTRA",
    "OAUTH_LOGIN_ENDPOINT",
    "OAUTH_MODULES",
    "check_oauth_startup",
    "missing_oauth_modules",
    "oauth_available",
    "require_oauth_extra",
    "require_oauth_routes",
]

#: The endpoint whose presence says the blueprint serves the OAuth routes.
OAUTH_LOGIN_ENDPOINT = f"{AUTH_BLUEPRINT}.oauth_login"


def oauth_available() -> bool:
    """Whether the ``oauth`` extra is installed (the blueprint then serves the OAuth
    routes)."""
    return not missing_oauth_modules()


def require_oauth_routes(slug: str, settings: OAuthSettings | None) -> None:
    """In a request: refuse an app that configures OAuth providers when this Flask app does
    not serve the OAuth routes (the extra was missing when the blueprint was made). An app
    registered after ``init_app`` was not checked then; its login page, whose provider links
    need those routes, raises this clear error instead of a ``BuildError``."""
    if settings is None or OAUTH_LOGIN_ENDPOINT in current_app.view_functions:
        return
    raise oauth_unavailable(slug, settings, missing_oauth_modules() or list(OAUTH_MODULES))


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
