"""A platform of three apps on one engine, each served by its own Flask app and real WSGI
server (its own port: its own origin): the hub ``portal`` and its related apps ``shop`` and
``blog``. A browser (``raw_http.Browser``, one cookie jar shared by its tabs, as a browser
keeps cookies per host whatever the port) signs in at the hub and is handed off to the
others."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from auth_apps import auth_config, auth_manifest
from flask_apps import AppFactory, free_port

from flask_mdb.auth import fresh_login_required, get_current_user, login_required
from flask_mdb.testing import LiveServer

from .raw_http import Browser, Reply

HUB, SHOP, BLOG = "portal", "shop", "blog"
APPS = (HUB, SHOP, BLOG)
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def shared_manifest(slug: str, urls: dict[str, str], roles: list[str]) -> dict[str, Any]:
    """``slug`` as part of the platform: the hub lists the others, the others name it."""
    manifest = auth_manifest(slug)
    auth = manifest["auth"]
    auth["users"]["strategy"] = "global_users"
    auth["roles"] = roles
    auth["policy"]["authorization"]["default_roles"] = [roles[0]]
    auth["mode"] = "shared"
    auth["public_routes"] = [*auth["public_routes"], "/whoami"]
    limits = manifest["token_management"]["security"]["rate_limiting"]
    limits["platform"] = {"max_attempts": 1000, "window_seconds": 60}
    if slug == HUB:
        auth["related_apps"] = {s: f"{urls[s]}/auth" for s in APPS if s != HUB}
    else:
        auth["auth_hub_url"] = f"{urls[HUB]}/auth"
        auth["related_apps"] = {HUB: f"{urls[HUB]}/auth"}
    return manifest


@dataclass
class Platform:
    urls: dict[str, str]
    apps: dict[str, Any] = field(default_factory=dict)

    def tab(self, slug: str, jar: dict[str, str], source: str = "127.0.0.1") -> Browser:
        browser = Browser(self.urls[slug], source)
        browser.cookies = jar  # one browser: cookies per host, whatever the port
        return browser


def write_platform(directory: Path, urls: dict[str, str], **changes: Any) -> None:
    roles = {HUB: ["member", "staff"], SHOP: ["customer", "manager"], BLOG: ["reader", "editor"]}
    for slug in APPS:
        manifest = shared_manifest(slug, urls, roles[slug])
        for key, value in (changes.get(slug) or {}).items():
            manifest["auth"][key] = value
        (directory / f"{slug}.json").write_text(json.dumps(manifest), encoding="utf-8")


def add_platform_views(app: Any) -> None:
    @app.get("/whoami")
    def whoami() -> Any:
        user = get_current_user()
        if user is None:
            return {"user": None}
        return {
            "user": user.id,
            "email": user.email,
            "roles": user.roles,
            "app": user.app,
            "via": user.via,
            "profile": user.get("profile"),
            "login_count": user.get("login_count"),
        }

    @app.get("/private")
    @login_required
    def private() -> Any:
        return {"private": True}

    @app.post("/sensitive")
    @fresh_login_required
    def sensitive() -> Any:
        return {"done": True}


@contextlib.contextmanager
def platform(factory: AppFactory, directory: Path, **changes: Any) -> Iterator[Platform]:
    """The three apps served, each on its own port, sharing the test database."""
    ports = {slug: free_port() for slug in APPS}
    urls = {slug: f"http://127.0.0.1:{port}" for slug, port in ports.items()}
    write_platform(directory, urls, **changes)
    made = Platform(urls)
    with contextlib.ExitStack() as stack:
        for slug in APPS:
            app = factory(
                name=f"platform_{slug}",
                **auth_config(
                    MDB_MANIFESTS=str(directory), MDB_APP_SLUG=slug, MDB_EXTERNAL_URL=urls[slug]
                ),
            )
            add_platform_views(app)
            made.apps[slug] = app
            stack.enter_context(LiveServer(app, port=ports[slug]))
        yield made


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def start_sign_on(related: Browser, next_path: str = "/whoami") -> str:
    """At a related app: the hub's authorize URL it sends the browser to."""
    reply = related.get(f"/auth/platform/login?next={next_path}", headers=HTML)
    assert reply.status == 302, reply.text
    return str(reply.header("Location"))


def authorize(hub: Browser, authorize_url: str) -> Reply:
    return hub.get(path_of(authorize_url), headers=HTML)


def hand_off(hub: Browser, related: Browser, next_path: str = "/whoami") -> str:
    """A signed-in hub browser's way to ``related``: the callback URL carrying the code."""
    reply = authorize(hub, start_sign_on(related, next_path))
    assert reply.status == 302, reply.text
    return str(reply.header("Location"))


def sign_on(hub: Browser, related: Browser, next_path: str = "/whoami") -> Reply:
    """The whole hand-off; the related app's answer to the callback (303 to ``next``)."""
    return related.get(path_of(hand_off(hub, related, next_path)), headers=HTML)


def sign_in(browser: Browser, email: str, password: str) -> Reply:
    reply = browser.post(
        "/auth/login",
        json={"email": email, "password": password},
        headers={"X-CSRF-Token": browser.csrf(), **JSON},
    )
    assert reply.status == 200, reply.text
    return reply


def whoami(browser: Browser) -> Any:
    return browser.get("/whoami", headers=JSON).json
