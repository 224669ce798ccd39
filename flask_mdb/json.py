"""JSON for documents read from MongoDB: ``ObjectId``, ``datetime``, ``Decimal128`` and
other BSON types, which Flask's default provider refuses or renders unhelpfully.

Opt in with ``MDB_JSON_PROVIDER = True``, or set ``app.json_provider_class =
MDBJSONProvider`` yourself, or call :func:`bson_default` from your own provider's
``default``. The extension never replaces a custom provider silently.

Conversions: those of :mod:`mdb_sync.bson_json` (``ObjectId`` -> its hex string,
``datetime`` -> ISO 8601 in UTC with a ``Z``, ``Decimal128`` -> its exact decimal string,
...), the same realtime messages use; anything else goes to Flask's default.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.local import LocalProxy

from mdb_sync.bson_json import bson_json_default
from mdb_sync.exceptions import ConfigurationError


def bson_default(value: Any) -> Any:
    """``default`` hook for ``json.dumps``: BSON types first, then Flask's defaults."""
    if type(value) is LocalProxy:  # e.g. flask_mdb.current_app_slug
        return value._get_current_object()
    try:
        return bson_json_default(value)
    except TypeError:
        return DefaultJSONProvider.default(value)


class MDBJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with :func:`bson_default`."""

    default = staticmethod(bson_default)


def install_json_provider(app: Flask) -> None:
    """Give ``app`` the BSON-aware provider, refusing to replace a custom one."""
    current = app.json
    if isinstance(current, MDBJSONProvider):
        return
    if type(current) is not DefaultJSONProvider:
        raise ConfigurationError(
            f"MDB_JSON_PROVIDER is on, but the app already uses the custom JSON provider "
            f"{type(current).__qualname__}: subclass flask_mdb.MDBJSONProvider instead, or "
            "call flask_mdb.json.bson_default from its default(), and turn MDB_JSON_PROVIDER off",
            context={"option": "MDB_JSON_PROVIDER"},
        )
    provider = MDBJSONProvider(app)
    # Keep the settings the user made on the default provider.
    for attr in ("ensure_ascii", "sort_keys", "compact", "mimetype"):
        setattr(provider, attr, getattr(current, attr))
    app.json = provider
