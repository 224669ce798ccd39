"""OAuth 2.0 / OpenID Connect sign-in, framework-free (``mdb_sync.auth.oauth``), against the
real provider of ``tests/oidc_provider.py`` on 127.0.0.1: the flow (PKCE, state, nonce), the
presets (OpenID Connect by issuer, Google, GitHub with its e-mail API, Microsoft with its
tenant-aware issuer), accounts keyed by (issuer, subject), linking and unlinking, the
discovery/JWKS cache and its bounds."""

from __future__ import annotations

import copy
import json
import threading
import time
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import pytest
from net_faults import drip_headers, fault_server
from oidc_provider import CONSUMERS_TENANT, TestProvider

from mdb_sync.auth import get_auth_service
from mdb_sync.auth.oauth import (
    IdentityConflict,
    OAuthError,
    OAuthSignIn,
    ProviderCache,
    oauth_for,
)
from mdb_sync.auth.oauth.errors import ProviderUnavailable
from mdb_sync.auth.oauth.http import request as http_request
from mdb_sync.auth.oauth.metadata import DEFAULT_CACHE
from mdb_sync.auth.oauth.settings import OIDC_SCOPES
from mdb_sync.auth.oauth.states import new_key
from mdb_sync.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ManifestValidationError,
)
from mdb_sync.manifest import validate_manifest

SLUG = "oauth_app"
CALLBACK = "https://app.example/auth/oauth/{}/callback"
SECRET_ENV = "TEST_OAUTH_SECRET"
SECRET = "client-secret-of-the-test-app-0123456789"
PASSWORD = "correct horse battery"
TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "22222222-2222-2222-2222-222222222222"


@pytest.fixture(scope="module")
def op():
    with TestProvider() as provider:
        yield provider


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    DEFAULT_CACHE.clear()


def _client(op: TestProvider, client_id: str, names=("sso", "google", "github", "ms"), **kw):
    op.add_client(client_id, SECRET, [CALLBACK.format(n) for n in names], **kw)
    return client_id


def manifest(op: TestProvider, client_id: str, slug: str = SLUG, **providers) -> dict:
    base = {
        "sso": {
            "issuer": op.url,
            "client_id": client_id,
            "client_secret_env": SECRET_ENV,
            "label": "Test SSO",
            "trust_email": True,
        },
        "google": {
            "preset": "google",
            "base_url": op.url,
            "client_id": client_id,
            "client_secret_env": SECRET_ENV,
        },
        "github": {
            "preset": "github",
            "base_url": op.url,
            "api_url": op.url,
            "client_id": client_id,
            "client_secret_env": SECRET_ENV,
        },
        "ms": {
            "preset": "microsoft",
            "base_url": op.url,
            "client_id": client_id,
            "client_secret_env": SECRET_ENV,
        },
    }
    for name, value in providers.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = {**base.get(name, {}), **value}
    return {
        "slug": slug,
        "name": slug,
        "auth": {
            "roles": ["user", "admin"],
            "users": {"enabled": True, "allow_registration": True},
            "policy": {"required": True, "authorization": {"default_roles": ["user"]}},
            "oauth": {"providers": base},
        },
    }


def service(engine, op, client_id, slug=SLUG, **providers):
    engine.register_app(manifest(op, client_id, slug, **providers))
    auth = get_auth_service(engine, slug, hasher=None)
    return auth, oauth_for(auth)


def sign_in(
    oauth,
    op,
    provider: str,
    login: str,
    *,
    browser: str | None = None,
    link_user_id=None,
    signed_in=None,
    tamper_url=None,
):
    """The whole flow as a browser does it; the SignInResult (or the OAuthError)."""
    browser = browser or new_key()
    start = oauth.begin(
        provider,
        redirect_uri=CALLBACK.format(provider),
        browser_key=browser,
        next_url="/after",
        link_user_id=link_user_id,
    )
    status, location = op.authorize(start.url, login)
    assert status == 302, (status, location)
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(CALLBACK.format(provider))
    return oauth.complete(
        provider,
        state=query["state"][0],
        code=query.get("code", [None])[0],
        error=query.get("error", [None])[0],
        browser_key=browser,
        signed_in_user_id=signed_in,
    )


# --- the flow -------------------------------------------------------------------------------------


def test_authorization_url_carries_pkce_state_and_nonce_and_only_the_configured_callback(
    engine, op
):
    _auth, oauth = service(engine, op, _client(op, "flow-app"))
    start = oauth.begin("sso", redirect_uri=CALLBACK.format("sso"), browser_key=new_key())
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    assert start.url.startswith(op.url + "/authorize?")
    assert query["response_type"] == "code" and query["client_id"] == "flow-app"
    assert query["redirect_uri"] == CALLBACK.format("sso")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 40 and len(query["nonce"]) >= 40
    assert query["scope"] == "openid email profile"
    # What the server keeps: the hash of the state, never the state itself.
    stored = engine._raw_collection("mdb_auth_oauth_states").find_one({"app_id": SLUG})
    assert stored is not None and query["state"] not in str(stored)
    assert stored["nonce"] == query["nonce"] and stored["redirect_uri"] == query["redirect_uri"]


def test_first_sign_in_creates_an_account_keyed_by_issuer_and_subject(engine, op):
    auth, oauth = service(engine, op, _client(op, "create-app"))
    op.add_user("newcomer", email="newcomer@example.com")
    result = sign_in(oauth, op, "sso", "newcomer")
    assert result.outcome == "created" and result.next_url == "/after"
    user = result.user
    assert user["email"] == "newcomer@example.com" and user["roles"] == ["user"]
    assert user["display_name"] == "Newcomer" and "password_hash" not in user
    ident = engine._raw_collection("mdb_auth_identities").find_one({"user_id": user["user_id"]})
    assert (ident["issuer"], ident["subject"]) == (op.url, op.users["newcomer"].sub)
    assert ident["scope"] == f"app:{SLUG}"

    again = sign_in(oauth, op, "sso", "newcomer")
    assert again.outcome == "signed_in" and again.user["user_id"] == user["user_id"]
    assert len(auth.list_users()) == 1
    # A password sign-in cannot open an account created without a password.
    with pytest.raises(AuthenticationError):
        auth.authenticate("newcomer@example.com", "")


def test_the_same_email_at_another_subject_is_another_identity_not_the_same_account(engine, op):
    _auth, oauth = service(engine, op, _client(op, "subject-app"), sso={"trust_email": False})
    op.add_user("first-holder", email="shared@example.com", email_verified=False)
    first = sign_in(oauth, op, "sso", "first-holder")
    assert first.outcome == "created"
    # Untrusted e-mail: the account does not claim the address.
    assert first.user["email"].endswith("@oauth.invalid")
    op.add_user("second-holder", email="shared@example.com", email_verified=False)
    second = sign_in(oauth, op, "sso", "second-holder")
    assert second.outcome == "created" and second.user["user_id"] != first.user["user_id"]


def test_the_user_declining_at_the_provider_is_a_refusal(engine, op):
    auth, oauth = service(engine, op, _client(op, "decline-app"))
    op.add_user("decliner", email="decliner@example.com")
    browser = new_key()
    start = oauth.begin("sso", redirect_uri=CALLBACK.format("sso"), browser_key=browser)
    _status, location = op.authorize(start.url, "decliner", allow=False)
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"]
    with pytest.raises(OAuthError) as err:
        oauth.complete("sso", state=query["state"][0], error="access_denied", browser_key=browser)
    assert err.value.reason == "denied" and err.value.status == 401
    assert auth.list_users() == []


def test_email_only_in_userinfo_is_read_from_the_userinfo_endpoint(engine, op):
    _auth, oauth = service(engine, op, _client(op, "userinfo-app", email_in_userinfo_only=True))
    op.add_user("quiet", email="quiet@example.com")
    before = op.hit_count("userinfo")
    result = sign_in(oauth, op, "sso", "quiet")
    assert op.hit_count("userinfo") == before + 1
    assert result.user["email"] == "quiet@example.com"


def test_userinfo_about_another_subject_is_refused(engine, op):
    auth, oauth = service(engine, op, _client(op, "userinfo-sub-app", email_in_userinfo_only=True))
    op.add_user("shifty", email="shifty@example.com")
    op.misbehave("userinfo-sub-app", "userinfo_other_sub")
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "sso", "shifty")
    assert err.value.reason == "userinfo_mismatch"
    assert auth.list_users() == []


# --- presets -------------------------------------------------------------------------------------


def test_google_preset_trusts_a_verified_email_and_proves_it(engine, op):
    auth, oauth = service(engine, op, _client(op, "google-app"))
    op.add_user("gmail-user", email="g.user@example.com", email_verified=True)
    result = sign_in(oauth, op, "google", "gmail-user")
    assert result.user["email"] == "g.user@example.com"
    doc = auth.users.find_by_email("g.user@example.com")
    assert doc["email_verified_via"] == "oauth:google"


def test_google_preset_does_not_trust_an_unverified_email(engine, op):
    auth, oauth = service(engine, op, _client(op, "google-unverified"))
    op.add_user("unverified-g", email="not.proven@example.com", email_verified=False)
    result = sign_in(oauth, op, "google", "unverified-g")
    assert result.user["email"].startswith("google-") and result.user["email"].endswith(
        "@oauth.invalid"
    )
    assert auth.users.find_by_email("not.proven@example.com") is None


def test_github_preset_uses_the_user_api_and_the_primary_verified_email(engine, op):
    _auth, oauth = service(engine, op, _client(op, "github-app"))
    op.add_user(
        "octo",
        email="octo@example.com",
        public_email="public@example.com",
        github_emails=[
            {"email": "old@example.com", "primary": False, "verified": True},
            {"email": "octo@example.com", "primary": True, "verified": True},
        ],
    )
    calls = (op.hit_count("github_user"), op.hit_count("github_emails"))
    result = sign_in(oauth, op, "github", "octo")
    assert (op.hit_count("github_user"), op.hit_count("github_emails")) == (
        calls[0] + 1,
        calls[1] + 1,
    )
    assert result.user["email"] == "octo@example.com"
    assert result.identity["issuer"] == op.url
    assert result.identity["subject"] == str(op.users["octo"].github_id)


def test_github_primary_email_not_verified_is_not_trusted(engine, op):
    _auth, oauth = service(engine, op, _client(op, "github-unverified"))
    op.add_user(
        "octo-unverified",
        email="unproven@example.com",
        public_email="unproven@example.com",
        github_emails=[{"email": "unproven@example.com", "primary": True, "verified": False}],
    )
    result = sign_in(oauth, op, "github", "octo-unverified")
    assert result.identity["email"] == "unproven@example.com"
    assert result.identity["email_verified"] is False
    assert result.user["email"].endswith("@oauth.invalid")


def test_microsoft_common_accepts_each_tenants_own_issuer(engine, op):
    _auth, oauth = service(engine, op, _client(op, "ms-common"))
    op.add_user("ms-a", email="a@contoso.example", tenant=TENANT_A)
    op.add_user("ms-b", email="b@fabrikam.example", tenant=TENANT_B)
    a = sign_in(oauth, op, "ms", "ms-a")
    b = sign_in(oauth, op, "ms", "ms-b")
    assert a.identity["issuer"] == f"{op.url}/{TENANT_A}/v2.0"
    assert b.identity["issuer"] == f"{op.url}/{TENANT_B}/v2.0"
    # Microsoft is not trusted for e-mail by default: no address is claimed.
    assert a.user["email"].endswith("@oauth.invalid")


def test_microsoft_token_whose_issuer_is_not_its_tenants_is_refused(engine, op):
    _auth, oauth = service(engine, op, _client(op, "ms-mismatch"))
    op.add_user("ms-c", email="c@contoso.example", tenant=TENANT_A)
    op.misbehave("ms-mismatch", "tenant_mismatch")
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "ms", "ms-c")
    assert err.value.reason == "wrong_issuer"


def test_microsoft_allowed_tenants_refuses_other_tenants(engine, op):
    client = _client(op, "ms-allowed")
    _auth, oauth = service(engine, op, client, ms={"allowed_tenants": [TENANT_A]})
    op.add_user("ms-in", email="in@contoso.example", tenant=TENANT_A)
    op.add_user("ms-out", email="out@fabrikam.example", tenant=TENANT_B)
    assert sign_in(oauth, op, "ms", "ms-in").outcome == "created"
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "ms", "ms-out")
    assert err.value.reason == "tenant_not_allowed" and err.value.status == 403


def test_microsoft_single_tenant_refuses_a_user_of_another_tenant(engine, op):
    _auth, oauth = service(engine, op, _client(op, "ms-single"), ms={"tenant": TENANT_A})
    op.add_user("ms-home", tenant=TENANT_A, email="home@contoso.example")
    op.add_user("ms-guest", tenant=CONSUMERS_TENANT, email="guest@outlook.example")
    assert sign_in(oauth, op, "ms", "ms-home").outcome == "created"
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "ms", "ms-guest")
    assert err.value.reason == "wrong_issuer"


# --- linking -------------------------------------------------------------------------------------


def test_linking_needs_the_accounts_own_sign_in_and_then_signs_in_to_it(engine, op):
    auth, oauth = service(engine, op, _client(op, "link-app"), sso={"trust_email": False})
    owner = auth.register_user("owner@example.com", PASSWORD)
    op.add_user("owner-sso", email="someone-else@example.com")
    # Started for the owner, completed by a browser signed in as nobody: refused.
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "sso", "owner-sso", link_user_id=owner["user_id"], signed_in=None)
    assert err.value.reason == "link_requires_sign_in"
    linked = sign_in(
        oauth, op, "sso", "owner-sso", link_user_id=owner["user_id"], signed_in=owner["user_id"]
    )
    assert linked.outcome == "linked" and linked.user["user_id"] == owner["user_id"]
    again = sign_in(oauth, op, "sso", "owner-sso")
    assert again.outcome == "signed_in" and again.user["user_id"] == owner["user_id"]
    assert [i["provider"] for i in oauth.identities_of(owner["user_id"])] == ["sso"]


def test_an_identity_linked_to_one_account_cannot_be_linked_to_another(engine, op):
    auth, oauth = service(engine, op, _client(op, "relink-app"))
    first = auth.register_user("first@example.com", PASSWORD)
    second = auth.register_user("second@example.com", PASSWORD)
    op.add_user("contested", email="contested@example.com")
    sign_in(
        oauth, op, "sso", "contested", link_user_id=first["user_id"], signed_in=first["user_id"]
    )
    with pytest.raises(IdentityConflict) as err:
        sign_in(
            oauth,
            op,
            "sso",
            "contested",
            link_user_id=second["user_id"],
            signed_in=second["user_id"],
        )
    assert err.value.reason == "identity_in_use"


def test_trusted_verified_email_links_to_the_existing_account_unless_configured_off(engine, op):
    auth, oauth = service(engine, op, _client(op, "by-email"))
    existing = auth.register_user("known@example.com", PASSWORD)
    op.add_user("known-sso", email="known@example.com", email_verified=True)
    # Pre-hijacking: an account registered with the address, never proven, is not linked
    # (whoever registered it would keep a password to the provider user's account).
    with pytest.raises(IdentityConflict) as refused:
        sign_in(oauth, op, "sso", "known-sso")
    assert refused.value.reason == "email_in_use"
    auth.mark_email_verified(existing["user_id"])  # proven (an e-mail link, an admin)
    result = sign_in(oauth, op, "sso", "known-sso")
    assert result.outcome == "linked" and result.user["user_id"] == existing["user_id"]

    auth2, oauth2 = service(
        engine, op, _client(op, "by-email-off"), slug="oauth_app2", sso={"link_by_email": False}
    )
    auth2.register_user("known@example.com", PASSWORD)
    with pytest.raises(IdentityConflict) as err:
        sign_in(oauth2, op, "sso", "known-sso")
    assert err.value.reason == "email_in_use"


def test_unlinking_keeps_at_least_one_way_in(engine, op):
    _auth, oauth = service(engine, op, _client(op, "unlink-app"))
    op.add_user("only-way", email="only@example.com")
    op.add_user(
        "only-way-gh",
        email="only@example.com",
        github_emails=[{"email": "only@example.com", "primary": True, "verified": True}],
    )
    user = sign_in(oauth, op, "sso", "only-way").user
    with pytest.raises(IdentityConflict) as err:
        oauth.unlink(user["user_id"], "sso")
    assert err.value.reason == "last_sign_in_method"
    sign_in(
        oauth, op, "github", "only-way-gh", link_user_id=user["user_id"], signed_in=user["user_id"]
    )
    oauth.unlink(user["user_id"], "sso")
    assert [i["provider"] for i in oauth.identities_of(user["user_id"])] == ["github"]
    with pytest.raises(IdentityConflict):
        oauth.unlink(user["user_id"], "github")
    with pytest.raises(OAuthError) as err:
        oauth.unlink(user["user_id"], "sso")
    assert err.value.reason == "not_linked"


def test_concurrent_unlinks_of_the_last_two_identities_leave_one(engine, op):
    _auth, oauth = service(engine, op, _client(op, "race-app"))
    op.add_user("racer", email="racer@example.com")
    op.add_user("racer-gh", email="racer@example.com")
    user = sign_in(oauth, op, "sso", "racer").user
    sign_in(
        oauth, op, "github", "racer-gh", link_user_id=user["user_id"], signed_in=user["user_id"]
    )
    for _ in range(3):
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def unlink(name: str, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                oauth.unlink(user["user_id"], name)
                outcomes.append("ok")
            except IdentityConflict:
                outcomes.append("refused")

        threads = [threading.Thread(target=unlink, args=(n,)) for n in ("sso", "github")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        remaining = oauth.identities_of(user["user_id"])
        assert len(remaining) >= 1, outcomes
        if len(remaining) == 1:
            break
    assert len(oauth.identities_of(user["user_id"])) >= 1


def test_password_user_may_unlink_the_only_identity(engine, op):
    auth, oauth = service(engine, op, _client(op, "pw-unlink"))
    user = auth.register_user("pw@example.com", PASSWORD)
    op.add_user("pw-sso", email="other@example.com")
    sign_in(oauth, op, "sso", "pw-sso", link_user_id=user["user_id"], signed_in=user["user_id"])
    oauth.unlink(user["user_id"], "sso")
    assert oauth.identities_of(user["user_id"]) == []


def test_signup_closed_refuses_unknown_identities_but_signs_in_linked_ones(engine, op):
    client = _client(op, "closed-app")
    m = manifest(op, client)
    m["auth"]["users"]["allow_registration"] = False
    engine.register_app(m)
    auth = get_auth_service(engine, SLUG)
    oauth = oauth_for(auth)
    op.add_user("stranger", email="stranger@example.com")
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "sso", "stranger")
    assert err.value.reason == "signup_closed" and err.value.status == 403
    member = auth.register_user("member@example.com", PASSWORD)
    op.add_user("member-sso", email="member-other@example.com")
    sign_in(
        oauth, op, "sso", "member-sso", link_user_id=member["user_id"], signed_in=member["user_id"]
    )
    assert sign_in(oauth, op, "sso", "member-sso").user["user_id"] == member["user_id"]


def test_a_deactivated_account_cannot_sign_in_through_its_identity(engine, op):
    auth, oauth = service(engine, op, _client(op, "inactive-app"))
    op.add_user("leaver", email="leaver@example.com")
    user = sign_in(oauth, op, "sso", "leaver").user
    auth.deactivate(user["user_id"])
    with pytest.raises(OAuthError) as err:
        sign_in(oauth, op, "sso", "leaver")
    assert err.value.reason == "inactive"


def test_global_users_share_identities_across_apps(engine, op):
    client = _client(op, "global-app")
    for slug in ("glob_one", "glob_two"):
        m = manifest(op, client, slug)
        m["auth"]["users"]["strategy"] = "global_users"
        engine.register_app(m)
    one = oauth_for(get_auth_service(engine, "glob_one"))
    two = oauth_for(get_auth_service(engine, "glob_two"))
    op.add_user("roamer", email="roamer@example.com")
    created = sign_in(one, op, "sso", "roamer")
    joined = sign_in(two, op, "sso", "roamer")
    assert created.outcome == "created" and joined.outcome == "signed_in"
    assert joined.user["user_id"] == created.user["user_id"] and joined.user["app"] == "glob_two"


def test_a_sign_in_killed_between_reserving_and_creating_is_completed_next_time(engine, op):
    auth, oauth = service(engine, op, _client(op, "crash-app"))
    op.add_user("crashy", email="crashy@example.com")
    # What a process killed right after reserving the identity leaves behind:
    issuer, subject = op.url, op.users["crashy"].sub
    ident = oauth.identities.reserve(issuer, subject, "sso", {"email": "crashy@example.com"})
    engine._raw_collection("mdb_auth_identities").update_one(
        {"_id": ident}, {"$set": {"reserved_at": time.time() and _long_ago()}}
    )
    result = sign_in(oauth, op, "sso", "crashy")
    assert result.outcome == "created"
    assert sign_in(oauth, op, "sso", "crashy").user["user_id"] == result.user["user_id"]
    assert len(auth.list_users()) == 1


def _long_ago():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


# --- the cache and the network bounds ---------------------------------------------------------


def test_discovery_and_keys_are_fetched_once_for_many_sign_ins(engine, op):
    _auth, oauth = service(engine, op, _client(op, "cache-app"))
    op.add_user("cached", email="cached@example.com")
    before = (op.hit_count("discovery"), op.hit_count("jwks"))
    for _ in range(3):
        sign_in(oauth, op, "sso", "cached")
    assert (op.hit_count("discovery"), op.hit_count("jwks")) == (before[0] + 1, before[1] + 1)


def test_a_rotated_key_is_fetched_on_its_unknown_kid(engine, op):
    auth, _ = service(engine, op, _client(op, "rotate-app"))
    # A cache that may refetch on an unknown kid at once (the default waits a minute).
    oauth = OAuthSignIn(auth, auth.config.oauth, cache=ProviderCache(kid_refresh_interval=0))
    op.add_user("rotator", email="rotator@example.com")
    sign_in(oauth, op, "sso", "rotator")
    jwks = op.hit_count("jwks")
    old_key = op.key
    try:
        op.rotate_key()
        assert sign_in(oauth, op, "sso", "rotator").outcome == "signed_in"
        assert op.hit_count("jwks") == jwks + 1
    finally:
        op.key = old_key


def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(op):
    cache = ProviderCache(kid_refresh_interval=3600)
    jwks_uri = op.url + "/jwks"
    cache.keys(jwks_uri, what="test")
    before = op.hit_count("jwks")
    for n in range(20):
        cache.keys(jwks_uri, what="test", kid=f"made-up-{n}")
    assert op.hit_count("jwks") == before  # fetched just now: made-up kids fetch nothing
    eager = ProviderCache(kid_refresh_interval=0)
    eager.keys(jwks_uri, what="test")
    for n in range(5):
        eager.keys(jwks_uri, what="test", kid=f"made-up-{n}")
    assert op.hit_count("jwks") == before + 6  # the interval is what holds them back


def test_the_cache_is_bounded(op):
    cache = ProviderCache(max_entries=2)
    for path in ("/jwks", "/jwks?a", "/jwks?b"):
        cache.keys(op.url + path, what="test")
    assert len(cache._entries) == 2


def test_calls_to_a_provider_are_bounded_in_size_and_time():
    import socket

    # A "provider" that answers with an endless body, and one that never answers.
    endless = socket.socket()
    endless.bind(("127.0.0.1", 0))
    endless.listen(4)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    stop = threading.Event()

    def serve_endless() -> None:
        while not stop.is_set():
            try:
                conn, _ = endless.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            try:
                while not stop.is_set():
                    conn.sendall(b"[" * 65536)
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=serve_endless, daemon=True)
    thread.start()
    try:
        with pytest.raises(ProviderUnavailable, match="more than"):
            http_request(
                "GET", f"http://127.0.0.1:{endless.getsockname()[1]}/", what="endless", timeout=10
            )
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable):
            http_request(
                "GET", f"http://127.0.0.1:{silent.getsockname()[1]}/", what="silent", timeout=1
            )
        assert time.monotonic() - started < 10
        with pytest.raises(ProviderUnavailable, match="https"):
            http_request("GET", "http://example.com/", what="plain http")
    finally:
        stop.set()
        endless.close()
        silent.close()


def test_a_token_endpoint_dripping_its_headers_fails_the_sign_in_within_the_bound(engine, op):
    """The provider's discovery document points its token endpoint at a server that sends
    its status line and headers a byte per 0.1 s — each byte far within any socket timeout,
    so only a total deadline ends the call. The sign-in fails with ProviderUnavailable
    within http_timeout_seconds, and the connection is dropped right then (nothing keeps
    reading in the background)."""
    with urlopen(f"{op.url}/.well-known/openid-configuration", timeout=10) as answer:
        discovery = json.loads(answer.read())

    def provider(conn, request, server):
        if request.startswith(b"GET /.well-known/openid-configuration "):
            body = json.dumps({**discovery, "token_endpoint": f"{server.url}/token"}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            conn.sendall(head.encode() + body)
        else:
            drip_headers(conn, request, server)

    with fault_server(provider) as server:
        m = manifest(
            op,
            _client(op, "drip-app"),
            sso={"discovery_url": f"{server.url}/.well-known/openid-configuration"},
            google=None,
            github=None,
            ms=None,
        )
        m["auth"]["oauth"]["http_timeout_seconds"] = 1
        engine.register_app(m)
        oauth = oauth_for(get_auth_service(engine, SLUG, hasher=None))
        op.add_user("patient", email="patient@example.com")
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as err:
            sign_in(oauth, op, "sso", "patient")
        elapsed = time.monotonic() - started
        assert server.wait_ended(2, 5), "the abandoned call kept the connection open"
    assert str(err.value) == "the token endpoint of Test SSO took longer than 1s"
    assert err.value.status == 502 and err.value.reason == "provider_unavailable"
    assert server.requests[1].startswith(b"POST /token HTTP/1.1\r\n")
    assert elapsed < 1 + 6  # the browser round trip, and a loaded machine's slack


# --- the manifest --------------------------------------------------------------------------------


def _errors(m: dict) -> dict:
    with pytest.raises(ManifestValidationError) as err:
        validate_manifest(m)
    return err.value.errors


def test_manifest_errors_name_the_exact_path(op):
    m = manifest(op, "x")
    m["auth"]["oauth"]["providers"]["sso"]["client_secret"] = "oops"
    m["auth"]["oauth"]["providers"]["google"]["issuer"] = "https://accounts.google.com"
    m["auth"]["oauth"]["providers"]["plain"] = {
        "issuer": "http://idp.example",
        "client_id": "c",
        "client_secret_env": "E",
    }
    m["auth"]["oauth"]["providers"]["Bad Name"] = {
        "preset": "github",
        "client_id": "c",
        "client_secret_env": "E",
    }
    m["auth"]["oauth"]["providers"]["ms"]["allowed_tenants"] = ["not-a-guid"]
    m["auth"]["oauth"]["providers"]["github"]["tenant"] = "common"
    errors = _errors(m)
    assert (
        "client secrets never go in the manifest"
        in errors["auth.oauth.providers.sso.client_secret"][0]
    )
    assert errors["auth.oauth.providers.google.issuer"] == [
        "not with preset 'google' (use base_url to move it)"
    ]
    assert "must use https" in errors["auth.oauth.providers.plain.issuer"][0]
    assert 'auth.oauth.providers["Bad Name"]' in errors
    assert "auth.oauth.providers.ms.allowed_tenants[0]" in errors
    assert errors["auth.oauth.providers.github.tenant"] == ["only with preset 'microsoft'"]


def test_manifest_refuses_oauth_without_users_and_a_provider_without_endpoints(op):
    m = manifest(op, "x")
    m["auth"]["users"]["enabled"] = False
    assert "auth.oauth" in _errors(m)
    m = manifest(op, "x", sso={"issuer": None})
    m["auth"]["oauth"]["providers"]["lost"] = {"client_id": "c", "client_secret_env": "E"}
    assert "auth.oauth.providers.lost.preset" in _errors(m)
    m = manifest(op, "x", sso={"scopes": ["email"]})
    assert _errors(m)["auth.oauth.providers.sso.scopes"] == [
        "an OpenID Connect provider needs the 'openid' scope"
    ]


def test_missing_secret_variable_names_the_key(engine, op, monkeypatch):
    _auth, oauth = service(engine, op, _client(op, "nosecret-app"))
    op.add_user("nosecret", email="nosecret@example.com")
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ConfigurationError, match=r"auth\.oauth\.providers\.sso\.client_secret_env"):
        sign_in(oauth, op, "sso", "nosecret")


def test_manifest_is_not_changed_by_reading_it(op):
    m = manifest(op, "x")
    before = copy.deepcopy(m)
    validate_manifest(m)
    assert m == before


def provider_settings(name, block):
    """Provider ``name`` as its typed manifest section makes it (defaults from the schema)."""
    from mdb_sync.auth.oauth.settings import ProviderSettings
    from mdb_sync.manifest.sections import load_section

    section = load_section(f"auth.oauth.providers.{name}", block, lenient=False)
    return ProviderSettings.from_section(name, section)


def test_preset_defaults_and_base_url_overrides():
    common = {"client_id": "c", "client_secret_env": "E"}
    google = provider_settings("g", {"preset": "google", **common})
    assert google.discovery_url == "https://accounts.google.com/.well-known/openid-configuration"
    assert google.issuer_aliases == ("accounts.google.com",) and google.trust_email
    github = provider_settings("gh", {"preset": "github", **common})
    assert (github.authorize_url, github.api_url) == (
        "https://github.com/login/oauth/authorize",
        "https://api.github.com",
    )
    enterprise = provider_settings(
        "ghe", {"preset": "github", "base_url": "https://ghe.corp/", **common}
    )
    assert (
        enterprise.api_url == "https://ghe.corp/api/v3" and enterprise.issuer == "https://ghe.corp"
    )
    ms = provider_settings("ms", {"preset": "microsoft", "tenant": "contoso.example", **common})
    assert ms.discovery_url == (
        "https://login.microsoftonline.com/contoso.example/v2.0/.well-known/openid-configuration"
    )
    assert not ms.trust_email and ms.label == "Microsoft"
    other = provider_settings("corp", {"issuer": "https://id.corp/", **common})
    assert other.discovery_url == "https://id.corp/.well-known/openid-configuration"
    assert not other.trust_email and other.label == "corp" and other.scopes == OIDC_SCOPES
