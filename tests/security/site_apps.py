"""Flask apps for the web-facing attack tests: one app with users, tokens and (optionally)
password reset, served by a real threaded WSGI server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from auth_apps import PASSWORD, add_views, auth_config, auth_manifest, write
from flask import Flask
from flask_apps import AppFactory

from .raw_http import Browser

SLUG = "alice_app"
#: What the attack tests configure as the site's public address.
EXTERNAL_URL = "https://alice.example"


def site_manifest(slug: str = SLUG, *, reset: bool = True, reset_limit: int = 1000) -> dict:
    manifest = auth_manifest(slug)
    if reset:
        manifest["auth"]["users"]["password_reset"] = {"token_ttl_seconds": 600}
    limits = manifest["token_management"]["security"]["rate_limiting"]
    limits["reset"] = {"max_attempts": reset_limit, "window_seconds": 3600}
    limits["register"] = {"max_attempts": 1000, "window_seconds": 3600}
    limits["login"] = {"max_attempts": 1000, "window_seconds": 60}
    return manifest


def make_site(
    factory: AppFactory, directory: Path, manifest: dict | None = None, **config: Any
) -> Flask:
    """The app ``alice_app`` (bound by default) with the auth tests' views."""
    write(directory, manifest or site_manifest())
    settings = auth_config(MDB_MANIFESTS=str(directory), MDB_APP_SLUG=SLUG)
    settings.update(config)
    return add_views(factory(**settings))


class Outbox:
    """A password-reset sender standing for the user's own (SMTP-like: ``delay`` seconds per
    message), recording what it was asked to deliver."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sent: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, user: dict[str, Any], url: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.sent.append((user["email"], url))
            self.threads.add(threading.current_thread().name)

    def links_for(self, email: str) -> list[str]:
        with self._lock:
            return [url for to, url in self.sent if to == email]


def register(browser: Browser, email: str, password: str = PASSWORD) -> None:
    reply = browser.post(
        "/auth/register",
        json={"email": email, "password": password},
        headers={"X-CSRF-Token": browser.csrf()},
    )
    assert reply.status == 201, reply.text
