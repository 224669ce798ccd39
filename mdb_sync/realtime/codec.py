"""The wire form of a realtime message: JSON text, encoded once per broadcast.

A message is encoded when it is published — not per connection, and not again in the
processes that receive it — so every client of every process gets the same bytes, an
unencodable value fails in the publisher's call (not later on a listener thread), and
BSON never reshapes it on the way (tuples, tz-aware datetimes and ``Decimal`` survive as the
publisher meant them). BSON values read from MongoDB are rendered by :mod:`mdb_sync.bson_json`, as
``flask_mdb``'s JSON provider renders them (``ObjectId`` as its hex string, ``datetime`` as ISO
8601 UTC with a ``Z``, decimals as exact strings, ...); sets become sorted lists.
"""

from __future__ import annotations

import json
from typing import Any

from ..bson_json import bson_json_default
from ..exceptions import InvalidMessageError, ResourceLimitExceeded


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    try:
        return bson_json_default(value)
    except TypeError:
        raise TypeError(f"a value of type {type(value).__name__} cannot be sent as JSON") from None


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
