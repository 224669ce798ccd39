"""Tokens of one app never open another, in one process sharing one JWT secret or key.

``alice_app`` is token-only (no users of its own: a valid token *is* the identity), the app
most exposed to a borrowed token. ``mallory_app`` is served by the same Flask process with
the same ``MDB_JWT_SECRET``; its owner controls its manifest and its code (so its signing
key too). Every way mallory tries to get a token accepted by alice, over real HTTP from its
own client address, is refused.
"""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from auth_apps import PASSWORD, SECRET, auth_config, auth_manifest, header_resolver, write
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flask_mdb.testing import LiveServer
from mdb_sync import MongoDBEngine
from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.auth.keys import derive_app_key
from mdb_sync.exceptions import ConfigurationError, ManifestValidationError

from .attack import Call, send

ALICE, MALLORY = "alice_app", "mallory_app"
ATTACKER = "127.0.0.66"


def _alice(**jwt_block):
    """A token-only app: a policy that requires a token, no users."""
    manifest = {
        "slug": ALICE,
        "name": ALICE,
        "auth": {"policy": {"required": True, "authorization": {"model": "rbac"}}},
        "token_management": {"access_token_ttl": 300, "refresh_token_ttl": 3600},
    }
    if jwt_block:
        manifest["auth"]["jwt"] = jwt_block
    return manifest


def _mallory(**jwt_block):
    manifest = auth_manifest(MALLORY)
    if jwt_block:
        manifest["auth"]["jwt"] = jwt_block
    return manifest


@pytest.fixture
def serve(factory, tmp_path):
    servers = []

    def start(*manifests, **config):
        for manifest in manifests:
            write(tmp_path, manifest)
        app = factory(
            MDB_MANIFESTS=str(tmp_path), MDB_APP_RESOLVER=header_resolver, **auth_config(**config)
        )

        @app.get("/whoami")
        def whoami():
            from flask_mdb.auth import get_current_user

            user = get_current_user()
            return {"user_id": user.id if user else None}

        server = LiveServer(app).start()
        servers.append(server)
        return app, server.url

    yield start
    for server in servers:
        server.stop()


def _mallory_token(url):
    """Mallory registers a user of its own app and gets a real token for it."""
    body = {"email": "eve@mallory.example", "password": PASSWORD}
    head = {"X-App": MALLORY}
    send(url, Call("POST", "/auth/token", ATTACKER, body, head))  # no account yet: 401
    registered = send(url, Call("GET", "/auth/csrf", ATTACKER, headers=head))
    cookie = registered.headers["Set-Cookie"].split(";", 1)[0]
    created = send(
        url,
        Call(
            "POST",
            "/auth/register",
            ATTACKER,
            body,
            {**head, "Cookie": cookie, "X-CSRF-Token": registered.body["csrf_token"]},
        ),
    )
    assert created.status == 201, created.body
    issued = send(url, Call("POST", "/auth/token", ATTACKER, body, head))
    assert issued.status == 200, issued.body
    return issued.body["access_token"]


def _at_alice(url, token):
    head = {"X-App": ALICE, "Authorization": f"Bearer {token}"}
    return send(url, Call("GET", "/whoami", ATTACKER, headers=head))


def test_a_manifest_audience_naming_another_app_is_refused_at_validation(factory, tmp_path, engine):
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app(_mallory(audience=ALICE))
    assert "auth.jwt.audience" in info.value.errors
    assert "its own app only" in str(info.value)
    # Served from MDB_MANIFESTS, the app refuses to start, naming the key.
    write(tmp_path, _alice())
    write(tmp_path, _mallory(audience=ALICE))
    with pytest.raises(ManifestValidationError, match=r"auth\.jwt\.audience"):
        factory(MDB_MANIFESTS=str(tmp_path), MDB_APP_RESOLVER=header_resolver, **auth_config())


def test_a_registry_record_with_a_borrowed_audience_issues_nothing(engine, raw_db):
    """A record written before the rule (or by hand) does not issue tokens for alice."""
    engine.register_app(_mallory())
    raw_db["apps_config"].update_one(
        {"_id": MALLORY}, {"$set": {"manifest.auth.jwt": {"audience": ALICE}}}
    )
    engine.registry.load()
    with pytest.raises(ConfigurationError, match="audience"):
        AuthService(engine, MALLORY, secret=SECRET)


def test_mallorys_tokens_and_forgeries_are_refused_by_alice(serve, mongo_uri, db_name):
    _app, url = serve(_alice(), _mallory())
    token = _mallory_token(url)
    assert (
        send(
            url,
            Call(
                "GET",
                "/whoami",
                ATTACKER,
                headers={"X-App": MALLORY, "Authorization": f"Bearer {token}"},
            ),
        ).status
        == 200
    )
    refused = _at_alice(url, token)
    assert refused.status == 401, refused.body

    # Mallory's code holds mallory's signing key: it signs a token that claims to be for
    # alice, with every claim alice checks. The key is mallory's own (derived from the
    # shared secret and mallory's slug), so alice refuses it whatever its header says.
    with MongoDBEngine(mongo_uri, db_name) as engine:
        keys = AuthService(
            engine, MALLORY, secret=SECRET, hasher=PasswordHasher(n=4096)
        ).tokens.keys
    claims = jwt.decode(token, options={"verify_signature": False})
    now = dt.datetime.now(dt.timezone.utc)
    forged_claims = {
        **claims,
        "aud": ALICE,
        "app": ALICE,
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
    }
    alice_kid = jwt.get_unverified_header(_alice_token(mongo_uri, db_name))["kid"]
    for kid in (keys.signing_kid, alice_kid):
        forged = jwt.encode(
            forged_claims, keys.signing_key, algorithm="HS256", headers={"kid": kid}
        )
        answer = _at_alice(url, forged)
        assert answer.status == 401, (kid, answer.body)
    # The old shape (one shared key, aud = [mallory_app, alice_app]) is refused too.
    legacy = {**forged_claims, "aud": [MALLORY, ALICE]}
    legacy.pop("app")
    for key in (SECRET, derive_app_key(SECRET, ALICE)):
        token = jwt.encode(legacy, key, algorithm="HS256", headers={"kid": alice_kid})
        assert _at_alice(url, token).status == 401
    assert derive_app_key(SECRET, ALICE) != derive_app_key(SECRET, MALLORY)


def _alice_token(mongo_uri, db_name):
    with MongoDBEngine(mongo_uri, db_name) as engine:
        alice = AuthService(engine, ALICE, secret=SECRET)
        return alice.issue_tokens({"user_id": "alice-service"})["access_token"]


def test_apps_sharing_one_rsa_key_still_refuse_each_others_tokens(serve, mongo_uri, db_name):
    """An asymmetric key cannot be derived per app: the ``app`` claim and the single
    ``aud`` keep the library's tokens apart (whoever holds the private key itself can sign
    anything: give each app its own key where apps do not trust each other)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    _app, url = serve(
        _alice(algorithm="RS256"), _mallory(algorithm="RS256"), MDB_JWT_PRIVATE_KEY=pem
    )
    token = _mallory_token(url)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256" and claims["aud"] == MALLORY and claims["app"] == MALLORY
    assert _at_alice(url, token).status == 401  # same key and kid: aud and app decide
    # The old shape, both audiences in one token, or alice's audience on mallory's token:
    for changes in ({"aud": [MALLORY, ALICE]}, {"aud": ALICE}, {"aud": [ALICE, MALLORY]}):
        forged = jwt.encode(
            {**claims, **changes}, private, algorithm="RS256", headers={"kid": header["kid"]}
        )
        answer = _at_alice(url, forged)
        assert answer.status == 401, (changes, answer.body)
    # A token alice issues itself passes: the refusals above are not a broken setup.
    with MongoDBEngine(mongo_uri, db_name) as engine:
        alice = AuthService(engine, ALICE, private_key=pem)
        own = alice.issue_tokens({"user_id": "alice-service"})["access_token"]
    assert jwt.get_unverified_header(own)["kid"] == header["kid"]
    assert _at_alice(url, own).status == 200
