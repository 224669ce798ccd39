"""Auth on an install without pycasbin (``pip install "mdb-sync[flask]"``).

An app that declares no casbin authorization — no ``auth.policy``, or a policy of access
lists and roles only — signs users up, logs them in and checks their roles without casbin:
the roles stored with each user decide. Casbin is needed only when the manifest asks for it
(rules to add, a model other than the default, ``required_permissions``); such an app is
refused when its manifest is loaded (``init_app``, ``get_auth_service``) with a
ConfigurationError naming the app, the manifest path and the extra — never a 500 at the
first sign-up. Each case runs in a fresh interpreter with the missing libraries made
unimportable (``sys.modules[name] = None``, as in ``tests/test_quality.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

EXTRA = 'pip install "mdb-sync[auth]"'


def _plain(slug: str, **auth: Any) -> dict[str, Any]:
    """The newcomer's manifest: users with open registration, no policy."""
    return {
        "slug": slug,
        "auth": {"users": {"enabled": True, "allow_registration": True}, **auth},
    }


def _rules() -> dict[str, Any]:
    """A policy asking for casbin: rules added once."""
    return {"authorization": {"initial_policies": [["admin", "reports", "*"]]}}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MDB_MONGO")}


#: Serve the manifests of ``argv[4]`` with role- and permission-guarded views; register
#: ``argv[6]`` (a manifest asking for casbin) once serving, as another process would; print
#: the URL; serve until stdin closes.
_SERVE = (
    HEAD
    + """
from flask_mdb.auth import require_permission, require_role
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
app = make_app()

@app.get("/members")
@require_role("member")
def members():
    return {"members": True}

@app.get("/admin")
@require_role("admin")
def admin():
    return {"admin": True}

@app.get("/reports")
@require_permission("reports", "read")
def reports():
    return {"reports": True}
"""
    + SERVE_TAIL
)

#: ``init_app`` with the manifests of ``argv[4]`` (with and without MDB_AUTH_PROVIDER), then
#: outside Flask: ``get_auth_service`` of each manifest and ``oauth_for`` of a plain app.
_START = (
    HEAD
    + """
from mdb_sync import MongoDBEngine
from mdb_sync.auth import get_auth_service
from mdb_sync.auth.oauth import oauth_for

class Allow:
    def check(self, subject, resource, action):
        return True

out = {"init_app": {}, "get_auth_service": {}}
for label, config in (("default", {}), ("custom", {"MDB_AUTH_PROVIDER": Allow()})):
    try:
        MDB(make_app(**config))
        out["init_app"][label] = None
    except Exception as exc:
        out["init_app"][label] = error(exc)
with MongoDBEngine(mongo_uri=sys.argv[2], db_name=sys.argv[3]) as engine:
    for manifest in json.loads(sys.argv[6]):
        engine.register_app(manifest)
        try:
            get_auth_service(engine, manifest["slug"], secret="x" * 40)
            out["get_auth_service"][manifest["slug"]] = None
        except Exception as exc:
            out["get_auth_service"][manifest["slug"]] = error(exc)
    engine.register_app({"slug": "plain", "auth": {"users": {"enabled": True}}})
    try:
        oauth_for(get_auth_service(engine, "plain"))
    except Exception as exc:
        out["oauth_for"] = error(exc)
print(json.dumps(out))
"""
)


def _password_call(client: BrowserClient, path: str, email: str, expected: int) -> Any:
    """POST ``email`` and the test password to ``path`` with the CSRF token; the user."""
    status, body = client.call(
        path, "POST", {"email": email, "password": PASSWORD}, **{"X-CSRF-Token": client.csrf()}
    )
    assert status == expected, body
    return body["user"]


def _sign_up(client: BrowserClient, email: str) -> Any:
    return _password_call(client, "/auth/register", email, 201)


def _log_in(client: BrowserClient, email: str) -> Any:
    return _password_call(client, "/auth/login", email, 200)


def test_apps_without_casbin_rules_sign_up_log_in_and_check_roles_over_http(
    mongo_uri, db_name, raw_db, tmp_path
):
    """Without pycasbin (nor pyotp, authlib, joserfc), MDB_AUTH_ROUTES on: the plain app
    ("site", no policy) and one with a policy of roles only ("club": every route needs a
    member) register a user (201, not 500), log them in on a new client, and serve the
    role-guarded views by the stored roles (member: 200, admin: 403). Nothing is written
    for casbin. A view checking a permission — code asking for casbin — answers 500 with
    the clear error in the log; so does an app registered later whose manifest asks for
    casbin rules."""
    site = _plain("site", default_role="member")
    club = _plain(
        "club",
        policy={"required": True, "allowed_roles": ["member"]},
        default_role="member",
        public_routes=["/open"],
    )
    late = _plain("late", policy=_rules())
    manifests = write_manifests(tmp_path / "manifests", site, club)
    log = tmp_path / "server.log"
    args = (NEWCOMER_BLOCKED, mongo_uri, db_name, manifests, json.dumps(late))
    with serving(_SERVE, _env(), log, *args) as base:
        for slug in ("site", "club"):
            email = f"newcomer@{slug}.example"
            user = _sign_up(BrowserClient(base, slug), email)
            assert user["email"] == email and user["roles"] == ["member"], user
            returning = BrowserClient(base, slug)
            assert returning.call("/members")[0] == 401
            assert _log_in(returning, email)["email"] == email
            assert returning.call("/auth/me")[1]["user"]["email"] == email
            assert returning.call("/members") == (200, {"members": True}), slug
            status, body = returning.call("/admin")
            assert status == 403 and "admin" in json.dumps(body), body
            status, body = returning.call("/reports")
            assert status == 500, body

        # The club's policy refuses a user without the member role (stored roles decide).
        stranger = BrowserClient(base, "club")
        _sign_up(stranger, "stranger@club.example")
        assert (
            raw_db["club_users"]
            .update_one({"email": "stranger@club.example"}, {"$set": {"roles": ["guest"]}})
            .modified_count
            == 1
        )
        assert stranger.call("/members")[0] == 403

        status, body = BrowserClient(base, "late").call("/auth/csrf")
        assert status == 500, body
    stderr = log.read_text()
    assert raw_db["site_casbin_policies"].count_documents({}) == 0
    assert raw_db["club_casbin_policies"].count_documents({}) == 0
    assert (
        "app 'site' uses casbin authorization (auth.policy.provider) but pycasbin is not "
        f"installed: {EXTRA} (or set auth.policy.provider to another provider)"
    ) in stderr, stderr
    assert (
        "app 'late' uses casbin authorization (auth.policy.authorization.initial_policies) "
        f"but pycasbin is not installed: {EXTRA}"
    ) in stderr, stderr


def _start(
    mongo_uri: str, db_name: str, tmp_path: Path, blocked: tuple[str, ...], *manifests: Any
) -> Any:
    directory = write_manifests(tmp_path / "manifests", *manifests)
    return run_child(
        _START, _env(), blocked, mongo_uri, db_name, directory, json.dumps(list(manifests))
    )


#: Manifests asking for casbin, and the manifest path each error names.
ASKING = {
    "rules": (_plain("rules", policy=_rules()), "auth.policy.authorization.initial_policies"),
    "grants": (
        _plain(
            "grants",
            policy={"authorization": {"initial_roles": [{"user": "a@x.example", "role": "r"}]}},
        ),
        "auth.policy.authorization.initial_roles",
    ),
    "acl": (
        _plain("acl", policy={"authorization": {"model": "acl"}}),
        "auth.policy.authorization.model",
    ),
    "perms": (
        _plain("perms", policy={"required_permissions": ["reports:read"]}),
        "auth.policy.required_permissions",
    ),
}


def test_a_manifest_asking_for_casbin_without_pycasbin_is_refused_when_loaded(
    mongo_uri, db_name, tmp_path
):
    """Each way a manifest asks for casbin (rules, role grants, the acl model, required
    permissions) is refused at ``init_app`` and by ``get_auth_service`` with a
    ConfigurationError naming the app, the manifest path and the extra; with
    MDB_AUTH_PROVIDER (a provider of the app's own) nothing needs casbin and the app starts.
    ``oauth_for`` outside Flask without authlib is the same kind of clear error."""
    for slug, (manifest, path) in ASKING.items():
        out = _start(mongo_uri, db_name, tmp_path / slug, NEWCOMER_BLOCKED, manifest)
        message = (
            f"app {slug!r} uses casbin authorization ({path}) but pycasbin is not installed: "
            f"{EXTRA} (or remove {path} from the manifest)"
        )
        refused = out["init_app"]["default"]
        assert refused["type"] == "ConfigurationError", refused
        assert refused["message"] == message
        assert refused["context"] == {
            "app": slug, "path": path, "extra": "auth", "missing": ["casbin"]
        }  # fmt: skip
        assert out["init_app"]["custom"] is None
        assert out["get_auth_service"][slug]["message"] == message
        assert out["oauth_for"]["type"] == "ConfigurationError"
        assert out["oauth_for"]["message"] == (
            "app 'plain' has no OAuth providers: add auth.oauth to its manifest"
        )


def test_oauth_for_without_authlib_names_the_app_its_providers_and_the_extra(
    mongo_uri, db_name, tmp_path
):
    """``oauth_for`` of an app with a provider, outside Flask, without the oauth extra: the
    ConfigurationError ``init_app`` gives, not an ImportError."""
    script = """
import json, sys
for name in ("authlib", "joserfc"):
    sys.modules[name] = None
from mdb_sync import MongoDBEngine
from mdb_sync.auth import get_auth_service
from mdb_sync.auth.oauth import oauth_for
google = {"preset": "google", "client_id": "1.apps.googleusercontent.com",
          "client_secret_env": "MDB_TEST_GOOGLE_SECRET"}
with MongoDBEngine(mongo_uri=sys.argv[1], db_name=sys.argv[2]) as engine:
    engine.register_app({"slug": "shop", "auth": {"users": {"enabled": True},
                                                  "oauth": {"providers": {"google": google}}}})
    try:
        oauth_for(get_auth_service(engine, "shop"))
    except Exception as exc:
        print(json.dumps({"type": type(exc).__name__, "message": str(exc),
                          "context": exc.context}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, mongo_uri, db_name],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["type"] == "ConfigurationError", out
    assert out["message"] == (
        "app 'shop' configures sign-in through OAuth providers (auth.oauth.providers.google) "
        'but authlib and joserfc are not installed: pip install "mdb-sync[oauth]" (or remove '
        "auth.oauth from the manifest)"
    )
    assert out["context"]["extra"] == "oauth" and out["context"]["providers"] == ["google"]


def test_with_pycasbin_installed_the_same_manifests_start(mongo_uri, db_name, tmp_path):
    """The check refuses only what is missing: with pycasbin importable every manifest
    asking for casbin starts, and get_auth_service builds its service."""
    manifests = [manifest for manifest, _ in ASKING.values()]
    out = _start(mongo_uri, db_name, tmp_path, ("authlib", "joserfc"), *manifests)
    assert out["init_app"] == {"default": None, "custom": None}
    assert out["get_auth_service"] == dict.fromkeys(ASKING)
