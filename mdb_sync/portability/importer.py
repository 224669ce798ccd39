"""Import an exported app into a database: the same or another server, the same or a new
slug, or as a standalone database without ``app_id`` (the last step of graduation).

Every document is rewritten on the byte level (:mod:`.rawbson`): ``app_id`` is *set* to the
target slug whatever the file says (or removed for a standalone import), so a crafted dump
can never plant documents in another app's scope; everything else is copied byte for byte.

All or nothing per import: everything that can be refused (names, options, index specs,
slug conflicts, targets holding data) is checked before the first write. Then an existing
target collection is first renamed aside to a name no app can use (``mdb_import_<token>_old_
...``), each collection is built in place (created with its options, filled, indexed), and
only when all are complete are the set-aside collections dropped. A failure drops what was
built, renames the set-aside collections back and undoes the registration the import made,
so nothing is lost or half-written. (Building in place rather than renaming a finished
collection over the target keeps the collection's options on every server.) Without
``drop`` the import refuses targets that already hold the app's documents.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel
from pymongo.errors import PyMongoError

from ..exceptions import AppConflictError, PortabilityError
from ..scoping.names import (
    overlapping_prefixes,
    physical_name,
    validate_collection_name,
    validate_slug,
)
from . import layout, rawbson
from .exporter import Progress

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

APP_ID = "app_id"
#: Documents and bytes per insert batch (well under the 48 MB message limit).
BATCH_DOCUMENTS = 1000
BATCH_BYTES = 8 * 1024 * 1024


def find_app_dir(directory: str | Path, slug: str) -> Path:
    """``directory/<slug>`` of an export, or ``directory`` itself when it holds the dump
    files directly (a mongodump database directory)."""
    root = Path(directory)
    if (root / slug).is_dir():
        return root / slug
    if root.is_dir() and layout.collection_files(root):
        return root
    raise PortabilityError(
        f"no export of app {slug!r} in {root} (expected {root / slug} with .bson and "
        ".metadata.json files)",
        context={"path": str(root), "app": slug},
    )


def _default_index_name(key: list[tuple[str, Any]]) -> str:
    return "_".join(f"{field}_{direction}" for field, direction in key)


def _text_fields(key: list[tuple[str, Any]], spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A text index as ``listIndexes`` shows it (``_fts``/``_ftsx``) back in creatable form."""
    if not any(field == "_fts" for field, _ in key):
        return key
    weights = spec.get("weights") or {}
    rebuilt: list[tuple[str, Any]] = []
    for field, direction in key:
        if field == "_fts":
            rebuilt.extend((name, "text") for name in weights)
        elif field != "_ftsx":
            rebuilt.append((field, direction))
    return rebuilt


def _is_wildcard(key: list[tuple[str, Any]]) -> bool:
    return any(field == "$**" or field.endswith(".$**") for field, _ in key)


def index_model(spec: Mapping[str, Any], standalone: bool) -> IndexModel | None:
    """The index to create for exported ``spec``: scoped indexes start with ``app_id`` (as
    every index the engine creates does); standalone ones lose it. None for ``_id_`` and
    for an index that was only ``app_id``."""
    if spec["name"] == "_id_":
        return None
    options = {k: v for k, v in spec.items() if k not in layout.DROPPED_INDEX_FIELDS | {"key", "v"}}
    original = [(str(f), d) for f, d in spec["key"].items()]
    key = _text_fields(original, spec)
    if standalone:
        key = [(f, d) for f, d in key if f != APP_ID]
        if not key:
            return None
        partial = options.get("partialFilterExpression")
        if isinstance(partial, Mapping) and APP_ID in partial:
            partial = {k: v for k, v in partial.items() if k != APP_ID}
            if partial:
                options["partialFilterExpression"] = partial
            else:
                del options["partialFilterExpression"]
    elif key[0][0] != APP_ID and not _is_wildcard(key):
        key = [(APP_ID, 1), *[(f, d) for f, d in key if f != APP_ID]]
    if key != original and options.get("name") == _default_index_name(original):
        options["name"] = _default_index_name(key)
    return IndexModel(key, **options)


class _Plan:
    """What one collection of the dump becomes: its files, target and set-aside names."""

    def __init__(self, app_dir: Path, logical: str, target: str, token: str) -> None:
        self.logical = logical
        self.target = target
        self.aside = f"mdb_import_{token}_old_{target}"
        self.set_aside = False
        self.built = False
        self.bson = app_dir / f"{logical}{layout.BSON_SUFFIX}"
        metadata = app_dir / f"{logical}{layout.METADATA_SUFFIX}"
        self.metadata = (
            layout.read_metadata(metadata) if metadata.is_file() else {"options": {}, "indexes": []}
        )
        self.documents = 0
        self.indexes = 0


def import_app(
    engine: MongoDBEngine,
    slug: str,
    directory: str | Path,
    *,
    target_slug: str | None = None,
    drop_app_id: bool = False,
    drop: bool = False,
    register: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Import the export of app ``slug`` found in ``directory`` into ``engine``'s database.

    :param target_slug: import under this slug (physical names and ``app_id`` rewritten).
    :param drop_app_id: write a standalone database: logical collection names, no
        ``app_id`` in documents or indexes, no registration (the graduation target).
    :param drop: replace collections that already hold the app's documents (otherwise
        such a target is refused before anything is written).
    :param register: register the app in the target (from the exported manifest) when it is
        not registered there yet.

    Returns ``{"app", "source_app", "database", "standalone", "registered", "collections":
    [{"collection", "target", "documents", "indexes"}], "documents"}``.
    """
    validate_slug(slug)
    new_slug = validate_slug(target_slug or slug, "target slug")
    app_dir = find_app_dir(directory, slug)
    summary = layout.read_summary(app_dir)
    token = uuid.uuid4().hex[:10]
    database = engine._database()
    plans = []
    for logical in layout.collection_files(app_dir):
        validate_collection_name(logical)
        target = logical if drop_app_id else physical_name(new_slug, logical)
        plans.append(_Plan(app_dir, logical, target, token))

    engine.registry.load()  # current view of the registry: other processes may have changed it
    _check_targets(engine, new_slug, plans, drop_app_id, drop)

    registered = False
    if not drop_app_id and register and engine.registry.get_record(new_slug) is None:
        manifest = dict((summary or {}).get("manifest") or {})
        manifest["slug"] = new_slug
        engine.register_app(manifest, create_indexes=False)
        registered = True
    existing = set(database.list_collection_names())
    try:
        for plan in plans:
            if plan.target in existing:
                database[plan.target].rename(plan.aside)
                plan.set_aside = True
        for plan in plans:
            plan.built = True
            _build(engine, plan, new_slug, drop_app_id, progress)
    except BaseException:
        for plan in plans:  # best effort: the first error is the one reported
            if plan.built:
                with contextlib.suppress(PyMongoError):
                    database.drop_collection(plan.target)
            if plan.set_aside:
                with contextlib.suppress(PyMongoError):
                    database[plan.aside].rename(plan.target, dropTarget=True)
        if registered:
            engine.unregister_app(new_slug)
        raise
    for plan in plans:
        if plan.set_aside:
            database.drop_collection(plan.aside)
    return {
        "app": new_slug,
        "source_app": slug,
        "database": engine.db_name,
        "standalone": drop_app_id,
        "registered": registered,
        "collections": [
            {
                "collection": p.logical,
                "target": p.target,
                "documents": p.documents,
                "indexes": p.indexes,
            }
            for p in plans
        ],
        "documents": sum(p.documents for p in plans),
    }


def _check_targets(
    engine: MongoDBEngine, slug: str, plans: list[_Plan], standalone: bool, drop: bool
) -> None:
    """Refuse, before writing anything, targets that belong to another app or hold data."""
    registry = engine.registry
    if standalone and registry.slugs():
        raise PortabilityError(
            f"database {engine.db_name!r} holds registered apps; a standalone import "
            "(drop_app_id / --drop-app-id) writes plain collections and needs a database of "
            "its own (choose another with --db / --into)",
            context={"database": engine.db_name},
        )
    if not standalone:
        others = [s for s in registry.slugs() if s != slug and s in overlapping_prefixes(slug)]
        others += [s for s in registry.slugs() if s.startswith(slug + "_")]
        if others:
            raise AppConflictError(
                f"cannot import as {slug!r}: its collection names could collide with those of "
                f"registered app(s) {', '.join(map(repr, sorted(others)))}",
                context={"app": slug, "conflicts": sorted(others)},
            )
    existing = set(engine._database().list_collection_names())
    for plan in plans:
        if plan.target not in existing or drop:
            continue
        scope = {} if standalone else {APP_ID: slug}
        if engine._raw_collection(plan.target).count_documents(scope, limit=1):
            raise PortabilityError(
                f"collection {plan.target!r} already holds documents of app {slug!r}; pass "
                "drop=True (--drop) to replace them, or import under another slug (--as)",
                context={"collection": plan.target, "app": slug},
            )


def _build(
    engine: MongoDBEngine,
    plan: _Plan,
    slug: str,
    standalone: bool,
    progress: Progress | None,
) -> None:
    """Create ``plan.target`` with the options, documents and indexes of the dump."""
    database = engine._database()
    database.create_collection(plan.target, **plan.metadata["options"])
    raw = engine._raw_collection(plan.target)
    if plan.bson.is_file():
        with open(plan.bson, "rb") as fh:
            _insert_stream(raw, fh, plan, None if standalone else slug, progress)
    models = [
        model
        for model in (index_model(spec, standalone) for spec in plan.metadata["indexes"])
        if model is not None
    ]
    if models:
        try:
            raw.create_indexes(models)
        except PyMongoError as exc:
            raise PortabilityError(
                f"cannot create the indexes of {plan.logical!r}: {exc}",
                context={"collection": plan.logical},
            ) from exc
    plan.indexes = len(models)


def _insert_stream(
    raw: Collection[Any],
    fh: Any,
    plan: _Plan,
    app_id: str | None,
    progress: Progress | None,
) -> None:
    batch: list[RawBSONDocument] = []
    size = read = 0  # bytes of the batch as written / as read from the dump (the progress)

    def flush() -> None:
        nonlocal batch, size, read
        if batch:
            try:
                raw.insert_many(batch, ordered=True, bypass_document_validation=True)
            except PyMongoError as exc:
                raise PortabilityError(
                    f"cannot insert the documents of {plan.logical!r}: {exc}",
                    context={"collection": plan.logical},
                ) from exc
            if progress is not None:
                progress(len(batch), read)
            plan.documents += len(batch)
        batch, size, read = [], 0, 0

    for position, document in enumerate(rawbson.iter_file(fh, str(plan.bson))):
        try:
            rewritten = rawbson.set_field(document, APP_ID, app_id)
        except rawbson.MalformedBSON as exc:
            raise rawbson.MalformedBSON(
                f"malformed BSON in {plan.bson}, document {position + 1}: {exc}",
                context={"file": str(plan.bson), "document": position + 1},
            ) from exc
        batch.append(RawBSONDocument(rewritten))
        size += len(rewritten)
        read += len(document)
        if len(batch) >= BATCH_DOCUMENTS or size >= BATCH_BYTES:
            flush()
    flush()


__all__ = ["find_app_dir", "import_app", "index_model"]
