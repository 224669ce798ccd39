"""CORS from each app's manifest ``cors`` block, preflight included.

The block (see the manifest docs)::

    "cors": {"enabled": true, "allow_origins": ["https://app.example.com"],
             "allow_methods": ["GET", "POST"], "allow_headers": ["Content-Type"],
             "expose_headers": [], "allow_credentials": false, "max_age": 600}

Origins are exact (``scheme://host[:port]``, compared case-insensitively, default ports
dropped); ``"*"`` is allowed only without credentials, since a wildcard with credentials
would let any site read a user's data with their cookies. An app without a ``cors`` block
answers no CORS headers (same-origin only). A refused preflight gets 403 without CORS
headers; an actual request from an origin not allowed is served without them, so the
browser withholds the response. The policy is also what websocket endpoints use to check
``Origin`` (:meth:`CorsPolicy.allows`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, request

from mdb_sync.exceptions import ConfigurationError

from .binding import Binding, current_binding
from .request_state import current_state
from .state import SlugState

log = logging.getLogger("flask_mdb")

DEFAULT_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Headers allowed when the block lists none: what a JSON API with tokens and CSRF needs.
DEFAULT_HEADERS = ("Content-Type", "Authorization", "X-Requested-With", "X-CSRF-Token")
DEFAULT_MAX_AGE = 600
#: Request headers a browser may send cross-origin without their being listed.
_SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language"})
_KEYS = frozenset(
    {
        "enabled",
        "allow_origins",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "allow_credentials",
        "max_age",
    }
)
_ORIGIN_RE = re.compile(
    r"([a-z][a-z0-9+.\-]*)://([a-z0-9\-._~%]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?", re.IGNORECASE
)
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None if
    ``origin`` is not a serialized origin (``null``, a path, credentials, garbage)."""
    match = _ORIGIN_RE.fullmatch(origin.strip())
    if match is None:
        return None
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class CorsPolicy:
    """One app's CORS rules, validated."""

    origins: frozenset[str]
    any_origin: bool
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    any_header: bool
    expose_headers: tuple[str, ...]
    credentials: bool
    max_age: int

    @classmethod
    def from_manifest(cls, block: Any, where: str = "cors") -> CorsPolicy | None:
        """The policy of a manifest's ``cors`` block; None when absent or disabled.

        Raises :class:`ConfigurationError` naming the bad path (``cors.allow_origins[1]``).
        """
        if block is None:
            return None
        if not isinstance(block, Mapping):
            raise _invalid(where, "must be an object")
        unknown = sorted(set(block) - _KEYS)
        if unknown:
            raise _invalid(
                f"{where}.{unknown[0]}", f"is not a cors key ({', '.join(sorted(_KEYS))})"
            )
        enabled = _flag(block, "enabled", True, where)
        credentials = _flag(block, "allow_credentials", False, where)
        if not enabled:
            return None
        origins: set[str] = set()
        any_origin = False
        for i, origin in enumerate(_strings(block, "allow_origins", (), where)):
            path = f"{where}.allow_origins[{i}]"
            if origin == "*":
                if credentials:
                    raise _invalid(
                        path, "'*' cannot be combined with allow_credentials: list origins"
                    )
                any_origin = True
                continue
            normalized = normalize_origin(origin)
            if normalized is None:
                raise _invalid(
                    path, f"{origin!r} is not an origin: use scheme://host[:port], no path"
                )
            origins.add(normalized)
        methods = _tokens(block, "allow_methods", DEFAULT_METHODS, where, credentials)
        headers = _tokens(block, "allow_headers", DEFAULT_HEADERS, where, credentials)
        expose = _tokens(block, "expose_headers", (), where, credentials)
        max_age = block.get("max_age", DEFAULT_MAX_AGE)
        if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0:
            raise _invalid(f"{where}.max_age", "must be a whole number of seconds >= 0")
        return cls(
            origins=frozenset(origins),
            any_origin=any_origin,
            methods=tuple(m.upper() for m in methods),
            headers=tuple(h for h in headers if h != "*"),
            any_header="*" in headers,
            expose_headers=expose,
            credentials=credentials,
            max_age=max_age,
        )

    def allows(self, origin: str | None) -> bool:
        """Whether a request from ``origin`` may read responses."""
        if not origin:
            return False
        if self.any_origin:
            return True
        normalized = normalize_origin(origin)
        return normalized is not None and normalized in self.origins

    def _origin_headers(self, origin: str) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": "*" if self.any_origin else origin}
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def response_headers(self, origin: str) -> dict[str, str]:
        """Headers of an actual response to an allowed ``origin``."""
        headers = self._origin_headers(origin)
        if self.expose_headers:
            headers["Access-Control-Expose-Headers"] = ", ".join(self.expose_headers)
        return headers

    def preflight(
        self, origin: str, method: str, request_headers: str | None
    ) -> tuple[dict[str, str] | None, str]:
        """``(headers, "")`` for an allowed preflight, ``(None, reason)`` for a refused one."""
        if not self.allows(origin):
            return None, f"origin {origin[:200]!r} is not allowed"
        if "*" not in self.methods and method.upper() not in self.methods:
            return None, f"method {method[:20]!r} is not allowed"
        requested = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
        if self.any_header:
            refused = [h for h in requested if not _TOKEN_RE.fullmatch(h)]
        else:
            allowed = {h.lower() for h in self.headers} | _SAFELISTED_HEADERS
            refused = [h for h in requested if h not in allowed]
        if refused:
            return None, f"header {refused[0][:100]!r} is not allowed"
        headers = self._origin_headers(origin)
        headers["Access-Control-Allow-Methods"] = ", ".join(self.methods)
        allow_headers = ", ".join(requested) if self.any_header else ", ".join(self.headers)
        if allow_headers:
            headers["Access-Control-Allow-Headers"] = allow_headers
        headers["Access-Control-Max-Age"] = str(self.max_age)
        return headers, ""


def _invalid(path: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"invalid manifest: {path} {message}", context={"path": path})


def _flag(block: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = block.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(f"{where}.{key}", "must be true or false")
    return value


def _strings(
    block: Mapping[str, Any], key: str, default: tuple[str, ...], where: str
) -> tuple[str, ...]:
    value = block.get(key, default)
    if not isinstance(value, list | tuple):
        raise _invalid(f"{where}.{key}", "must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _invalid(f"{where}.{key}[{i}]", "must be a non-empty string")
    return tuple(value)


def _tokens(
    block: Mapping[str, Any], key: str, default: tuple[str, ...], where: str, credentials: bool
) -> tuple[str, ...]:
    values = _strings(block, key, default, where)
    for i, value in enumerate(values):
        if value == "*":
            if credentials:
                raise _invalid(
                    f"{where}.{key}[{i}]", "'*' cannot be combined with allow_credentials"
                )
        elif not _TOKEN_RE.fullmatch(value):
            raise _invalid(f"{where}.{key}[{i}]", f"{value[:100]!r} is not a valid name")
    return values


# --- request hooks ------------------------------------------------------------------------------


def _build_policy(slug_state: SlugState) -> CorsPolicy | None:
    try:
        return CorsPolicy.from_manifest(slug_state.manifest.get("cors"))
    except ConfigurationError as exc:
        log.error(
            "app %r: CORS disabled, its manifest's cors block is invalid: %s", slug_state.slug, exc
        )
        return None


def policy_for(binding: Binding | None) -> CorsPolicy | None:
    """The CORS policy of the bound app, or None (no app, no block, or CORS off)."""
    if binding is None or binding.slug_state is None or not binding.state.config["MDB_CORS"]:
        return None
    return binding.state.per_slug(binding.slug_state, "cors", _build_policy)


def _is_preflight() -> bool:
    headers = request.headers
    return (
        request.method == "OPTIONS"
        and "Origin" in headers
        and "Access-Control-Request-Method" in headers
    )


def handle_preflight() -> Response | None:
    """``before_request`` (after binding): answer a CORS preflight for the bound app."""
    if not _is_preflight():
        return None
    policy = policy_for(current_binding())
    if policy is None:
        return None
    state = current_state()
    if state is not None:
        state.cors_done = True
    headers, reason = policy.preflight(
        request.headers["Origin"],
        request.headers["Access-Control-Request-Method"],
        request.headers.get("Access-Control-Request-Headers"),
    )
    if headers is None:
        response = jsonify(
            error={
                "status": 403,
                "type": "CORSError",
                "message": f"CORS preflight refused: {reason}",
            }
        )
        response.status_code = 403
    else:
        response = Response(status=204, headers=headers)
    response.vary.update(
        ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
    )
    return response


def add_cors_headers(response: Response) -> Response:
    """``after_request``: CORS headers on responses to allowed cross-origin requests."""
    state = current_state()
    if state is not None and state.cors_done:
        return response
    origin = request.headers.get("Origin")
    if not origin:
        return response
    policy = policy_for(current_binding())
    if policy is None:
        return response
    if not policy.any_origin:
        response.vary.add("Origin")
    if policy.allows(origin):
        for name, value in policy.response_headers(origin).items():
            response.headers.setdefault(name, value)
    return response
