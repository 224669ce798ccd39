"""One JSON rendering of BSON values, for everything that turns documents into JSON: Flask
responses (``flask_mdb``'s JSON provider) and realtime messages — so a document looks the same
whichever way it reaches a client.

``ObjectId`` -> its hex string; ``datetime`` -> ISO 8601 in UTC with a ``Z`` (naive datetimes
are UTC, as pymongo returns them); ``date`` -> ``YYYY-MM-DD``; ``Decimal128``/``Decimal`` ->
the exact decimal string (a JSON number would lose digits); UUIDs and UUID binaries -> the
UUID string; other binaries and ``bytes`` -> base64; ``DBRef`` -> ``{"$ref", "$id"}``;
``Timestamp`` -> ``{"t", "i"}``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import uuid
from typing import Any

from bson import DBRef, Decimal128, ObjectId, Timestamp
from bson.binary import UUID_SUBTYPE, Binary


def utc_iso(value: _dt.datetime) -> str:
    """``value`` as ISO 8601 in UTC with a ``Z`` (a naive datetime is taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


def bson_json_default(value: Any) -> Any:
    """``default`` hook for ``json.dumps``: the JSON form of a BSON value (see the module
    docstring); :class:`TypeError` for anything else, as ``json`` expects."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, _dt.datetime):
        return utc_iso(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, Decimal128 | decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return str(value.as_uuid())
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, DBRef):
        return value.as_doc().to_dict()
    if isinstance(value, Timestamp):
        return {"t": value.time, "i": value.inc}
    raise TypeError(f"a value of type {type(value).__name__} cannot be rendered as JSON")
