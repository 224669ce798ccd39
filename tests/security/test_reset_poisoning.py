"""Attack: password-reset poisoning. The attacker asks for a reset of the victim's account
with a forged ``Host`` (and ``X-Forwarded-*``) header, hoping the e-mailed link points to
their server — one click by the victim hands them a valid token.

Links are built from ``MDB_EXTERNAL_URL`` (or ``SERVER_NAME`` + ``PREFERRED_URL_SCHEME`` +
``APPLICATION_ROOT``) only, even behind a ``ProxyFix`` that trusts every forwarded header;
an app with password reset and neither refuses to start, naming the key."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from auth_apps import header_resolver, write
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_mdb.testing import LiveServer
from mdb_sync.exceptions import ConfigurationError

from .raw_http import Browser, wait_for
from .site_apps import EXTERNAL_URL, Outbox, make_site, register, site_manifest

VICTIM = "victim@example.com"
FORGED = {
    "Host": "evil.example",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Port": "8080",
    "X-Forwarded-Prefix": "/phish",
    "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
    "Accept": "application/json",
}


def _ask_for_reset(server_url: str, headers: dict[str, str], source: str = "127.0.0.9") -> None:
    attacker = Browser(server_url, source, headers=headers)
    token = attacker.csrf()
    reply = attacker.post("/auth/forgot", json={"email": VICTIM}, headers={"X-CSRF-Token": token})
    assert reply.status == 202, reply.text


def test_forged_host_and_forwarded_headers_never_reach_the_reset_link(factory, tmp_path):
    outbox = Outbox()
    app = make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=outbox,
                    MDB_EXTERNAL_URL=EXTERNAL_URL + "/")  # fmt: skip
    # The operator trusts a proxy's X-Forwarded-* headers (for client addresses, HTTPS):
    # the link must still not follow them.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
    with LiveServer(app) as server:
        register(Browser(server.url, "127.0.0.2"), VICTIM)
        _ask_for_reset(server.url, FORGED)
        wait_for(lambda: outbox.links_for(VICTIM), what="the reset link")
        [link] = outbox.links_for(VICTIM)
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc, parts.path) == ("https", "alice.example", "/auth/reset")
        assert "evil" not in link and "phish" not in link and "8080" not in link

        # The token in the (genuine) link works at the genuine site.
        token = parse_qs(parts.query)["token"][0]
        victim = Browser(server.url, "127.0.0.2", headers={"Accept": "application/json"})
        done = victim.post(
            "/auth/reset",
            json={"token": token, "new_password": "a brand new horse battery"},
            headers={"X-CSRF-Token": victim.csrf()},
        )
        assert done.status == 200 and done.json["user"]["email"] == VICTIM


def test_reset_link_from_server_name_preferred_scheme_and_application_root(factory, tmp_path):
    outbox = Outbox()
    app = make_site(
        factory,
        tmp_path,
        MDB_PASSWORD_RESET_SENDER=outbox,
        SERVER_NAME="alice.example:8443",
        PREFERRED_URL_SCHEME="https",
        APPLICATION_ROOT="/portal/",
    )
    with LiveServer(app) as server:
        register(Browser(server.url, "127.0.0.2"), VICTIM)
        _ask_for_reset(server.url, FORGED)
        wait_for(lambda: outbox.links_for(VICTIM), what="the reset link")
        [link] = outbox.links_for(VICTIM)
    assert link.startswith("https://alice.example:8443/portal/auth/reset?token=")


def test_each_app_gets_its_own_public_address(factory, tmp_path):
    outbox = Outbox()
    write(tmp_path, site_manifest("bob_app"))
    app = make_site(
        factory,
        tmp_path,
        MDB_APP_SLUG=None,
        MDB_APP_RESOLVER=header_resolver,
        MDB_PASSWORD_RESET_SENDER=outbox,
        MDB_EXTERNAL_URL={"alice_app": "https://alice.example", "bob_app": "https://bob.example"},
    )
    with LiveServer(app) as server:
        for slug in ("alice_app", "bob_app"):
            register(Browser(server.url, "127.0.0.2", headers={"X-App": slug}), VICTIM)
            _ask_for_reset(server.url, {**FORGED, "X-App": slug})
        wait_for(lambda: len(outbox.links_for(VICTIM)) == 2, what="both reset links")
    hosts = sorted(urlsplit(link).netloc for link in outbox.links_for(VICTIM))
    assert hosts == ["alice.example", "bob.example"]


def test_password_reset_without_a_public_address_refuses_to_start(factory, tmp_path):
    with pytest.raises(ConfigurationError, match="MDB_EXTERNAL_URL") as refused:
        make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=Outbox())
    assert refused.value.context["option"] == "MDB_EXTERNAL_URL"
    assert "Host" in str(refused.value)
    # A dict without this app's entry is no address for it either.
    with pytest.raises(ConfigurationError, match="MDB_EXTERNAL_URL"):
        make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=Outbox(),
                  MDB_EXTERNAL_URL={"other_app": "https://other.example"})  # fmt: skip
    # Without password reset, nothing is needed.
    make_site(factory, tmp_path, site_manifest(reset=False))


@pytest.mark.parametrize(
    "value",
    [
        "alice.example",
        "/auth",
        "ftp://alice.example",
        "https://",
        "https://alice.example/?next=/",
        "https://alice.example/#top",
        "https://user:secret@alice.example",
        "https://alice.example:99999",
        "https://alice.example/a b",
        "https://alice.example\\@evil.example",
        42,
        {"Not A Slug": "https://alice.example"},
        {"alice_app": "alice.example"},
    ],
)
def test_bad_public_addresses_are_refused_naming_the_key(factory, tmp_path, value):
    with pytest.raises(ConfigurationError, match="MDB_EXTERNAL_URL"):
        make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=Outbox(), MDB_EXTERNAL_URL=value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SERVER_NAME", "alice.example/evil"),
        ("SERVER_NAME", "evil.example@alice.example"),
        ("PREFERRED_URL_SCHEME", "javascript"),
    ],
)
def test_a_bad_server_name_or_scheme_is_refused_naming_the_key(factory, tmp_path, key, value):
    config = {"SERVER_NAME": "alice.example", key: value}
    with pytest.raises(ConfigurationError, match=key):
        make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=Outbox(), **config)
