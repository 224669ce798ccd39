"""The wire form of a realtime message: JSON text, encoded once per broadcast.

A message is encoded when it is published — not per connection, and not again in the
processes that receive it — so every client of every process gets the same bytes, an
unencodable value fails in the publisher's call (not later on a listener thread), and
BSON never reshapes it on the way (tuples, tz-aware datetimes and ``Decimal`` survive as the
publisher meant them). BSON values read from MongoDB are rendered as ``flask_mdb``'s JSON
provider renders them: ``ObjectId`` as its hex string, ``datetime`` as ISO 8601 UTC with a
``Z``, ``Decimal128``/``Decimal`` as exact decimal strings, UUIDs as strings, bytes as base64.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import uuid
from typing import Any

from bson import DBRef, Decimal128, ObjectId, Timestamp
from bson.binary import UUID_SUBTYPE, Binary

from ..exceptions import InvalidMessageError, ResourceLimitExceeded


def _utc_iso(value: _dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, _dt.datetime):
        return _utc_iso(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, Decimal128 | decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return str(value.as_uuid())
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, DBRef):
        return value.as_doc().to_dict()
    if isinstance(value, Timestamp):
        return {"t": value.time, "i": value.inc}
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"a value of type {type(value).__name__} cannot be sent as JSON")


def encode_message(message: Any, max_bytes: int | None = None) -> str:
    """``message`` as compact JSON text.

    Raises :class:`~mdb_sync.exceptions.InvalidMessageError` for a value JSON cannot carry
    (an arbitrary object, NaN or infinity, a non-string key) and
    :class:`~mdb_sync.exceptions.ResourceLimitExceeded` when the text is longer than
    ``max_bytes`` UTF-8 bytes.
    """
    try:
        text = json.dumps(
            message, default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(f"the message cannot be sent as JSON: {exc}") from exc
    if max_bytes is not None and len(text) * 4 > max_bytes:  # cheap bound before encoding
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise ResourceLimitExceeded(
                f"the message is {size} bytes of JSON, more than the {max_bytes} allowed",
                context={"size": size, "limit": max_bytes},
            )
    return text
