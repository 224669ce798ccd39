"""Whether a Flask app gets auth, and the mark of views open to anonymous callers: what the
extension (:mod:`.extension`), the auth stack (:mod:`.auth`) and the websocket routes share,
below all three."""

from __future__ import annotations

from typing import Any

from .state import MDBState

#: Attribute of a view function that the auth route guard leaves open to anonymous callers
#: (set by ``flask_mdb.auth.public``, and on websocket endpoints, which authenticate by their
#: own manifest settings).
PUBLIC_ATTR = "_mdb_public"


def wants_auth(state: MDBState) -> bool:
    """``MDB_AUTH`` if set, else whether a configured manifest has ``auth`` or
    ``token_management``."""
    setting = state.config["MDB_AUTH"]
    if setting is not None:
        return bool(setting)
    return any(_has_auth(m) for m in state.manifests)


def _has_auth(manifest: dict[str, Any]) -> bool:
    return bool(manifest.get("auth")) or manifest.get("token_management") is not None
