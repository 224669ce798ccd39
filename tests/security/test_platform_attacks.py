"""Attacks on the platform sign-on, mounted as outsiders would through three real servers:
a hand-off code replayed, presented at another app, raced from many addresses at once,
carried into another browser (login CSRF), a ``return_to`` pointing elsewhere (an open
redirect minting codes for the attacker), an app the hub does not list, and a would-be hub
that an app does not name."""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD

from mdb_sync.auth import get_auth_service
from mdb_sync.auth.platform import HandOffError, HandOffs

from .attack import Call, burst
from .platform_site import (
    BLOG,
    HTML,
    HUB,
    JSON,
    SHOP,
    hand_off,
    path_of,
    platform,
    query_of,
    sign_in,
    start_sign_on,
    whoami,
)
from .raw_http import Browser

VICTIM, ATTACKER = "victim@example.com", "mallory@example.com"


def _register(browser: Browser, email: str) -> None:
    reply = browser.post(
        "/auth/register",
        json={"email": email, "password": PASSWORD},
        headers={"X-CSRF-Token": browser.csrf(), **JSON},
    )
    assert reply.status == 201, reply.text


@pytest.fixture
def site(factory, tmp_path):
    with platform(factory, tmp_path) as made:
        victim: dict[str, str] = {}
        _register(made.tab(HUB, victim, "127.0.0.2"), VICTIM)
        attacker: dict[str, str] = {}
        _register(made.tab(HUB, attacker, "127.0.0.66"), ATTACKER)
        yield made, victim, attacker


def _callback_with(browser: Browser, state_from: str, code: str) -> object:
    """Present ``code`` at ``browser``'s app with the state of a sign-on it started itself."""
    state = query_of(state_from)["state"]
    return browser.get(f"/auth/platform/callback?code={code}&state={state}", headers=JSON)


def test_a_replayed_hand_off_is_refused(site):
    made, victim_jar, _ = site
    hub, shop = made.tab(HUB, victim_jar, "127.0.0.2"), made.tab(SHOP, victim_jar, "127.0.0.2")
    callback = hand_off(hub, shop)
    assert shop.get(path_of(callback), headers=HTML).status == 303  # used once, by the victim
    # The same callback URL again (browser history, a proxy log): state and code are spent.
    again = shop.get(path_of(callback), headers=JSON)
    assert again.status == 400 and again.json["error"]["reason"] == "invalid_state"
    # The attacker replays the code with a state of their own: the code itself is spent.
    thief = made.tab(SHOP, {}, "127.0.0.66")
    reply = _callback_with(thief, start_sign_on(thief), query_of(callback)["code"])
    assert reply.status == 401 and reply.json["error"]["reason"] == "invalid_code"
    assert whoami(thief)["user"] is None


def test_a_hand_off_for_one_app_is_refused_at_another(site):
    made, victim_jar, _ = site
    hub, shop = made.tab(HUB, victim_jar, "127.0.0.2"), made.tab(SHOP, victim_jar, "127.0.0.2")
    callback = hand_off(hub, shop)  # intercepted before the shop saw it
    code = query_of(callback)["code"]
    blog = made.tab(BLOG, {}, "127.0.0.66")
    reply = _callback_with(blog, start_sign_on(blog), code)
    assert reply.status == 401 and reply.json["error"]["reason"] == "invalid_code"
    assert whoami(blog)["user"] is None
    # The code was the shop's, and the shop still takes it (once).
    assert shop.get(path_of(callback), headers=HTML).status == 303
    assert whoami(shop)["email"] == VICTIM


def test_a_hand_off_raced_from_many_addresses_signs_in_at_most_once(site):
    made, victim_jar, _ = site
    hub, shop = made.tab(HUB, victim_jar, "127.0.0.2"), made.tab(SHOP, victim_jar, "127.0.0.2")
    code = query_of(hand_off(hub, shop))["code"]
    calls = []
    for i in range(8):  # each attacker started a sign-on of their own (their state, cookie)
        thief = made.tab(SHOP, {}, f"127.0.0.{30 + i}")
        state = query_of(start_sign_on(thief))["state"]
        jar = "; ".join(f"{k}={v}" for k, v in thief.cookies.items())
        calls.append(
            Call(
                "GET",
                f"/auth/platform/callback?code={code}&state={state}",
                thief.source,
                headers={**JSON, "Cookie": jar},
            )
        )
    answers = burst(made.urls[SHOP], calls)
    assert sorted(a.status for a in answers) == [200] + [401] * 7


def test_a_hand_off_slipped_into_another_browser_signs_nobody_in(site):
    """Login CSRF: the attacker's own hand-off, fed to the victim's browser, would sign the
    victim in as the attacker (whose account then collects what the victim types)."""
    made, victim_jar, attacker_jar = site
    a_hub, a_shop = made.tab(HUB, attacker_jar, "127.0.0.66"), made.tab(SHOP, attacker_jar)
    callback = hand_off(a_hub, a_shop)
    victim_shop = made.tab(SHOP, victim_jar, "127.0.0.2")
    reply = victim_shop.get(path_of(callback), headers=JSON)
    assert reply.status == 400 and reply.json["error"]["reason"] == "invalid_state"
    assert whoami(victim_shop)["user"] is None


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/auth/platform/callback",
        "http://127.0.0.1:1/auth/platform/callback",
        "{shop}/auth/platform/callback/../../evil",
        "{shop}/auth/platform/callback?next=https://evil.example",
        "{blog}/auth/platform/callback",  # another related app's callback, for shop's code
    ],
)
def test_the_hub_never_sends_a_code_anywhere_but_the_registered_callback(site, return_to):
    made, victim_jar, _ = site
    hub = made.tab(HUB, victim_jar, "127.0.0.2")
    target = return_to.format(shop=made.urls[SHOP], blog=made.urls[BLOG])
    query = f"app={SHOP}&return_to={target}&state={'s' * 43}"
    reply = hub.get(f"/auth/platform/authorize?{query}", headers=HTML)
    assert reply.status == 400 and reply.header("Location") is None
    assert "code=" not in reply.text


def test_the_hub_hands_off_only_to_its_related_apps(site):
    made, victim_jar, _ = site
    hub = made.tab(HUB, victim_jar, "127.0.0.2")
    query = f"app=alice_app&return_to=https://alice.example/auth/platform/callback&state={'s' * 43}"
    reply = hub.get(f"/auth/platform/authorize?{query}", headers=JSON)
    assert reply.status == 403 and reply.json["error"]["reason"] == "not_related"
    # A related app is no hub: it hands off nothing.
    shop = made.tab(SHOP, victim_jar, "127.0.0.2")
    sign_in(shop, VICTIM, PASSWORD)
    query = f"app={BLOG}&return_to={made.urls[BLOG]}/auth/platform/callback&state={'s' * 43}"
    assert shop.get(f"/auth/platform/authorize?{query}", headers=JSON).status == 404


def test_a_would_be_hub_the_app_does_not_name_cannot_hand_off_to_it(site, factory, tmp_path):
    made, _, _ = site
    engine = made.apps[HUB].extensions["mdb"].engine
    rogue = {
        "slug": "rogue",
        "auth": {
            "mode": "shared",
            "users": {"enabled": True, "strategy": "global_users"},
            "related_apps": {SHOP: f"{made.urls[SHOP]}/auth"},
        },
    }
    engine.register_app(rogue)
    auth = get_auth_service(engine, "rogue", signing=False)
    user = get_auth_service(engine, HUB, signing=False).get_user_by_email(VICTIM)
    with pytest.raises(HandOffError) as refused:
        HandOffs(auth).issue(
            SHOP,
            f"{made.urls[SHOP]}/auth/platform/callback",
            user,
            platform_session="x" * 64,
            authenticated_at=None,
        )
    assert refused.value.reason == "not_related"
