"""The on-disk layout of an export: mongodump's directory format, plus one summary file.

::

    DIR/<app slug>/<collection>.bson            the app's documents, concatenated BSON
    DIR/<app slug>/<collection>.metadata.json   {"options", "indexes", "uuid",
                                                 "collectionName", "type"} (canonical
                                                 Extended JSON, as mongodump writes it)
    DIR/<app slug>/mdb-export.json              the app's manifest and the export's counts

The database directory is named after the app and the files after its *logical* collection
names (``tasks``, not ``my_app_tasks``), so ``mongorestore DIR`` gives a standalone database
``my_app`` with collections ``tasks``...: what a graduating app wants. mongorestore skips
``mdb-export.json`` ("don't know what to do with file"); ``mdb import`` reads it.
"""

from __future__ import annotations

import datetime as _dt
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bson import json_util
from bson.binary import Binary

from ..exceptions import PortabilityError

BSON_SUFFIX = ".bson"
METADATA_SUFFIX = ".metadata.json"
SUMMARY_FILE = "mdb-export.json"
FORMAT = "mdb-sync-export"
FORMAT_VERSION = 1

#: Collection options an import recreates. Anything else (``viewOn``/``pipeline`` above
#: all: a view over another app's collection) is refused, not passed to ``create``.
ALLOWED_OPTIONS = frozenset(
    {
        "capped",
        "size",
        "max",
        "validator",
        "validationLevel",
        "validationAction",
        "collation",
        "timeseries",
        "expireAfterSeconds",
        "clusteredIndex",
        "changeStreamPreAndPostImages",
        "storageEngine",
        "indexOptionDefaults",
    }
)
#: Index fields dropped on import: the namespace of old servers, the obsolete build flag.
DROPPED_INDEX_FIELDS = frozenset({"ns", "background"})
#: Largest ``.metadata.json`` or summary file read (they are small; this bounds memory).
MAX_JSON_BYTES = 16 * 1024 * 1024


def refuse_links(app_dir: Path) -> None:
    """Refuse a dump directory holding symbolic links: an import reads only the files in
    the directory itself, never what a link points to (another app's export, a secret)."""
    links = sorted(entry.name for entry in os.scandir(app_dir) if entry.is_symlink())
    if links:
        raise PortabilityError(
            f"{app_dir} holds symbolic link(s) {', '.join(links)}: an import never follows "
            "links; copy the files themselves into the dump directory",
            context={"path": str(app_dir), "links": links},
        )


def open_dump_file(path: Path) -> Any:
    """``path`` opened for reading in binary mode: a regular file, never through a symbolic
    link (``O_NOFOLLOW``: a link swapped in after :func:`refuse_links` is refused too)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PortabilityError(
            f"cannot open {path}: {exc.strerror or exc} (symbolic links are not followed)",
            context={"file": str(path)},
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PortabilityError(f"{path} is not a regular file", context={"file": str(path)})
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _read_text(path: Path) -> str:
    with open_dump_file(path) as fh:
        if os.fstat(fh.fileno()).st_size > MAX_JSON_BYTES:
            raise PortabilityError(
                f"{path} is larger than {MAX_JSON_BYTES} bytes", context={"file": str(path)}
            )
        data = fh.read()
    return str(data.decode("utf-8"))


def uuid_hex(info: Mapping[str, Any]) -> str | None:
    """The collection UUID of a ``listCollections`` entry as mongodump writes it (32 hex)."""
    uuid = (info.get("info") or {}).get("uuid")
    if isinstance(uuid, Binary):
        return bytes(uuid).hex()
    return None


def metadata_document(
    collection: str, options: Mapping[str, Any], indexes: list[Any], uuid: str | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"options": dict(options), "indexes": indexes}
    if uuid:
        metadata["uuid"] = uuid
    metadata["collectionName"] = collection
    metadata["type"] = "collection"
    return metadata


def write_json(path: Path, document: Any, canonical: bool = True) -> None:
    options = json_util.CANONICAL_JSON_OPTIONS if canonical else json_util.RELAXED_JSON_OPTIONS
    text = json_util.dumps(document, json_options=options)
    path.write_text(text, encoding="utf-8")


def read_metadata(path: Path) -> dict[str, Any]:
    """A ``.metadata.json`` file, checked: ``options`` an object, ``indexes`` a list of
    index specs each with a ``key`` object and a ``name``."""
    try:
        document = json_util.loads(_read_text(path))
    except (OSError, ValueError, TypeError) as exc:
        raise PortabilityError(f"cannot read {path}: {exc}", context={"file": str(path)}) from exc
    if not isinstance(document, Mapping):
        raise PortabilityError(f"{path} is not a JSON object", context={"file": str(path)})
    options = document.get("options") or {}
    indexes = document.get("indexes") or []
    if not isinstance(options, Mapping) or not isinstance(indexes, list):
        raise PortabilityError(
            f"{path}: 'options' must be an object and 'indexes' a list",
            context={"file": str(path)},
        )
    refused = sorted(set(options) - ALLOWED_OPTIONS)
    if refused:
        raise PortabilityError(
            f"{path}: collection option(s) {', '.join(refused)} cannot be imported "
            f"(allowed: {', '.join(sorted(ALLOWED_OPTIONS))})",
            context={"file": str(path), "options": refused},
        )
    for position, spec in enumerate(indexes):
        if (
            not isinstance(spec, Mapping)
            or not isinstance(spec.get("key"), Mapping)
            or not spec["key"]
            or not isinstance(spec.get("name"), str)
        ):
            raise PortabilityError(
                f"{path}: index {position} needs a non-empty 'key' object and a 'name'",
                context={"file": str(path), "index": position},
            )
    return {"options": dict(options), "indexes": [dict(spec) for spec in indexes]}


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **summary,
    }
    write_json(path, document, canonical=False)


def read_summary(app_dir: Path) -> dict[str, Any] | None:
    """The export's ``mdb-export.json``, or None for a plain mongodump directory."""
    path = app_dir / SUMMARY_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        document = json_util.loads(_read_text(path))
    except (OSError, ValueError, TypeError) as exc:
        raise PortabilityError(f"cannot read {path}: {exc}", context={"file": str(path)}) from exc
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise PortabilityError(
            f"{path} is not an mdb-sync export summary", context={"file": str(path)}
        )
    if document.get("version", 0) > FORMAT_VERSION:
        raise PortabilityError(
            f"{path} was written by a newer mdb-sync (format {document.get('version')})",
            context={"file": str(path)},
        )
    return dict(document)


def collection_files(app_dir: Path) -> list[str]:
    """Collection names found in ``app_dir`` (from ``.bson`` and ``.metadata.json`` files),
    sorted."""
    names = set()
    for entry in os.scandir(app_dir):
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            continue
        if entry.name.endswith(METADATA_SUFFIX):
            names.add(entry.name[: -len(METADATA_SUFFIX)])
        elif entry.name.endswith(BSON_SUFFIX):
            names.add(entry.name[: -len(BSON_SUFFIX)])
    return sorted(names)
