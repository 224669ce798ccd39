"""The todo example's "Sign in with ..." in a real browser (headless Chromium driven by
Playwright) through the real test OpenID Connect provider of ``oidc_provider.py``: from the
space to its sign-in page, to the provider's consent page, back through the callback, signed
in — then signed out again."""

from __future__ import annotations

import re
import shutil

import pytest
from flask_apps import free_port
from oidc_provider import TestProvider
from playwright.sync_api import expect
from test_flask_browser import TODO, _config, _load_example, browser, page  # noqa: F401

from flask_mdb.testing import LiveServer

SECRET = "todo-client-secret-0123456789abcdefghij"


@pytest.fixture
def op():
    with TestProvider() as provider:
        yield provider


@pytest.fixture
def todo_with_sso(op, mongo_uri, db_name, tmp_path, monkeypatch):
    """The example served on a port chosen first (its public address must be known to the
    provider and to the app before it starts), configured through its environment."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    op.add_client(
        "todo",
        SECRET,
        [f"{base}/{s}/auth/oauth/sso/callback" for s in ("work", "home")],
        name="Todo",
    )
    monkeypatch.setenv("TODO_OIDC_ISSUER", op.url)
    monkeypatch.setenv("TODO_OIDC_CLIENT_ID", "todo")
    monkeypatch.setenv("TODO_OIDC_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("TODO_OIDC_LABEL", "Test ID")
    monkeypatch.setenv("TODO_OIDC_TRUST_EMAIL", "1")
    manifests = tmp_path / "manifests"
    shutil.copytree(TODO / "manifests", manifests)
    module = _load_example()
    app = module.create_app({**_config(mongo_uri, db_name, manifests), "MDB_EXTERNAL_URL": base})
    try:
        with LiveServer(app, port=port):
            yield base
    finally:
        module.mdb.shutdown(app)


def test_sign_in_with_the_test_provider_and_back_out(page, todo_with_sso, op):  # noqa: F811
    base = todo_with_sso
    op.add_user("grace", email="grace@example.com", name="Grace Hopper")
    page.goto(f"{base}/work/")
    expect(page).to_have_url(re.compile(r"/work/auth/login\?next=%2Fwork%2F$"))
    button = page.locator("#oauth-sso")
    expect(button).to_have_text("Sign in with Test ID")
    button.click()

    # At the provider: its consent page, for the todo app.
    expect(page).to_have_url(re.compile(re.escape(op.url) + r"/authorize\?"))
    expect(page.locator("#op-client")).to_contain_text("Todo wants to sign you in")
    page.fill("#op-login", "grace")
    page.click("#op-allow")

    # Back through the callback to the page asked for, signed in.
    expect(page).to_have_url(f"{base}/work/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#who")).to_have_text("grace@example.com")
    page.fill("#new-title", "Signed in through OpenID Connect")
    page.click("#add")
    expect(page.locator("#tasks .title")).to_have_text(["Signed in through OpenID Connect"])

    # The other space is another app: its own session, the same provider account.
    page.goto(f"{base}/home/")
    expect(page).to_have_url(re.compile(r"/home/auth/login"))
    page.click("#oauth-sso")
    page.fill("#op-login", "grace")
    page.click("#op-allow")
    expect(page).to_have_url(f"{base}/home/")
    expect(page.locator("#who")).to_have_text("grace@example.com")
    expect(page.locator("#tasks li")).to_have_count(0)

    # Out again: the space sends the browser back to its sign-in page.
    page.click("#logout")
    expect(page).to_have_url(f"{base}/")
    page.goto(f"{base}/home/")
    expect(page).to_have_url(re.compile(r"/home/auth/login"))


def test_one_sign_in_with_the_provider_serves_the_team_space_too(page, todo_with_sso, op):  # noqa: F811
    """The work space signs in through the test provider; the team space shares the work
    space's sign-on: it opens signed in, with no second visit to the provider, and "Sign out
    everywhere" there ends both sessions."""
    base = todo_with_sso
    op.add_user("linus", email="linus@example.com", name="Linus")
    page.goto(f"{base}/work/")
    page.click("#oauth-sso")
    expect(page).to_have_url(re.compile(re.escape(op.url) + r"/authorize\?"))
    page.fill("#op-login", "linus")
    page.click("#op-allow")
    expect(page).to_have_url(f"{base}/work/")
    expect(page.locator("#who")).to_have_text("linus@example.com")

    visits = []
    page.on("request", lambda request: visits.append(request.url))
    page.goto(f"{base}/team/")
    expect(page).to_have_url(f"{base}/team/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#who")).to_have_text("linus@example.com")
    assert not [url for url in visits if url.startswith(op.url)]  # the provider is not asked
    assert any("/work/auth/platform/authorize" in url for url in visits)
    page.fill("#new-title", "Shared sign-on works")
    page.click("#add")
    expect(page.locator("#tasks .title")).to_have_text(["Shared sign-on works"])

    page.click("#logout-everywhere")
    expect(page).to_have_url(f"{base}/")
    for space in ("work", "team"):
        page.goto(f"{base}/{space}/")
        expect(page).to_have_url(re.compile(r"/work/auth/login"))


def test_declining_at_the_provider_lands_on_the_sign_in_page_with_the_reason(
    page,  # noqa: F811
    todo_with_sso,
    op,
):
    base = todo_with_sso
    op.add_user("ada", email="ada@example.com")
    page.goto(f"{base}/work/auth/login")
    page.click("#oauth-sso")
    page.fill("#op-login", "ada")
    page.click("#op-deny")
    expect(page.locator("#auth-error")).to_contain_text("did not sign you in")
    page.goto(f"{base}/work/")
    expect(page).to_have_url(re.compile(r"/work/auth/login"))


def test_the_example_runs_without_a_provider(page, mongo_uri, db_name, tmp_path):  # noqa: F811
    manifests = tmp_path / "manifests"
    shutil.copytree(TODO / "manifests", manifests)
    module = _load_example()
    app = module.create_app(_config(mongo_uri, db_name, manifests))
    try:
        with LiveServer(app) as live:
            page.goto(f"{live.url}/work/auth/login")
            expect(page.locator("#sign-in")).to_be_visible()
            expect(page.locator(".oauth-sign-in")).to_have_count(0)
    finally:
        module.mdb.shutdown(app)
