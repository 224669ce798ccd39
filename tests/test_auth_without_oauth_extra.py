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
import subprocess
import sys
from pathlib import Path
from typing import Any

from auth_apps import PASSWORD, BrowserClient

#: What the newcomer's install lacks: the oauth extra, and the auth extra's casbin and
#: second factor.
BLOCKED = ("authlib", "joserfc", "casbin", "pyotp")
TESTS_DIR = os.path.dirname(__file__)


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


#: The shared head of both child scripts: block the libraries, build the Flask app on
#: ``argv``: blocked names, Mongo URI, database, manifests directory, tests directory.
_HEAD = """
import json, logging, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.path.insert(0, sys.argv[5])
from flask import Flask
from auth_apps import auth_config, header_resolver
from flask_mdb import MDB
from mdb_sync.exceptions import ConfigurationError

def make_app(**config):
    app = Flask("newcomer")
    app.config.update(MDB_MONGO_URI=sys.argv[2], MDB_DB_NAME=sys.argv[3],
                      MDB_MANIFESTS=sys.argv[4], MDB_APP_RESOLVER=header_resolver,
                      MDB_EXTERNAL_URL="https://site.example", **auth_config(**config))
    return app
"""

#: Serve the app with LiveServer; register ``argv[6]`` (a manifest with OAuth) once the
#: process runs, as another process or an admin would; print the URL; serve until stdin
#: closes.
_SERVE = (
    _HEAD
    + """
from flask_mdb.testing import LiveServer
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
app = make_app()
mdb = MDB(app)
mdb.get_engine(app).register_app(json.loads(sys.argv[6]))
with LiveServer(app) as server:
    print(json.dumps({"url": server.url}), flush=True)
    sys.stdin.read()
"""
)

#: ``init_app`` with the manifest in ``argv[4]``, with the auth routes on and off: print
#: what each raised.
_START = (
    _HEAD
    + """
outcomes = {}
for routes in (True, False):
    try:
        MDB(make_app(MDB_AUTH_ROUTES=routes))
        outcomes[str(routes)] = None
    except Exception as exc:
        outcomes[str(routes)] = {"type": type(exc).__name__, "message": str(exc),
                                 "context": getattr(exc, "context", None)}
print(json.dumps(outcomes))
"""
)


def _write(directory: Path, manifest: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{manifest['slug']}.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def test_password_sign_in_serves_over_http_without_authlib(mongo_uri, db_name, tmp_path):
    """A newcomer's install (no authlib, joserfc, pyotp) with MDB_AUTH_ROUTES on:
    the app starts; sign-up, login, the session, tokens and logout work over real HTTP; the
    OAuth URLs answer exactly as an unknown URL does. An app registered later whose manifest
    configures a provider gets the clear ConfigurationError (logged, a 500) on its login page
    instead of a missing-route error."""
    manifests = _write(tmp_path / "manifests", _manifest("site"))
    late = _manifest("late", oauth=_google())
    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, ",".join(BLOCKED), mongo_uri, db_name,
             str(manifests), TESTS_DIR, json.dumps(late)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
            env=_env(),
        )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("{"), log.read_text()
        base = json.loads(line)["url"]

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
    finally:
        proc.communicate(timeout=60)  # closes stdin: the child stops serving
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert (
        "app 'late' configures sign-in through OAuth providers (auth.oauth.providers.google) "
        "but authlib and joserfc are not installed" in stderr
    ), stderr
    assert 'pip install "mdb-sync[oauth]"' in stderr


def _start(mongo_uri: str, db_name: str, manifests: Path, blocked: tuple[str, ...]) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", _START, ",".join(blocked), mongo_uri, db_name, str(manifests),
         TESTS_DIR],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_manifest_with_an_oauth_provider_and_no_authlib_is_refused_at_init_app(
    mongo_uri, db_name, tmp_path
):
    """``init_app`` loads a manifest configuring Google sign-in on an install without the
    extra: a ConfigurationError naming the app, the provider and the extra to install — not
    an ImportError, and not a route that fails at request time. With MDB_AUTH_ROUTES off
    nothing serves OAuth, so nothing needs the extra and the app starts."""
    manifests = _write(tmp_path / "manifests", _manifest("shop", oauth=_google()))
    for blocked, missing in ((BLOCKED, "authlib and joserfc are"), (("joserfc",), "joserfc is")):
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
    manifests = _write(tmp_path / "manifests", _manifest("shop", oauth=_google()))
    assert _start(mongo_uri, db_name, manifests, ()) == {"True": None, "False": None}
