"""CORS from each app's manifest ``cors`` block, preflight included.

The block (see the manifest docs)::

    "cors": {"enabled": true, "allow_origins": ["https://app.example.com"],
             "allow_methods": ["GET", "POST"], "allow_headers": ["Content-Type"],
             "expose_headers": [], "allow_credentials": false, "max_age": 600}

The manifest's schema validates it and fills its defaults
(:class:`~mdb_sync.manifest.model.CorsSection`); :class:`CorsPolicy` is what requests are
checked against. Origins are exact (``scheme://host[:port]``, compared case-insensitively,
default ports dropped); ``"*"`` is allowed only without credentials, since a wildcard with
credentials would let any site read a user's data with their cookies. An app without a
``cors`` block answers no CORS headers (same-origin only). A refused preflight gets 403
without CORS headers; an actual request from an origin not allowed is served without them,
so the browser withholds the response. The policy is also what websocket endpoints use to
check ``Origin`` (:meth:`CorsPolicy.allows`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, request

from mdb_sync.deprecation import deprecated
from mdb_sync.exceptions import ConfigurationError
from mdb_sync.manifest.model import CorsSection, as_manifest
from mdb_sync.manifest.origins import TOKEN_RE, normalize_origin
from mdb_sync.manifest.sections import load_section

from .binding import Binding, current_binding
from .request_state import current_state
from .state import SlugState

log = logging.getLogger("flask_mdb")

#: Request headers a browser may send cross-origin without their being listed.
_SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language"})

__all__ = ["CorsPolicy", "add_cors_headers", "handle_preflight", "normalize_origin", "policy_for"]


@dataclass(frozen=True)
class CorsPolicy:
    """One app's CORS rules (build it with :meth:`from_section`)."""

    origins: frozenset[str]
    any_origin: bool
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    any_header: bool
    expose_headers: tuple[str, ...]
    credentials: bool
    max_age: int

    @classmethod
    def from_section(cls, section: CorsSection | None) -> CorsPolicy | None:
        """The policy of a typed ``cors`` block (``manifest.cors``); None when absent or
        disabled."""
        if section is None or not section.enabled:
            return None
        return cls(
            origins=frozenset(o for o in section.allow_origins if o != "*"),
            any_origin="*" in section.allow_origins,
            methods=section.allow_methods,
            headers=tuple(h for h in section.allow_headers if h != "*"),
            any_header="*" in section.allow_headers,
            expose_headers=section.expose_headers,
            credentials=section.allow_credentials,
            max_age=section.max_age,
        )

    @classmethod
    @deprecated("CorsPolicy.from_section(manifest.cors)")
    def from_manifest(cls, block: Any, where: str = "cors") -> CorsPolicy | None:
        """The policy of a ``cors`` block, checked by the manifest's schema
        (:class:`ConfigurationError` naming the bad path under ``where``)."""
        return cls.from_section(load_section("cors", block, lenient=False, label=where))

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
            refused = [h for h in requested if not TOKEN_RE.fullmatch(h)]
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


# --- request hooks ------------------------------------------------------------------------------


def _build_policy(slug_state: SlugState) -> CorsPolicy | None:
    try:
        return CorsPolicy.from_section(as_manifest(slug_state.manifest).cors)
    except ConfigurationError as exc:  # a stored block this release finds invalid: fail closed
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
