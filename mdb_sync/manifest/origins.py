"""Web origins (``scheme://host[:port]``) as a manifest's ``cors`` block and the websocket
``Origin`` check compare them: lower case, without a default port."""

from __future__ import annotations

import re

_ORIGIN_RE = re.compile(
    r"([a-z][a-z0-9+.\-]*)://([a-z0-9\-._~%]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?", re.IGNORECASE
)
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
#: An HTTP token (RFC 9110): a method or header name.
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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


__all__ = ["TOKEN_RE", "normalize_origin"]
