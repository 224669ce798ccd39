"""Raw BSON: count and split the documents of a raw batch, read concatenated documents from
a dump file, and set or remove the top-level ``app_id`` of a document without decoding it.

Pure functions over bytes (no I/O but the stream it is given), in the lowest layers: the
sandbox counts the documents of columnar reads' raw batches with it
(:mod:`mdb_sync.scoping.frames`) and export/import (:mod:`mdb_sync.portability`) rewrites
dumps with it.

Working on bytes is what makes the round trip lossless: decoding to Python and encoding back
would turn deprecated types (symbol, undefined, DBPointer) into others, reorder DBRef fields
and trip over dates outside Python's range. Here every byte except the ``app_id`` element is
copied as it is, and walking the top-level elements doubles as a structural check of input
that may come from anywhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from .exceptions import PortabilityError

#: Largest document accepted from a dump file: the server's 16 MiB limit plus the room
#: mongod itself allows for internal documents.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 + 16 * 1024

_INT32 = struct.Struct("<i")
_FIXED_SIZES = {
    0x01: 8,  # double
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0xFF: 0,  # min key
    0x7F: 0,  # max key
}
_STRING_TYPES = frozenset({0x02, 0x0D, 0x0E})  # string, JavaScript code, symbol
_LENGTH_PREFIXED = frozenset({0x03, 0x04, 0x0F})  # document, array, code with scope


class MalformedBSON(PortabilityError):
    """Bytes that are not a well-formed BSON document."""


def _int32(data: bytes, pos: int) -> int:
    if pos + 4 > len(data):
        raise MalformedBSON("truncated length")
    return int(_INT32.unpack_from(data, pos)[0])


def _cstring_end(data: bytes, pos: int, end: int) -> int:
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise MalformedBSON("unterminated name")
    return nul


def _value_end(data: bytes, kind: int, pos: int, end: int) -> int:
    if kind in _FIXED_SIZES:
        stop = pos + _FIXED_SIZES[kind]
    elif kind in _STRING_TYPES:
        size = _int32(data, pos)
        if size < 1:
            raise MalformedBSON("bad string length")
        stop = pos + 4 + size
    elif kind in _LENGTH_PREFIXED:
        size = _int32(data, pos)
        if size < 5:
            raise MalformedBSON("bad embedded document length")
        stop = pos + size
    elif kind == 0x05:  # binary: length, subtype, bytes
        size = _int32(data, pos)
        if size < 0:
            raise MalformedBSON("bad binary length")
        stop = pos + 5 + size
    elif kind == 0x0B:  # regex: pattern and options, two C strings
        stop = _cstring_end(data, _cstring_end(data, pos, end) + 1, end) + 1
    elif kind == 0x0C:  # DBPointer: string, then an ObjectId
        size = _int32(data, pos)
        if size < 1:
            raise MalformedBSON("bad DBPointer length")
        stop = pos + 4 + size + 12
    else:
        raise MalformedBSON(f"unknown element type 0x{kind:02x}")
    if stop > end:
        raise MalformedBSON("element runs past the end of the document")
    return stop


def elements(document: bytes) -> Iterator[tuple[bytes, int, int]]:
    """``(name, start, stop)`` of each top-level element of ``document`` (checked)."""
    size = len(document)
    if size < 5 or _int32(document, 0) != size or document[-1] != 0:
        raise MalformedBSON("bad document length or terminator")
    end = size - 1
    pos = 4
    while pos < end:
        kind = document[pos]
        name_end = _cstring_end(document, pos + 1, end)
        stop = _value_end(document, kind, name_end + 1, end)
        yield document[pos + 1 : name_end], pos, stop
        pos = stop
    if pos != end:
        raise MalformedBSON("elements do not fill the document")


def _string_element(name: bytes, value: str) -> bytes:
    encoded = value.encode("utf-8") + b"\x00"
    return b"\x02" + name + b"\x00" + _INT32.pack(len(encoded)) + encoded


def set_field(document: bytes, name: str, value: str | None) -> bytes:
    """``document`` with its top-level string field ``name`` set to ``value`` (in place of
    the old element, or appended) or removed (``value=None``); all other bytes unchanged."""
    key = name.encode("utf-8")
    parts = []
    found = False
    for element_name, start, stop in elements(document):
        if element_name == key:
            found = True
            if value is not None:
                parts.append(_string_element(key, value))
        else:
            parts.append(document[start:stop])
    if not found and value is not None:
        parts.append(_string_element(key, value))
    body = b"".join(parts)
    return _INT32.pack(len(body) + 5) + body + b"\x00"


def iter_file(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """Documents of a ``.bson`` dump file, one at a time (constant memory). Raises
    :class:`MalformedBSON` naming ``source`` and the document's position."""
    index = 0
    while True:
        header = stream.read(4)
        if not header:
            return
        where = f"{source}, document {index + 1}"
        if len(header) < 4:
            raise MalformedBSON(f"truncated document length in {where}")
        size = int(_INT32.unpack(header)[0])
        if size < 5 or size > MAX_DOCUMENT_BYTES:
            raise MalformedBSON(f"document length {size} out of range in {where}")
        rest = stream.read(size - 4)
        if len(rest) != size - 4:
            raise MalformedBSON(f"truncated document in {where}")
        yield header + rest
        index += 1


def count_documents(batch: bytes) -> int:
    """Number of documents in ``batch``, a concatenation of BSON documents."""
    count = pos = 0
    total = len(batch)
    while pos < total:
        pos += _int32(batch, pos)
        count += 1
    return count


def split(batch: bytes) -> list[bytes]:
    """The documents of ``batch``, a concatenation of BSON documents (as the server sends
    them in a raw batch)."""
    documents = []
    pos, total = 0, len(batch)
    while pos < total:
        size = _int32(batch, pos)
        if size < 5 or pos + size > total:
            raise MalformedBSON("bad document length in a batch")
        documents.append(batch[pos : pos + size])
        pos += size
    return documents
