"""Helpers of the auth tests: manifests, Flask apps with auth, a second server process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from flask import Flask

from flask_mdb.auth import get_current_user, login_required, require_permission, require_role

SECRET = "s3cret-for-tests-only-" + "x" * 20  # >= 32 bytes
FLASK_SECRET = "flask-secret-key-for-tests-" + "y" * 10
PASSWORD = "correct horse battery"
#: A cheap scrypt cost for tests that log in many times (the default is 32768).
FAST_HASH = 4096


def auth_manifest(slug: str, **overrides: Any) -> dict[str, Any]:
    """An app with users (registration open), tokens and a casbin policy."""
    manifest: dict[str, Any] = {
        "slug": slug,
        "name": slug,
        "auth": {
            "users": {"enabled": True, "allow_registration": True},
            "policy": {
                "required": True,
                "authorization": {
                    "model": "rbac",
                    "default_roles": ["user"],
                    "initial_policies": [
                        ["admin", "reports", "*"],
                        ["user", "reports", "read"],
                        ["user", "/tasks/:id", "write"],
                    ],
                },
            },
            "public_routes": ["/open", "/docs/*"],
        },
        "token_management": {
            "access_token_ttl": 300,
            "refresh_token_ttl": 3600,
            "security": {"rate_limiting": {"login": {"max_attempts": 50, "window_seconds": 60}}},
        },
    }
    for key, value in overrides.items():
        manifest[key] = value
    return manifest


def write(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / f"{manifest['slug']}.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def header_resolver(req: Any) -> str | None:
    return req.headers.get("X-App")


def auth_config(**config: Any) -> dict[str, Any]:
    base = {
        "SECRET_KEY": FLASK_SECRET,
        "MDB_JWT_SECRET": SECRET,
        "MDB_PASSWORD_HASH_COST": FAST_HASH,
        "MDB_AUTH_POLICY_RELOAD": 0,
    }
    base.update(config)
    return base


def add_views(app: Flask) -> Flask:
    """Views the tests call: protected, public, role- and permission-guarded."""

    @app.get("/whoami")
    def whoami() -> Any:
        user = get_current_user()
        return {"email": user.email if user else None, "via": user.via if user else None}

    @app.get("/open")
    def open_page() -> Any:
        return {"open": True}

    @app.get("/docs/intro")
    def docs() -> Any:
        return {"docs": True}

    @app.post("/echo")
    @login_required
    def echo() -> Any:
        return {"ok": True}

    @app.get("/admin")
    @require_role("admin")
    def admin() -> Any:
        return {"admin": True}

    @app.get("/reports")
    @require_permission("reports", "read")
    def reports() -> Any:
        return {"reports": True}

    @app.delete("/reports")
    @require_permission("reports", "delete")
    def delete_reports() -> Any:
        return {"deleted": True}

    return app


class BrowserClient:
    """A browser-like HTTP client of one app (``X-App``), keeping its cookies."""

    def __init__(self, base: str, slug: str) -> None:
        self.base, self.slug = base, slug
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def call(
        self, path: str, method: str = "GET", body: Any = None, **headers: str
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"X-App": self.slug, "Accept": "application/json", **headers},
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def csrf(self) -> str:
        status, body = self.call("/auth/csrf")
        assert status == 200, body
        return str(body["csrf_token"])
