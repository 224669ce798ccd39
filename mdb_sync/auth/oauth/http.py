"""Calls to identity providers, each bounded in time and size.

A provider is another party's server: it may be slow, down, or (its DNS, a proxy, a
compromised host) hostile. Every call here has a total deadline (not only a per-read socket
timeout, which a server trickling one byte at a time never trips), reads at most
:data:`MAX_RESPONSE_BYTES`, follows no redirect (a token or a secret is never re-sent to
wherever a 3xx points), and goes only to ``https`` URLs (plain ``http`` only to loopback).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ...manifest.schema_oauth import secure_url_problem
from .errors import ProviderUnavailable

#: The largest answer read from a provider (discovery, keys, tokens, user info, e-mails).
MAX_RESPONSE_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 10.0
USER_AGENT = "mdb-sync-oauth"


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ProviderUnavailable(f"{what} is not JSON") from exc


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is answered as it is: an error for the caller


_OPENER = urllib.request.build_opener(_NoRedirects())


def request(
    method: str,
    url: str,
    *,
    what: str,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Response:
    """One call; any status is returned (the caller decides), a failure to get an answer in
    ``timeout`` seconds or within ``max_bytes`` raises :class:`ProviderUnavailable` naming
    ``what`` ("the token endpoint of Google")."""
    problem = secure_url_problem(url)
    if problem:
        raise ProviderUnavailable(f"{what}: the URL {problem}")
    data = urlencode(form).encode() if form is not None else None
    sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    if data is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    deadline = time.monotonic() + timeout
    try:
        response = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        response = exc  # an answer with an error status: still read (bounded)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProviderUnavailable(f"{what} could not be reached ({reason})") from exc
    try:
        body = _read(response, deadline, max_bytes, what)
        status = int(getattr(response, "status", None) or response.getcode() or 0)
        content_type = str(response.headers.get("Content-Type") or "")
    finally:
        response.close()
    return Response(status, content_type.split(";")[0].strip().lower(), body)


def _read(response: Any, deadline: float, max_bytes: int, what: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ProviderUnavailable(f"{what} answered more than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderUnavailable(f"{what} took longer than the timeout")
        _set_timeout(response, remaining)
        try:
            chunk = response.read(min(65_536, max_bytes + 1 - size))
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable(f"{what}: the answer could not be read ({exc})") from exc
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ProviderUnavailable(f"{what} answered more than {max_bytes} bytes")
        chunks.append(chunk)


def _set_timeout(response: Any, seconds: float) -> None:
    """Shorten the socket's timeout to what is left of the deadline."""
    fp = getattr(response, "fp", None)
    raw = getattr(getattr(fp, "raw", None), "_sock", None)
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.settimeout(max(seconds, 0.001))


def get_json(
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """A GET whose answer must be 200 and JSON."""
    response = request("GET", url, what=what, headers=headers, timeout=timeout)
    if response.status != 200:
        raise ProviderUnavailable(f"{what} answered HTTP {response.status}")
    return response.json(what)
