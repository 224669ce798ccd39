"""Export one app: its collections, documents and indexes, in mongodump's layout.

Documents stream from the server as raw BSON batches (``find_raw_batches``) straight into
the ``.bson`` files: constant memory however large the collection, and byte-for-byte what the
server stores, so every BSON type and every ``_id`` survives. Only documents carrying the
app's ``app_id`` are written (the seeds' ``mongodump --query='{"app_id": ...}'``).

The export is written to a staging directory next to the target (``.<slug>.export-<hex>``,
which names the process writing it) and renamed into place at the end, so a failed export
leaves nothing behind and never a half-written dump. A killed export's staging directory
is removed by the next export of the same app into the same directory, or listed and
removed by ``mdb cleanup --exports DIR`` (:mod:`.leftovers`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .. import bsonraw
from ..auth.demo_users import hash_demo_passwords
from ..exceptions import AppNotFoundError, PortabilityError
from ..scoping.names import logical_name, validate_slug
from . import layout, leftovers

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

#: ``progress(documents, bytes)`` is called after each batch written or read.
Progress = Callable[[int, int], None]


def app_collections(engine: MongoDBEngine, slug: str) -> list[dict[str, Any]]:
    """``listCollections`` entries of the physical collections owned by ``slug``."""
    prefix = slug + "_"
    owned: list[dict[str, Any]] = []
    for info in engine.storage.database().list_collections():
        name = info["name"]
        if not name.startswith(prefix) or logical_name(slug, name) is None:
            continue
        owner = engine.registry.slug_for_physical(name)
        if owner not in (slug, None):  # another registered app's ("my" vs "my_app")
            continue
        owned.append(dict(info))
    return sorted(owned, key=lambda info: info["name"])


def count_app_documents(engine: MongoDBEngine, slug: str) -> int:
    """Documents an export of ``slug`` would write (for a progress bar's length)."""
    return sum(
        engine.storage.collection(info["name"]).count_documents({"app_id": slug})
        for info in app_collections(engine, slug)
        if info.get("type", "collection") == "collection"
    )


def export_app(
    engine: MongoDBEngine,
    slug: str,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Write app ``slug`` to ``directory/<slug>/`` (see :mod:`mdb_sync.portability.layout`).

    Raises :class:`AppNotFoundError` when the app is neither registered nor has any
    collection, and :class:`PortabilityError` when ``directory/<slug>`` already exists
    (pass ``overwrite=True`` to replace it). Views are skipped and listed under ``skipped``
    (their definitions name physical collections and could not be restored as they are).

    Returns ``{"app", "directory", "database", "collections": [{"collection", "documents",
    "bytes", "indexes"}], "documents", "bytes", "skipped"}``.
    """
    validate_slug(slug)
    if batch_size < 1:
        raise ValueError("batch_size must be a positive integer")
    record = engine.registry.get_record(slug)
    infos = app_collections(engine, slug)
    if record is None and not infos:
        raise AppNotFoundError(
            f"app {slug!r} is not registered and has no collections in database {engine.db_name!r}",
            context={"app": slug},
        )
    root = Path(directory)
    app_dir = root / slug
    if root.is_dir():
        leftovers.remove_abandoned_exports(root, slug)  # a killed export's, of this app
    if app_dir.exists() and not overwrite and (not app_dir.is_dir() or any(app_dir.iterdir())):
        raise PortabilityError(
            f"{app_dir} already exists; choose another directory or overwrite it "
            "(--force / overwrite=True)",
            context={"path": str(app_dir)},
        )
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{leftovers.staging_prefix(slug)}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        leftovers.claim(staging)
        collections, skipped = [], []
        for info in infos:
            logical = logical_name(slug, info["name"])
            assert logical is not None
            kind = info.get("type", "collection")
            if kind != "collection":
                skipped.append({"collection": logical, "type": kind})
                continue
            collections.append(
                _export_collection(engine, slug, info, logical, staging, progress, batch_size)
            )
        summary = {
            "app": slug,
            "database": engine.db_name,
            # A record registered before demo passwords were hashed: hash them now.
            "manifest": hash_demo_passwords(
                (record or {}).get("manifest") or {"slug": slug}, check_policy=False
            ),
            "collections": {c["collection"]: c["documents"] for c in collections},
        }
        layout.write_summary(staging / layout.SUMMARY_FILE, summary)
        leftovers.release(staging)
        if app_dir.exists():
            old = root / f"{leftovers.replaced_prefix(slug)}{uuid.uuid4().hex[:8]}"
            app_dir.rename(old)
            staging.rename(app_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(app_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "app": slug,
        "directory": str(app_dir),
        "database": engine.db_name,
        "collections": collections,
        "documents": sum(c["documents"] for c in collections),
        "bytes": sum(c["bytes"] for c in collections),
        "skipped": skipped,
    }


def _export_collection(
    engine: MongoDBEngine,
    slug: str,
    info: dict[str, Any],
    logical: str,
    staging: Path,
    progress: Progress | None,
    batch_size: int,
) -> dict[str, Any]:
    raw = engine.storage.collection(info["name"])
    documents = written = 0
    with open(staging / f"{logical}{layout.BSON_SUFFIX}", "wb") as fh:
        # Raw batches are BSON bytes; pymongo's stubs give them the collection's document type.
        batches = cast(
            "Iterable[bytes]", raw.find_raw_batches({"app_id": slug}, batch_size=batch_size)
        )
        for batch in batches:
            fh.write(batch)
            count = bsonraw.count_documents(batch)
            documents += count
            written += len(batch)
            if progress is not None:
                progress(count, len(batch))
    indexes = [
        {k: v for k, v in spec.items() if k not in layout.DROPPED_INDEX_FIELDS}
        for spec in raw.list_indexes()
    ]
    metadata = layout.metadata_document(
        logical, info.get("options") or {}, indexes, layout.uuid_hex(info)
    )
    layout.write_json(staging / f"{logical}{layout.METADATA_SUFFIX}", metadata)
    return {
        "collection": logical,
        "documents": documents,
        "bytes": written,
        "indexes": len(indexes),
    }
