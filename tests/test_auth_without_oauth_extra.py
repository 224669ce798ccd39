"""The built-in auth routes on an install without the ``oauth`` extra (authlib, joserfc).

``pip install "mdb-sync[flask]"`` brings Flask and PyJWT, not authlib: an app that signs in
with passwords only must start and serve its sign-up, login and token routes, and the OAuth
URLs must be unknown there (404 like any other). An app whose manifest configures a provider
cannot be served, and says so when its manifest is loaded, naming the app, the provider and
the extra. Each case runs in a fresh interpreter with the extra made unimportable, as in
``tests/test_quality.py`` (``sys.modules[name] = None``), together with the auth extra's
pycasbin and pyotp, which the newcomer's install lacks too (``tests/test_auth_without_casbin.py``
covers apps asking for casbin).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from auth_apps import PASSWORD, BrowserClient
from newcomer_child import (
    HEAD,
    NEWCOMER_BLOCKED,
    SERVE_TAIL,
    run_child,
    serving,
    write_manifests,
)


def _manifest(slug: str, **auth: Any) -> dict[str, Any]:
    """Users with open registration and tokens, no second factor."""
    return {
        "slug": slug,
        "name": slug,
        "auth": {"users": {"enabled": True, "allow_registration": True}, **auth},
        "token_management": {"access_token_ttl": 300, "refresh_token_ttl": 3600},
    }


def _google() -> dict[str, Any]:
    return {
        "providers": {
            "google": {
                "preset": "google",
                "client_id": "123.apps.googleusercontent.com",
                "client_secret_env": "MDB_TEST_GOOGLE_SECRET",
            }
        }
    }


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDB_MONGO")}
    env["MDB_TEST_GOOGLE_SECRET"] = "a-client-secret"  # only the extra is missing
    return env


#: Serve the app with LiveServer; register ``argv[6]`` (a manifest with OAuth) once the
#: process runs, as another process or an admin would; print the URL; serve until stdin
#: closes.
_SERVE = (
    HEAD
    + """
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
app = make_app()
"""
    + SERVE_TAIL
)

#: ``init_app`` with the manifest in ``argv[4]``, with the auth routes on and off: print
#: what each raised.
_START = (
    HEAD
    + """
outcomes = {}
for routes in (True, False):
    try:
        MDB(make_app(MDB_AUTH_ROUTES=routes))
        outcomes[str(routes)] = None
    except Exception as exc:
        outcomes[str(routes)] = error(exc)
print(json.dumps(outcomes))
"""
)


def test_password_sign_in_serves_over_http_without_authlib(mongo_uri, db_name, tmp_path):
    """A newcomer's install (no authlib, joserfc, pyotp) with MDB_AUTH_ROUTES on:
    the app starts; sign-up, login, the session, tokens and logout work over real HTTP; the
    OAuth URLs answer exactly as an unknown URL does. An app registered later whose manifest
    configures a provider gets the clear ConfigurationError (logged, a 500) on its login page
    instead of a missing-route error."""
    manifests = write_manifests(tmp_path / "manifests", _manifest("site"))
    late = _manifest("late", oauth=_google())
    log = tmp_path / "server.log"
    args = (NEWCOMER_BLOCKED, mongo_uri, db_name, manifests, json.dumps(late))
    with serving(_SERVE, _env(), log, *args) as base:
        browser = BrowserClient(base, "site")
        status, page = browser.call("/auth/login", Accept="text/html")
        assert status == 200 and 'name="password"' in page and "oauth" not in page.lower()
        email = "newcomer@example.com"
        status, body = browser.call(
            "/auth/register", "POST", {"email": email, "password": PASSWORD},
            **{"X-CSRF-Token": browser.csrf()},
        )  # fmt: skip
        assert status == 201 and body["user"]["email"] == email, body
        assert browser.call("/auth/me")[1]["user"]["email"] == email

        returning = BrowserClient(base, "site")
        assert returning.call("/auth/me")[0] == 401
        status, body = returning.call(
            "/auth/login", "POST", {"email": email, "password": PASSWORD},
            **{"X-CSRF-Token": returning.csrf()},
        )  # fmt: skip
        assert status == 200 and body["user"]["email"] == email, body
        status, body = returning.call("/auth/me")
        assert status == 200 and body["user"]["email"] == email
        status, body = returning.call(
            "/auth/logout", "POST", {}, **{"X-CSRF-Token": body["csrf_token"]}
        )
        assert status == 200 and body == {"logged_out": True}
        assert returning.call("/auth/me")[0] == 401

        api = BrowserClient(base, "site")
        status, tokens = api.call("/auth/token", "POST", {"email": email, "password": PASSWORD})
        assert status == 200, tokens
        status, body = api.call("/auth/me", Authorization=f"Bearer {tokens['access_token']}")
        assert status == 200 and body["user"]["email"] == email

        unknown = browser.call("/auth/no-such-page")
        assert unknown[0] == 404
        for path in (
            "/auth/oauth/providers",
            "/auth/oauth/google/login",
            "/auth/oauth/google/callback?code=c&state=s",
            "/auth/oauth/identities",
        ):
            assert browser.call(path) == unknown, path
        assert browser.call("/auth/oauth/google/link", "POST", {}) == browser.call(
            "/auth/no-such-page", "POST", {}
        )

        status, body = BrowserClient(base, "late").call("/auth/login", Accept="text/html")
        assert status == 500, body
        assert "ConfigurationError" in str(body)
    stderr = log.read_text()
    assert (
        "app 'late' configures sign-in through OAuth providers (auth.oauth.providers.google) "
        "but authlib and joserfc are not installed" in stderr
    ), stderr
    assert 'pip install "mdb-sync[oauth]"' in stderr


def _start(mongo_uri: str, db_name: str, manifests: Path, blocked: tuple[str, ...]) -> Any:
    return run_child(_START, _env(), blocked, mongo_uri, db_name, manifests)


def test_a_manifest_with_an_oauth_provider_and_no_authlib_is_refused_at_init_app(
    mongo_uri, db_name, tmp_path
):
    """``init_app`` loads a manifest configuring Google sign-in on an install without the
    extra: a ConfigurationError naming the app, the provider and the extra to install — not
    an ImportError, and not a route that fails at request time. With MDB_AUTH_ROUTES off
    nothing serves OAuth, so nothing needs the extra and the app starts."""
    manifests = write_manifests(tmp_path / "manifests", _manifest("shop", oauth=_google()))
    for blocked, missing in (
        (NEWCOMER_BLOCKED, "authlib and joserfc are"),
        (("joserfc",), "joserfc is"),
    ):
        outcomes = _start(mongo_uri, db_name, manifests, blocked)
        refused = outcomes["True"]
        assert refused["type"] == "ConfigurationError", refused
        assert refused["message"] == (
            "app 'shop' configures sign-in through OAuth providers "
            f"(auth.oauth.providers.google) but {missing} not installed: "
            'pip install "mdb-sync[oauth]" (or remove auth.oauth from the manifest)'
        )
        assert refused["context"]["app"] == "shop"
        assert refused["context"]["providers"] == ["google"]
        assert refused["context"]["extra"] == "oauth"
        assert outcomes["False"] is None


def test_with_the_extra_installed_the_same_manifest_starts(mongo_uri, db_name, tmp_path):
    """The check refuses only what is missing: with authlib and joserfc importable the
    manifest with Google sign-in starts (routes on and off)."""
    manifests = write_manifests(tmp_path / "manifests", _manifest("shop", oauth=_google()))
    assert _start(mongo_uri, db_name, manifests, ()) == {"True": None, "False": None}
