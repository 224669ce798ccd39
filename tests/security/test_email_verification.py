"""E-mail verification, change of address and password reset through a real SMTP server
(aiosmtpd): the app's senders mail through it, the tests read the messages it received and
follow the links in them against the real WSGI server. Attacks: a link spent twice, a link
for one address used to verify another, a change of address confirmed without the new
mailbox, registration used to find out who has an account."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, write
from flask_apps import free_port
from smtp_server import SmtpServer, links_in

from flask_mdb import MDB
from flask_mdb.auth import fresh_login_required, login_required
from flask_mdb.testing import LiveServer
from mdb_sync.exceptions import ConfigurationError

from .raw_http import Browser

SLUG = "mailer"
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


def make_site(factory, tmp_path, smtp, unverified="refuse"):
    manifest = auth_manifest(SLUG)
    manifest["auth"]["users"]["require_verification"] = {"unverified": unverified}
    manifest["auth"]["users"]["password_reset"] = {"token_ttl_seconds": 600}
    limits = manifest["token_management"]["security"]["rate_limiting"]
    limits["register"] = {"max_attempts": 1000, "window_seconds": 60}
    write(tmp_path, manifest)
    port = free_port()
    app = factory(
        MDB(),
        **auth_config(
            MDB_MANIFESTS=str(tmp_path),
            MDB_APP_SLUG=SLUG,
            MDB_EXTERNAL_URL=f"http://127.0.0.1:{port}",
            MDB_EMAIL_VERIFICATION_SENDER=smtp.verification_sender,
            MDB_EMAIL_CHANGE_NOTICE_SENDER=smtp.notice_sender,
            MDB_PASSWORD_RESET_SENDER=smtp.reset_sender,
        ),
    )

    @app.post("/posts")
    @login_required
    def write_post():
        return {"posted": True}

    @app.get("/posts")
    @login_required
    def read_posts():
        return {"posts": []}

    @app.post("/danger")
    @fresh_login_required(within=1)
    def danger():
        return {"done": True}

    return app, port


@pytest.fixture
def site(factory, tmp_path, smtp):
    app, port = make_site(factory, tmp_path, smtp)
    with LiveServer(app, port=port) as live:
        yield live.url


def post(browser: Browser, path: str, body: dict | None = None):
    return browser.post(path, json=body or {}, headers={"X-CSRF-Token": browser.csrf(), **JSON})


def register(browser: Browser, email: str):
    return post(browser, "/auth/register", {"email": email, "password": PASSWORD})


def login(browser: Browser, email: str, password: str = PASSWORD):
    return post(browser, "/auth/login", {"email": email, "password": password})


def follow(browser: Browser, link: str):
    """Open the link's page (as the mail's reader would), then post its form."""
    parts = urlsplit(link)
    page = browser.get(f"{parts.path}?{parts.query}", headers=HTML)
    assert page.status == 200 and 'name="referrer" content="no-referrer"' in page.text
    token = parts.query.removeprefix("token=")
    return post(browser, parts.path, {"token": token})


def test_a_new_account_is_signed_in_only_after_following_the_mailed_link(site, smtp):
    ada = Browser(site, "127.0.0.2")
    reply = register(ada, "ada@example.com")
    assert reply.status == 202 and reply.json["verification_sent"] is True
    assert ada.get("/auth/me", headers=JSON).status == 401  # no session before the proof
    refused = login(ada, "ada@example.com")
    assert refused.status == 403 and refused.json["error"]["reason"] == "unverified"
    [message] = smtp.inbox.wait_for("ada@example.com")
    [link] = links_in(message)
    assert link.startswith(f"{site}/auth/verify?token=")
    done = follow(ada, link)
    assert done.status == 200 and done.json["user"]["email_verified"] is True
    assert login(ada, "ada@example.com").status == 200
    assert ada.get("/auth/me", headers=JSON).json["user"]["email_verified_via"] == "email_link"
    # Single use: the same link again is refused.
    again = follow(Browser(site, "127.0.0.66"), link)
    assert again.status == 400 and again.json["error"]["reason"] == "invalid_link"


def test_registering_a_taken_address_answers_like_a_new_one(site, smtp):
    first = register(Browser(site, "127.0.0.2"), "taken@example.com")
    [link] = links_in(smtp.inbox.wait_for("taken@example.com")[0])
    follow(Browser(site, "127.0.0.2"), link)
    second = register(Browser(site, "127.0.0.66"), "taken@example.com")
    assert (second.status, second.json) == (first.status, first.json)
    # Nothing more reaches the (verified) owner, and the outsider's password opens nothing.
    assert login(Browser(site, "127.0.0.66"), "taken@example.com", PASSWORD + "x").status == 401
    assert len(smtp.inbox.to("taken@example.com")) == 1


def test_resending_answers_the_same_for_every_address(site, smtp):
    register(Browser(site, "127.0.0.2"), "slow@example.com")
    smtp.inbox.wait_for("slow@example.com")
    unknown = post(Browser(site, "127.0.0.3"), "/auth/verify/resend", {"email": "no@example.com"})
    known = post(Browser(site, "127.0.0.3"), "/auth/verify/resend", {"email": "slow@example.com"})
    assert (unknown.status, unknown.json) == (known.status, known.json) == (202, known.json)
    links = [links_in(m)[0] for m in smtp.inbox.wait_for("slow@example.com", 2)]
    assert links[0] != links[1]
    assert follow(Browser(site, "127.0.0.2"), links[1]).status == 200
    assert smtp.inbox.to("no@example.com") == []


def test_a_password_reset_mail_is_followed_and_proves_the_address(site, smtp):
    register(Browser(site, "127.0.0.2"), "forgetful@example.com")
    smtp.inbox.wait_for("forgetful@example.com")
    browser = Browser(site, "127.0.0.2")
    assert post(browser, "/auth/forgot", {"email": "forgetful@example.com"}).status == 202
    [reset_mail] = [
        m for m in smtp.inbox.wait_for("forgetful@example.com", 2) if "Reset" in m["Subject"]
    ]
    [link] = links_in(reset_mail)
    parts = urlsplit(link)
    page = browser.get(f"{parts.path}?{parts.query}", headers=HTML)
    assert page.status == 200
    token = parts.query.removeprefix("token=")
    new = "a new horse battery staple"
    done = post(browser, "/auth/reset", {"token": token, "new_password": new})
    assert done.status == 200
    # The reset link went to the mailbox: the address counts as verified, sign-in works.
    assert login(browser, "forgetful@example.com", new).status == 200


def test_a_link_for_one_address_never_verifies_another(factory, tmp_path, smtp):
    app, port = make_site(factory, tmp_path, smtp, unverified="read_only")
    with LiveServer(app, port=port) as live:
        mallory = Browser(live.url, "127.0.0.66")
        assert register(mallory, "mallory@example.com").status == 201  # read-only: signed in
        [own_link] = links_in(smtp.inbox.wait_for("mallory@example.com")[0])
        # Mallory asks to move the account to the victim's address, and cannot read that
        # mailbox: she follows the link she has instead.
        assert post(mallory, "/auth/email", {"new_email": "victim@example.com"}).status == 202
        smtp.inbox.wait_for("victim@example.com")
        assert follow(mallory, own_link).status == 200
        me = mallory.get("/auth/me", headers=JSON).json["user"]
        assert me["email"] == "mallory@example.com"  # her own address verified, nothing else
        # A link sent to an address the account no longer has is refused.
        mallory2 = Browser(live.url, "127.0.0.67")
        assert register(mallory2, "first@example.com").status == 201
        [first_link] = links_in(smtp.inbox.wait_for("first@example.com")[0])
        assert post(mallory2, "/auth/email", {"new_email": "second@example.com"}).status == 202
        [change] = links_in(smtp.inbox.wait_for("second@example.com")[0])
        assert follow(mallory2, change).status == 200
        stale = follow(mallory2, first_link)
        assert stale.status == 400 and stale.json["error"]["reason"] == "invalid_link"
        assert mallory2.get("/auth/me", headers=JSON).json["user"]["email"] == "second@example.com"


def test_change_of_address_needs_the_new_mailbox_and_tells_the_old_one(factory, tmp_path, smtp):
    app, port = make_site(factory, tmp_path, smtp, unverified="read_only")
    with LiveServer(app, port=port) as live:
        grace = Browser(live.url, "127.0.0.2")
        register(grace, "grace@old.example")
        follow(grace, links_in(smtp.inbox.wait_for("grace@old.example")[0])[0])
        assert post(grace, "/auth/email", {"new_email": "grace@new.example"}).status == 202
        [confirm] = smtp.inbox.wait_for("grace@new.example")
        notices = [m for m in smtp.inbox.wait_for("grace@old.example", 2) if "changing" in
                   m["Subject"]]  # fmt: skip
        assert len(notices) == 1 and links_in(notices[0]) == []  # a notice, no link
        # The old address's holder alone (with the old mails and the session) cannot
        # confirm: the old verification link is spent, the notice has nothing to follow.
        old_link = links_in(smtp.inbox.to("grace@old.example")[0])[0]
        assert follow(grace, old_link).status == 400
        assert grace.get("/auth/me", headers=JSON).json["user"]["email"] == "grace@old.example"
        # The new mailbox's link does it.
        [link] = links_in(confirm)
        done = follow(Browser(live.url, "127.0.0.5"), link)
        assert done.status == 200 and done.json["purpose"] == "change"
        assert login(Browser(live.url, "127.0.0.2"), "grace@new.example").status == 200
        assert login(Browser(live.url, "127.0.0.2"), "grace@old.example").status == 401


def test_unverified_accounts_can_be_read_only(factory, tmp_path, smtp):
    app, port = make_site(factory, tmp_path, smtp, unverified="read_only")
    with LiveServer(app, port=port) as live:
        reader = Browser(live.url, "127.0.0.2")
        assert register(reader, "reader@example.com").status == 201
        assert reader.get("/posts", headers=JSON).status == 200
        refused = post(reader, "/posts")
        assert refused.status == 403 and refused.json["error"]["reason"] == "unverified"
        follow(reader, links_in(smtp.inbox.wait_for("reader@example.com")[0])[0])
        assert post(reader, "/posts").status == 200


def test_a_stale_sign_in_is_refused_by_fresh_login_required(site, smtp):
    user = Browser(site, "127.0.0.2")
    register(user, "fresh@example.com")
    follow(user, links_in(smtp.inbox.wait_for("fresh@example.com")[0])[0])
    assert login(user, "fresh@example.com").status == 200
    assert post(user, "/danger").status == 200
    time.sleep(2.1)  # the view's window is one second
    stale = post(user, "/danger")
    assert stale.status == 401 and stale.json["error"]["reason"] == "reauthentication_required"
    form = user.get("/auth/reauthenticate?next=/", headers=HTML)
    assert form.status == 200 and "fresh@example.com" in form.text
    wrong = post(user, "/auth/reauthenticate", {"password": "not it"})
    assert wrong.status == 401
    assert post(user, "/auth/reauthenticate", {"password": PASSWORD}).status == 200
    assert post(user, "/danger").status == 200


def test_an_app_with_verification_and_no_sender_refuses_to_start(factory, tmp_path):
    manifest = auth_manifest(SLUG)
    manifest["auth"]["users"]["require_verification"] = True
    write(tmp_path, manifest)
    with pytest.raises(ConfigurationError, match="MDB_EMAIL_VERIFICATION_SENDER"):
        factory(MDB(), **auth_config(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG=SLUG,
                                     MDB_EXTERNAL_URL="https://x.example"))  # fmt: skip
