"""JWT attacks against the token layer: every forged, stale or misdirected token is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest
from auth_apps import SECRET, auth_manifest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mdb_sync.auth import AuthService, KeySet, PasswordHasher
from mdb_sync.exceptions import ConfigurationError, TokenError

HASHER = PasswordHasher(n=4096)


@pytest.fixture
def auth(engine):
    engine.register_app(auth_manifest("tok"))
    service = AuthService(engine, "tok", secret=SECRET, hasher=HASHER)
    return service


@pytest.fixture
def user(auth):
    return auth.register_user("ada@example.com", "correct horse battery")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(auth, user, **changes):
    now = dt.datetime.now(dt.timezone.utc)
    claims = {
        "iss": "mdb-sync",
        "aud": auth.slug,
        "app": auth.slug,
        "sub": user["user_id"],
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
        "jti": "forged-jti",
        "typ": "access",
        "fam": "forged-family",
        "ver": 0,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _refused(auth, token, message):
    with pytest.raises(TokenError, match=message):
        auth.user_from_token(token)


def test_a_good_token_identifies_its_user(auth, user):
    pair = auth.issue_tokens(user)
    found, claims = auth.user_from_token(pair["access_token"])
    assert found["email"] == "ada@example.com"
    assert claims["aud"] == "tok" and claims["typ"] == "access"
    assert set(claims) >= {"exp", "iat", "nbf", "sub", "jti", "aud", "iss"}
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == auth.tokens.keys.signing_kid


def test_alg_none_is_refused(auth, user):
    kid = auth.tokens.keys.signing_kid
    header = _b64({"alg": "none", "typ": "JWT", "kid": kid})
    payload = _b64(
        json.loads(json.dumps(_claims(auth, user), default=lambda d: int(d.timestamp())))
    )
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        _refused(auth, token, "algorithm is not allowed|malformed")


def test_a_token_signed_with_another_key_is_refused(auth, user):
    forged = jwt.encode(
        _claims(auth, user),
        "another-secret-that-is-long-enough-0123456789",
        algorithm="HS256",
        headers={"kid": auth.tokens.keys.signing_kid},
    )
    _refused(auth, forged, "signature is invalid")
    no_kid = jwt.encode(_claims(auth, user), SECRET, algorithm="HS256")
    _refused(auth, no_kid, "not signed by a key of this app")


def test_hs_rs_confusion_is_refused(engine):
    """An RS256 app: a token 'signed' with HS256 using the public key as HMAC secret."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    manifest = auth_manifest("rsapp")
    manifest["auth"]["jwt"] = {"algorithm": "RS256"}
    engine.register_app(manifest)
    auth = AuthService(engine, "rsapp", private_key=private, key_id="k1", hasher=HASHER)
    user = auth.register_user("ada@example.com", "correct horse battery")
    good = auth.issue_tokens(user)["access_token"]
    assert jwt.get_unverified_header(good) == {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    assert auth.user_from_token(good)[0]["email"] == "ada@example.com"

    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    claims = json.loads(json.dumps(_claims(auth, user), default=lambda d: int(d.timestamp())))
    signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
    import hashlib
    import hmac

    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = signing_input.decode() + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    _refused(auth, forged, "algorithm is not allowed")


def test_expired_and_not_yet_valid_tokens_are_refused(auth, user):
    now = dt.datetime.now(dt.timezone.utc)
    keys = auth.tokens.keys
    sign = lambda claims: jwt.encode(  # noqa: E731
        claims, keys.signing_key, algorithm="HS256", headers={"kid": keys.signing_kid}
    )
    expired = _claims(
        auth, user, iat=now - dt.timedelta(hours=1), nbf=now - dt.timedelta(hours=1),
        exp=now - dt.timedelta(minutes=1),
    )  # fmt: skip
    _refused(auth, sign(expired), "has expired")
    future = _claims(auth, user, nbf=now + dt.timedelta(minutes=10))
    _refused(auth, sign(future), "not valid yet")
    issued_later = _claims(auth, user, iat=now + dt.timedelta(minutes=10))
    _refused(auth, sign(issued_later), "not valid yet")
    for missing in ("exp", "jti", "sub", "iat", "nbf", "iss"):
        _refused(auth, sign(_claims(auth, user, **{missing: None})), "lacks a required claim")
    _refused(auth, sign(_claims(auth, user, iss="someone-else")), "wrong issuer")


def test_another_apps_token_is_refused(engine, auth, user):
    engine.register_app(auth_manifest("other"))
    other = AuthService(engine, "other", secret=SECRET, hasher=HASHER)
    token = auth.issue_tokens(user)["access_token"]  # same secret, another app's derived key
    with pytest.raises(TokenError, match="not signed by a key of this app"):
        other.user_from_token(token)
    with pytest.raises(TokenError):
        other.refresh(auth.issue_tokens(user)["refresh_token"])


def test_a_tampered_payload_is_refused(auth, user):
    engine_token = auth.issue_tokens(user)["access_token"]
    header, payload, signature = engine_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "000000000000000000000000"
    _refused(auth, f"{header}.{_b64(claims)}.{signature}", "signature is invalid")
    _refused(auth, engine_token[:-3] + "abc", "signature is invalid|malformed")
    _refused(auth, "not.a.jwt", "malformed")
    _refused(auth, "x" * 9000, "missing or malformed")


def test_token_kinds_are_not_interchangeable(auth, user):
    pair = auth.issue_tokens(user)
    _refused(auth, pair["refresh_token"], "not an access token")
    with pytest.raises(TokenError, match="not an refresh token"):
        auth.refresh(pair["access_token"])


def test_a_revoked_jti_is_refused(auth, user):
    pair = auth.issue_tokens(user)
    auth.revoke_token(pair["access_token"])
    _refused(auth, pair["access_token"], "revoked")
    with pytest.raises(TokenError, match="revoked"):
        auth.refresh(pair["refresh_token"])  # logout ends the whole login
    entry = auth.tokens.denylist.find_one({"_id": {"$regex": "^jti:"}})
    assert entry["app_id"] == "tok" and entry["expires_at"] is not None


def test_refresh_rotates_and_reuse_revokes_the_family(auth, user):
    first = auth.issue_tokens(user)
    second = auth.refresh(first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    third = auth.refresh(second["refresh_token"])
    assert auth.user_from_token(third["access_token"])[0]["email"] == "ada@example.com"
    with pytest.raises(TokenError, match="reuse detected"):
        auth.refresh(first["refresh_token"])  # a spent token comes back: stolen
    for token in (third["access_token"], second["access_token"], first["access_token"]):
        _refused(auth, token, "revoked")
    with pytest.raises(TokenError, match="revoked"):
        auth.refresh(third["refresh_token"])
    other_login = auth.issue_tokens(user)  # other families are untouched
    assert auth.user_from_token(other_login["access_token"])


def test_without_rotation_a_refresh_token_is_reusable(engine):
    manifest = auth_manifest("norot")
    manifest["token_management"]["token_rotation"] = False
    engine.register_app(manifest)
    auth = AuthService(engine, "norot", secret=SECRET, hasher=HASHER)
    user = auth.register_user("ada@example.com", "correct horse battery")
    pair = auth.issue_tokens(user)
    again = auth.refresh(pair["refresh_token"])
    assert again["refresh_token"] == pair["refresh_token"]
    assert auth.refresh(pair["refresh_token"])["access_token"]


def test_password_change_and_deactivation_revoke_tokens(auth, user):
    before = auth.issue_tokens(user)
    updated = auth.change_password(user["user_id"], "correct horse battery", "a new passphrase!")
    _refused(auth, before["access_token"], "revoked")
    with pytest.raises(TokenError, match="revoked"):
        auth.refresh(before["refresh_token"])
    after = auth.issue_tokens(updated)
    assert auth.user_from_token(after["access_token"])
    auth.deactivate(user["user_id"])
    with pytest.raises(TokenError):
        auth.user_from_token(after["access_token"])


def test_key_rotation_keeps_old_tokens_valid_until_they_expire(engine, user, auth):
    old_token = auth.issue_tokens(user)["access_token"]
    new_secret = "a-brand-new-secret-for-rotation-0123456789"
    rotated = AuthService(
        engine, "tok", secret=new_secret, secret_fallbacks=(SECRET,), hasher=HASHER
    )
    assert rotated.user_from_token(old_token)[0]["user_id"] == user["user_id"]
    new_token = rotated.issue_tokens(user)["access_token"]
    assert (
        jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    )
    with pytest.raises(TokenError, match="not signed by a key"):
        auth.user_from_token(new_token)  # the old deployment never learnt the new key


def test_es256_keys_and_public_key_rotation(engine):
    manifest = auth_manifest("ecapp")
    manifest["auth"]["jwt"] = {"algorithm": "ES256"}
    engine.register_app(manifest)
    old_key = ec.generate_private_key(ec.SECP256R1())
    new_key = ec.generate_private_key(ec.SECP256R1())
    old = AuthService(engine, "ecapp", private_key=old_key, key_id="2024", hasher=HASHER)
    user = old.register_user("ada@example.com", "correct horse battery")
    token = old.issue_tokens(user)["access_token"]
    old_public = old_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new = AuthService(
        engine, "ecapp", private_key=new_key, key_id="2025", public_keys={"2024": old_public},
        hasher=HASHER,
    )  # fmt: skip
    assert new.user_from_token(token)[0]["email"] == "ada@example.com"
    with pytest.raises(ConfigurationError, match="does not fit the algorithm"):
        KeySet.from_private_key("ES256", rsa.generate_private_key(65537, 2048), where="test")


def test_missing_or_short_secret_refuses_to_start(engine, monkeypatch):
    monkeypatch.delenv("MDB_JWT_SECRET", raising=False)
    engine.register_app(auth_manifest("nosecret"))
    with pytest.raises(ConfigurationError, match=r"no JWT secret is set.*MDB_JWT_SECRET"):
        AuthService(engine, "nosecret", hasher=HASHER)
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        AuthService(engine, "nosecret", secret="too-short", hasher=HASHER)
    monkeypatch.setenv("MDB_JWT_SECRET", "e" * 40)
    assert AuthService(engine, "nosecret", hasher=HASHER).tokens is not None
    manifest = auth_manifest("namedenv")
    manifest["auth"]["jwt"] = {"secret_env": "NAMEDENV_JWT_SECRET"}
    monkeypatch.delenv("MDB_JWT_SECRET")
    engine.register_app(manifest)
    with pytest.raises(ConfigurationError, match=r"\$NAMEDENV_JWT_SECRET"):
        AuthService(engine, "namedenv", hasher=HASHER)
    monkeypatch.setenv("NAMEDENV_JWT_SECRET", "short")
    with pytest.raises(ConfigurationError, match=r"\$NAMEDENV_JWT_SECRET.*at least 32"):
        AuthService(engine, "namedenv", hasher=HASHER)


def test_each_app_signs_with_a_key_derived_from_the_secret_and_its_slug():
    """HKDF-SHA256 (RFC 5869): an outside service verifying an app's tokens derives the
    same key from the shared secret; no two apps (nor the secret itself) share it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from mdb_sync.auth.keys import derive_app_key

    for algorithm, size in (("HS256", 32), ("HS384", 48), ("HS512", 64)):
        expected = HKDF(
            algorithm=hashes.SHA256(),
            length=size,
            salt=b"mdb-sync jwt signing key v1",
            info=b"mdb-sync app\x1ftok",
        ).derive(SECRET.encode())
        assert derive_app_key(SECRET, "tok", algorithm) == expected
    alpha = KeySet.from_secret("HS256", SECRET, slug="alpha", where="test")
    beta = KeySet.from_secret("HS256", SECRET, slug="beta", where="test")
    assert alpha.signing_key != beta.signing_key != SECRET.encode()
    assert alpha.signing_kid != beta.signing_kid
