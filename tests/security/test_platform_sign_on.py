"""Platform sign-on (``auth.mode: "shared"``) through three real servers: one sign-in at the
hub serves the related apps — each with its own session cookie and its own audience-bound
tokens, each with its own roles and profile fields on the shared account (hybrid) — and
logout is per app or everywhere. Manifests whose apps do not name each other are refused."""

from __future__ import annotations

import json

import pytest
from auth_apps import PASSWORD, auth_config

from flask_mdb import MDB
from mdb_sync.exceptions import ConfigurationError, ManifestValidationError
from mdb_sync.manifest import validate_manifest

from .platform_site import (
    BLOG,
    HTML,
    HUB,
    JSON,
    SHOP,
    authorize,
    path_of,
    platform,
    shared_manifest,
    sign_in,
    sign_on,
    start_sign_on,
    whoami,
    write_platform,
)

EMAIL = "ada@example.com"


@pytest.fixture
def site(factory, tmp_path):
    with platform(factory, tmp_path) as made:
        jar: dict[str, str] = {}
        hub = made.tab(HUB, jar)
        reply = hub.post(
            "/auth/register",
            json={"email": EMAIL, "password": PASSWORD},
            headers={"X-CSRF-Token": hub.csrf(), **JSON},
        )
        assert reply.status == 201, reply.text
        yield made, jar


def test_one_sign_in_at_the_hub_serves_every_related_app(site):
    made, jar = site
    hub, shop, blog = made.tab(HUB, jar), made.tab(SHOP, jar), made.tab(BLOG, jar)
    assert whoami(shop)["user"] is None
    # A related app sends a browser without a session through the hub...
    page = shop.get("/private", headers=HTML)
    assert page.status == 302 and "/auth/platform/login?next=" in str(page.header("Location"))
    # ... which, signed in already, hands it back at once: three redirects, no form.
    done = sign_on(hub, shop)
    assert done.status == 303 and done.header("Location") == "/whoami"
    me_hub, me_shop = whoami(hub), whoami(shop)
    assert me_shop["user"] == me_hub["user"] and me_shop["email"] == EMAIL
    assert (me_hub["app"], me_shop["app"]) == (HUB, SHOP)
    # Hybrid: the platform identity, with each app's own roles.
    assert me_hub["roles"] == ["member"] and me_shop["roles"] == ["customer"]
    assert sign_on(hub, blog).status == 303
    assert whoami(blog)["roles"] == ["reader"]
    # Each app has its own session cookie.
    assert {"portal_session", "shop_session", "blog_session"} <= set(jar)


def test_each_app_keeps_its_own_session_and_tokens(site):
    made, jar = site
    hub, shop = made.tab(HUB, jar), made.tab(SHOP, jar)
    sign_on(hub, shop)
    # A token of one app is refused at another: its audience is its own app.
    token_reply = shop.post("/auth/token", json={"email": EMAIL, "password": PASSWORD})
    assert token_reply.status == 200, token_reply.text
    token = token_reply.json["access_token"]
    bearer = {"Authorization": f"Bearer {token}", **JSON}
    assert shop.get("/whoami", headers=bearer, cookies=False).json["app"] == SHOP
    assert hub.get("/whoami", headers=bearer, cookies=False).json["user"] is None
    # The hub's session cookie means nothing at the shop, nor the shop's at the hub.
    hub_cookie = {"Cookie": f"shop_session={jar['portal_session']}", **JSON}
    assert shop.get("/whoami", headers=hub_cookie, cookies=False).json["user"] is None


def test_logout_of_one_app_keeps_the_others(site):
    made, jar = site
    hub, shop, blog = made.tab(HUB, jar), made.tab(SHOP, jar), made.tab(BLOG, jar)
    sign_on(hub, shop)
    sign_on(hub, blog)
    out = shop.post("/auth/logout", headers={"X-CSRF-Token": shop.csrf(), **JSON})
    assert out.status == 200
    assert whoami(shop)["user"] is None
    assert whoami(hub)["user"] is not None and whoami(blog)["user"] is not None


def test_logout_everywhere_ends_the_sign_on_in_every_app(site):
    made, jar = site
    hub, shop, blog = made.tab(HUB, jar), made.tab(SHOP, jar), made.tab(BLOG, jar)
    sign_on(hub, shop)
    sign_on(hub, blog)
    # Another browser of the same account keeps its own sign-on.
    other_jar: dict[str, str] = {}
    other_hub, other_shop = made.tab(HUB, other_jar, "127.0.0.3"), made.tab(SHOP, other_jar)
    sign_in(other_hub, EMAIL, PASSWORD)
    sign_on(other_hub, other_shop)
    out = blog.post(
        "/auth/logout", json={"everywhere": True}, headers={"X-CSRF-Token": blog.csrf(), **JSON}
    )
    assert out.status == 200
    assert [whoami(b)["user"] for b in (hub, shop, blog)] == [None, None, None]
    assert whoami(other_hub)["user"] is not None and whoami(other_shop)["user"] is not None


def test_sessions_from_a_hand_off_carry_the_hub_sign_in_time(site):
    made, jar = site
    hub, shop = made.tab(HUB, jar), made.tab(SHOP, jar)
    sign_on(hub, shop)
    assert shop.post("/sensitive", headers={"X-CSRF-Token": shop.csrf(), **JSON}).status == 200


def test_app_profile_fields_stay_with_their_app(site, factory):
    made, jar = site
    hub, shop = made.tab(HUB, jar), made.tab(SHOP, jar)
    sign_on(hub, shop)
    user_id = whoami(shop)["user"]
    app = made.apps[SHOP]
    mdb = app.extensions["mdb"]
    with app.app_context():
        from mdb_sync.auth import get_auth_service

        engine = mdb.engine
        get_auth_service(engine, SHOP, signing=False).set_app_profile(user_id, loyalty="gold")
    assert whoami(shop)["profile"] == {"loyalty": "gold"}
    assert whoami(hub)["profile"] is None


def test_login_tracking_counts_each_apps_sign_ins(site):
    made, jar = site
    hub, shop = made.tab(HUB, jar), made.tab(SHOP, jar)
    assert whoami(hub)["login_count"] == 1  # the registration signed in
    sign_on(hub, shop)
    assert whoami(shop)["login_count"] == 1
    sign_on(hub, shop)
    assert whoami(shop)["login_count"] == 2 and whoami(hub)["login_count"] == 1


def test_a_browser_not_signed_in_at_the_hub_signs_in_there_first(site):
    made, _ = site
    jar: dict[str, str] = {}
    hub, shop = made.tab(HUB, jar, "127.0.0.4"), made.tab(SHOP, jar, "127.0.0.4")
    authorize_url = start_sign_on(shop)
    reply = authorize(hub, authorize_url)
    assert reply.status == 302
    login = str(reply.header("Location"))
    assert login.startswith("/auth/login?next=/auth/platform/authorize?app%3Dshop")
    sign_in(hub, EMAIL, PASSWORD)
    again = authorize(hub, authorize_url)  # where the login page's next leads
    assert again.status == 302
    done = shop.get(path_of(str(again.header("Location"))), headers=HTML)
    assert done.status == 303 and whoami(shop)["email"] == EMAIL


# --- manifests ---------------------------------------------------------------------------------


def test_the_shared_mode_needs_global_users_and_a_hub_or_related_apps():
    bad = shared_manifest(SHOP, {HUB: "https://hub.example", SHOP: "https://shop.example"},
                          ["customer"])  # fmt: skip
    bad["auth"]["users"]["strategy"] = "app_users"
    with pytest.raises(ManifestValidationError, match="global_users"):
        validate_manifest(bad)
    lonely = shared_manifest(HUB, {HUB: "https://hub.example", SHOP: "https://s.example",
                                   BLOG: "https://b.example"}, ["member"])  # fmt: skip
    lonely["auth"]["related_apps"] = {}
    with pytest.raises(ManifestValidationError, match="related_apps"):
        validate_manifest(lonely)
    two_hubs = shared_manifest(SHOP, {HUB: "https://hub.example"}, ["customer"])
    two_hubs["auth"]["related_apps"]["blog"] = "https://blog.example/auth"
    with pytest.raises(ManifestValidationError, match="names its hub alone"):
        validate_manifest(two_hubs)


def test_apps_that_do_not_name_each_other_are_refused_at_startup(factory, tmp_path):
    urls = {HUB: "https://hub.example", SHOP: "https://shop.example", BLOG: "https://b.example"}
    # The hub lists the blog, but the blog names another hub.
    write_platform(tmp_path, urls)
    blog = json.loads((tmp_path / "blog.json").read_text())
    blog["auth"]["auth_hub_url"] = "https://elsewhere.example/auth"
    blog["auth"]["related_apps"] = {"elsewhere": "https://elsewhere.example/auth"}
    (tmp_path / "blog.json").write_text(json.dumps(blog))
    with pytest.raises(ConfigurationError, match="does not name it as its hub"):
        factory(MDB(), **auth_config(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG=HUB,
                                     MDB_EXTERNAL_URL=urls[HUB]))  # fmt: skip


def test_a_related_app_needs_its_public_address(factory, tmp_path):
    urls = {HUB: "https://hub.example", SHOP: "https://shop.example", BLOG: "https://b.example"}
    write_platform(tmp_path, urls)
    with pytest.raises(ConfigurationError, match="MDB_EXTERNAL_URL"):
        factory(MDB(), **auth_config(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG=SHOP))
