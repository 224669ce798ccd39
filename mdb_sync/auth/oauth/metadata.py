"""Discovery documents and signing keys of OpenID Connect providers, cached per process.

Fetching a provider's discovery document and key set (JWKS) on every sign-in would make each
sign-in wait on two extra round trips and let a burst of sign-ins hammer the provider; so both
are cached by URL for :attr:`ProviderCache.ttl` seconds, in a bounded LRU (a process serving
many apps with many issuers keeps at most :attr:`ProviderCache.max_entries` of each).

Providers rotate keys: an ID token signed with a key id (``kid``) the cached set lacks makes
the set be fetched again — but at most once per :attr:`ProviderCache.kid_refresh_interval`
seconds per key set, so a stream of tokens with made-up key ids cannot make this process
hammer the provider. One fetch per URL runs at a time; other threads wait for it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeGuard

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ...manifest.schema_oauth import secure_url_problem
from . import http
from .errors import ProviderUnavailable

#: Keys read from one key set at most (a real provider publishes a handful).
MAX_KEYS = 50
#: Discovery endpoints this package needs; each must be a secure URL.
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
OPTIONAL_ENDPOINTS = ("userinfo_endpoint", "end_session_endpoint")


@dataclass
class _Entry:
    #: A checked discovery document (key ``("discovery", url)``) or a key set (``("jwks",
    #: url)``).
    value: dict[str, Any] | KeySet
    fetched_at: float

    def document(self) -> dict[str, Any]:
        if isinstance(self.value, KeySet):
            raise TypeError("a key set cached as a discovery document")
        return self.value

    def key_set(self) -> KeySet:
        if not isinstance(self.value, KeySet):
            raise TypeError("a discovery document cached as a key set")
        return self.value


class ProviderCache:
    """Discovery documents and key sets by URL (thread-safe, bounded, with TTL)."""

    def __init__(
        self, *, max_entries: int = 64, ttl: float = 3600.0, kid_refresh_interval: float = 60.0
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.kid_refresh_interval = kid_refresh_interval
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._fetch_locks: dict[tuple[str, str], threading.Lock] = {}

    def after_fork_in_child(self) -> None:
        """A forked child gets fresh locks (one held by another thread at the fork would
        never be released there); the cached documents stay valid."""
        self._lock = threading.Lock()
        self._fetch_locks = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _get(self, key: tuple[str, str]) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _put(self, key: tuple[str, str], value: dict[str, Any] | KeySet) -> _Entry:
        entry = _Entry(value, time.monotonic())
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                old, _ = self._entries.popitem(last=False)
                self._fetch_locks.pop(old, None)
        return entry

    def _fetch_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault(key, threading.Lock())

    def _fresh(self, entry: _Entry | None) -> TypeGuard[_Entry]:
        return entry is not None and time.monotonic() - entry.fetched_at < self.ttl

    # --- discovery ------------------------------------------------------------------------------

    def discovery(
        self, url: str, *, what: str, timeout: float = http.DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """The provider's discovery document (checked: an object, with secure endpoint URLs
        and an ``issuer``)."""
        key = ("discovery", url)
        entry = self._get(key)
        if self._fresh(entry):
            return entry.document()
        with self._fetch_lock(key):
            entry = self._get(key)
            if self._fresh(entry):
                return entry.document()
            doc = http.get_json(url, what=f"the discovery document of {what}", timeout=timeout)
            return self._put(key, check_discovery(doc, what)).document()

    # --- keys ------------------------------------------------------------------------------------

    def keys(
        self,
        jwks_uri: str,
        *,
        what: str,
        kid: str | None = None,
        timeout: float = http.DEFAULT_TIMEOUT,
    ) -> KeySet:
        """The key set at ``jwks_uri``; fetched again when it lacks ``kid`` — at most once
        per :attr:`kid_refresh_interval` seconds."""
        key = ("jwks", jwks_uri)
        entry = self._get(key)
        if self._fresh(entry) and (kid is None or _has_kid(entry.key_set(), kid)):
            return entry.key_set()
        with self._fetch_lock(key):
            entry = self._get(key)
            if self._fresh(entry):
                if kid is None or _has_kid(entry.key_set(), kid):
                    return entry.key_set()
                if time.monotonic() - entry.fetched_at < self.kid_refresh_interval:
                    return entry.key_set()  # too soon: no refetch
            doc = http.get_json(jwks_uri, what=f"the signing keys of {what}", timeout=timeout)
            return self._put(key, import_keys(doc, what)).key_set()


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


def check_discovery(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProviderUnavailable(f"the discovery document of {what} is not a JSON object")
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or not issuer or len(issuer) > 2048:
        raise ProviderUnavailable(f"the discovery document of {what} names no issuer")
    for name in REQUIRED_ENDPOINTS + OPTIONAL_ENDPOINTS:
        value = doc.get(name)
        if value is None and name in OPTIONAL_ENDPOINTS:
            continue
        problem = secure_url_problem(value) if isinstance(value, str) else "is missing"
        if problem:
            raise ProviderUnavailable(f"the discovery document of {what}: {name} {problem}")
    return doc


def import_keys(doc: Any, what: str) -> KeySet:
    """The signature keys of a JWKS document (``use: enc`` keys are left out)."""
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ProviderUnavailable(f"the signing keys of {what} are not a JWK set")
    usable = [k for k in keys[:MAX_KEYS] if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    try:
        return KeySet.import_key_set({"keys": usable})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProviderUnavailable(f"the signing keys of {what} could not be read") from exc


#: The cache every sign-in of this process uses.
DEFAULT_CACHE = ProviderCache()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=DEFAULT_CACHE.after_fork_in_child)
