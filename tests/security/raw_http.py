"""Real HTTP clients for the attack tests: ``http.client`` connections from a chosen loopback
address (``127.0.0.N``), sending whatever ``Host`` and ``X-Forwarded-*`` headers an attacker
likes, with a small cookie jar that follows ``Set-Cookie`` as a browser would."""

from __future__ import annotations

import http.client
import json as _json
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    elapsed: float
    set_cookies: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        return _json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def parse_set_cookies(message: http.client.HTTPMessage) -> dict[str, Any]:
    """``{name: Morsel}`` of every ``Set-Cookie`` header (attributes included)."""
    out: dict[str, Any] = {}
    for value in message.get_all("Set-Cookie") or []:
        jar: SimpleCookie = SimpleCookie()
        jar.load(value)
        for name, morsel in jar.items():
            morsel._raw = value  # type: ignore[attr-defined]  # the header as sent, for asserts
            out[name] = morsel
    return out


def _expired(morsel: Any) -> bool:
    if morsel["max-age"] not in ("", None):
        return int(morsel["max-age"]) <= 0
    expires = morsel["expires"]
    return bool(expires) and "1970" in expires


class Browser:
    """One client: its own loopback source address and cookie jar.

    :param base_url: the live server (``http://127.0.0.1:PORT``).
    :param source: the client's address (any ``127.0.0.N`` on Linux).
    :param headers: headers sent with every request (``Host``, ``X-App``, ...).
    """

    def __init__(
        self, base_url: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.source = source
        self.headers = dict(headers or {})
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        cookies: bool = True,
    ) -> Reply:
        sent = {**self.headers, **(headers or {})}
        body: bytes | None = None
        if json is not None:
            body = _json.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        elif form is not None:
            body = urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if cookies and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=30, source_address=(self.source, 0)
        )
        try:
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
        reply = Reply(response.status, response.headers, data, elapsed)
        reply.set_cookies = parse_set_cookies(response.headers)
        for name, morsel in reply.set_cookies.items():
            if _expired(morsel):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value
        return reply

    def get(self, path: str, **options: Any) -> Reply:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> Reply:
        return self.request("POST", path, **options)

    def csrf(self, prefix: str = "/auth") -> str:
        reply = self.get(f"{prefix}/csrf", headers={"Accept": "application/json"})
        assert reply.status == 200, reply.text
        return str(reply.json["csrf_token"])


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "the condition") -> None:
    """Poll ``predicate()`` until true (the background sender runs outside the request)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.02)
