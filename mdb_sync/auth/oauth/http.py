"""Calls to identity providers, each bounded in time and size.

A provider is another party's server: it may be slow, down, or (its DNS, a proxy, a
compromised host) hostile. Every call here has a total deadline covering the name lookup,
the connection, TLS, the status line, headers and body (not only a per-read socket timeout,
which a server trickling one byte at a time never trips; :func:`mdb_sync.net_bounds.fetch`),
reads at most :data:`MAX_RESPONSE_BYTES`, follows no redirect (a token or a secret is never
re-sent to wherever a 3xx points), and goes only to ``https`` URLs (plain ``http`` only to
loopback).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ...exceptions import NetworkError
from ...manifest.schema_oauth import secure_url_problem
from ...net_bounds import fetch
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
    ``timeout`` seconds in all (see :func:`mdb_sync.net_bounds.fetch`) or within
    ``max_bytes`` raises :class:`ProviderUnavailable` naming ``what`` ("the token endpoint
    of Google")."""
    problem = secure_url_problem(url)
    if problem:
        raise ProviderUnavailable(f"{what}: the URL {problem}")
    data = urlencode(form).encode() if form is not None else None
    sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    if data is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        answer = fetch(
            url,
            what=what,
            timeout=timeout,
            max_bytes=max_bytes,
            method=method,
            data=data,
            headers=sent,
            follow_redirects=False,  # the 3xx is answered as it is: an error for the caller
        )
    except NetworkError as exc:
        raise ProviderUnavailable(str(exc)) from exc
    return Response(answer.status, answer.content_type, answer.body)


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
