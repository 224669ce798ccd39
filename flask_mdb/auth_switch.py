"""Whether a Flask app gets auth, decided without importing the auth stack (which needs the
``auth`` extra: pyjwt, pycasbin)."""

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
