"""Import an exported app into a database: the same or another server, the same or a new
slug, or as a standalone database without ``app_id`` (the last step of graduation).

Every document is rewritten on the byte level (:mod:`mdb_sync.bsonraw`): ``app_id`` is *set*
to the target slug whatever the file says (or removed for a standalone import), so a crafted
dump can never plant documents in another app's scope; everything else is copied byte for byte.
The dump's manifest never grants the app access to another app's data (:mod:`.grants`), and
symbolic links in the dump directory are refused, never followed (:mod:`.layout`).

All or nothing, and never half-visible. Everything that can be refused (names, options,
index specs, grants, slug conflicts, targets holding data) is checked before the first
write. Then, recorded step by step in a journal (:mod:`.journal`) so that a crash at any
point is finished or undone by the next import or ``mdb cleanup``:

* a new app is registered at once, but *inactive* (it cannot be used, and its slug cannot be
  taken); its collections are built in place, and it becomes active with its manifest at
  the end;
* for an app in use, the new collections are built under names no app can read
  (``mdb_import_<token>_new_...``) while it keeps reading its current data, and at the end
  each is renamed over its target (one atomic rename per collection);
* where a rename would lose collection options (the embedded server drops ``capped``,
  validators... on rename, which is also a copy there) and the dump has some, the app in
  use is made inactive instead, given its registry refresh period (``quiesce``) to reach
  every process, and its collections are rebuilt in place (the previous ones renamed aside).

A failure undoes it all: what was built is dropped, the previous collections and the
registration are put back.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel
from pymongo.errors import PyMongoError

from .. import bsonraw
from ..exceptions import AppConflictError, PortabilityError
from ..manifest import validate_manifest
from ..scoping.names import (
    overlapping_prefixes,
    physical_name,
    validate_collection_name,
    validate_slug,
)
from . import grants, journal, layout, owner
from .exporter import Progress

if TYPE_CHECKING:
    from pymongo.collection import Collection
    from pymongo.database import Database

    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

APP_ID = "app_id"
#: Documents and bytes per insert batch (well under the 48 MB message limit).
BATCH_DOCUMENTS = 1000
BATCH_BYTES = 8 * 1024 * 1024


def find_app_dir(directory: str | os.PathLike[str], slug: str) -> Path:
    """``directory/<slug>`` of an export, or ``directory`` itself when it holds the dump
    files directly (a mongodump database directory). A symbolic link is refused."""
    root = Path(directory)
    candidate = root / slug
    if candidate.is_symlink():
        raise PortabilityError(
            f"{candidate} is a symbolic link: a dump directory's entries are never followed",
            context={"path": str(candidate)},
        )
    if candidate.is_dir():
        return candidate
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
    """What one collection of the dump becomes: its files, target, and the names it is
    built under and set aside to."""

    def __init__(self, app_dir: Path, logical: str, target: str, token: str) -> None:
        self.logical = logical
        self.target = target
        self.build = target
        self.aside = journal.aside_name(token, target)
        self.existed = False
        self.options: dict[str, Any] = {}
        self.bson = app_dir / f"{logical}{layout.BSON_SUFFIX}"
        metadata = app_dir / f"{logical}{layout.METADATA_SUFFIX}"
        self.metadata = (
            layout.read_metadata(metadata) if metadata.exists() else {"options": {}, "indexes": []}
        )
        self.documents = 0
        self.indexes = 0

    def entry(self) -> dict[str, Any]:
        """The plan as the journal records it."""
        return {
            "collection": self.logical,
            "target": self.target,
            "build": self.build,
            "aside": self.aside,
            "existed": self.existed,
            "options": self.options,
            "documents": self.documents,
            "indexes": self.indexes,
        }


def import_app(
    engine: MongoDBEngine,
    slug: str,
    directory: str | os.PathLike[str],
    *,
    target_slug: str | None = None,
    drop_app_id: bool = False,
    drop: bool = False,
    register: bool = True,
    allow_read_scopes: Iterable[str] = (),
    quiesce: float | None = None,
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
    :param allow_read_scopes: apps whose read grant in the dump's manifest is kept (each
        must be registered here and not deny cross-app reads); every other grant is dropped.
    :param quiesce: seconds to wait, after making an app in use inactive, before its data
        is replaced in place (default: this engine's ``registry_refresh_seconds``).

    An import into an app or collections that an abandoned import (its process died) was
    writing first finishes or undoes that one; if that one had completed its work on the
    same dump, this import returns its result (``"resumed": True``) instead of starting
    over. An import still running there is refused.

    Returns ``{"app", "source_app", "database", "standalone", "registered", "method",
    "registration", "recovered", "resumed", "collections": [{"collection", "target",
    "documents", "indexes"}], "documents"}``.
    """
    validate_slug(slug)
    new_slug = validate_slug(target_slug or slug, "target slug")
    app_dir = find_app_dir(directory, slug)
    layout.refuse_links(app_dir)
    summary = layout.read_summary(app_dir)
    token = uuid.uuid4().hex[:10]
    plans = []
    for logical in layout.collection_files(app_dir):
        validate_collection_name(logical)
        target = logical if drop_app_id else physical_name(new_slug, logical)
        plans.append(_Plan(app_dir, logical, target, token))
    source = str(app_dir.resolve())

    engine.registry.load()  # current view of the registry: other processes may have changed it
    app = None if drop_app_id else new_slug
    recovered, resumed = _recover_collisions(engine, app, plans, source, slug, drop_app_id)
    if resumed is not None:
        return {**resumed, "recovered": recovered, "resumed": True}
    _check_targets(engine, new_slug, plans, drop_app_id, drop)

    record = None if drop_app_id else engine.registry.get_record(new_slug)
    if record is not None and journal.is_placeholder(record):
        record = None  # left by an import whose journal was lost with its server: ours now
    manifest, registration = None, None
    if not drop_app_id and register and record is None:
        manifest, dropped = grants.sanitize_manifest(
            engine, (summary or {}).get("manifest"), slug, new_slug, allow_read_scopes
        )
        manifest = validate_manifest(manifest)  # refused now, not after the data is in
        registration = grants.summary(manifest, dropped)

    database = engine.storage.database()
    existing = set(database.list_collection_names())
    for plan in plans:
        if plan.target in existing:
            plan.existed = True
            plan.options = dict(database[plan.target].options())
    in_use = record is not None and record.get("status", "active") == "active"
    log_entry = journal.Journal.create(
        engine,
        {
            "_id": token,
            "kind": "mdb-import",
            "phase": journal.BUILDING,
            "method": None,  # decided below; until then nothing but a probe is written
            "app": app,
            "source_app": slug,
            "source": source,
            "standalone": drop_app_id,
            "collections": [p.entry() for p in plans],
            "manifest": manifest,
            "placeholder": manifest is not None,
            "deactivated": None,
        },
    )
    try:
        with log_entry.heartbeat():
            keeps_options = _rename_keeps_options(database, token)
            rename_safe = keeps_options or not any(p.metadata["options"] for p in plans)
            # Staged only where someone reads the targets meanwhile: an app in use, or a
            # standalone database's existing collections. A new app is inactive until
            # complete; nobody reads a fresh standalone database.
            read = in_use or (drop_app_id and any(p.existed for p in plans))
            if manifest is None and read and rename_safe:
                method = journal.STAGED  # built aside, renamed over the targets at the end
            else:
                method = journal.IN_PLACE  # an app in use is made inactive meanwhile
            for plan in plans:
                if method == journal.STAGED:
                    plan.build = journal.built_name(token, plan.target)
            log_entry.update(
                method=method,
                rename_keeps_options=keeps_options,
                collections=[p.entry() for p in plans],
            )
            if manifest is not None:
                engine.register_app(
                    {"slug": new_slug, "name": new_slug, "status": "inactive",
                     "description": journal.PLACEHOLDER},
                    create_indexes=False,
                )  # fmt: skip
            elif method == journal.IN_PLACE and in_use:
                assert record is not None
                log_entry.update(deactivated=record["manifest"])
                engine.register_app(
                    {**record["manifest"], "status": "inactive"}, create_indexes=False
                )
                wait = engine.registry_refresh_seconds if quiesce is None else quiesce
                time.sleep(max(0.0, wait))  # every process sees it inactive before data moves

            names = set(database.list_collection_names())
            for plan in plans:
                if method == journal.IN_PLACE and plan.target in names:
                    database[plan.target].rename(plan.aside)
                _build(engine, plan, new_slug, drop_app_id, progress)
            log_entry.update(phase=journal.SWITCHING, collections=[p.entry() for p in plans])
    except BaseException:
        try:
            journal.undo(log_entry)
        except Exception:  # the first error is the one reported; the journal stays
            log.exception("could not undo import %s; `mdb cleanup` will", token)
        raise
    journal.finish(log_entry)
    return {
        "app": new_slug,
        "source_app": slug,
        "database": engine.db_name,
        "standalone": drop_app_id,
        "registered": manifest is not None,
        "method": method,
        "registration": registration,
        "recovered": recovered,
        "resumed": False,
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


def _recover_collisions(
    engine: MongoDBEngine,
    app: str | None,
    plans: list[_Plan],
    source: str,
    source_app: str,
    standalone: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Finish or undo abandoned imports of ``app`` or of the same collections; refuse when
    one is still running. Returns what was recovered, and the result of an import of the
    same dump that could be finished (None otherwise)."""
    recovered, resumed = [], None
    for entry in journal.find(engine):
        if not entry.touches(app, [p.target for p in plans]):
            continue
        if entry.alive():
            raise PortabilityError(
                f"another import into {app or 'these collections'!r} is running "
                f"({owner.describe(entry.doc.get('owner'))}, import {entry.token}); "
                "wait for it to end",
                context={"app": app, "token": entry.token},
            )
        outcome = journal.recover(entry)
        recovered.append({"token": entry.token, "app": entry.doc.get("app"), "outcome": outcome})
        doc = entry.doc
        same = (doc.get("source"), doc.get("source_app"), doc.get("app"), doc.get("standalone"))
        if outcome == "finished" and same == (source, source_app, app, standalone):
            collections = [
                {k: c[k] for k in ("collection", "target", "documents", "indexes")}
                for c in entry.collections
            ]
            resumed = {
                "app": app if app is not None else source_app,
                "source_app": source_app,
                "database": engine.db_name,
                "standalone": standalone,
                "registered": doc.get("manifest") is not None,
                "method": doc.get("method"),
                "registration": None,
                "collections": collections,
                "documents": sum(c["documents"] for c in collections),
            }
    if recovered:
        engine.registry.load()
    return recovered, resumed


def _rename_keeps_options(database: Database[Any], token: str) -> bool:
    """Whether this server keeps a collection's options across a rename (mongod does; the
    embedded server drops them), tried on a throwaway capped collection."""
    probe = f"{journal.PREFIX}{token}_probe"
    renamed = f"{probe}_renamed"
    try:
        database.create_collection(probe, capped=True, size=4096)
        database[probe].rename(renamed)
        return bool(database[renamed].options().get("capped"))
    finally:
        database.drop_collection(probe)
        database.drop_collection(renamed)


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
    existing = set(engine.storage.database().list_collection_names())
    for plan in plans:
        if plan.target not in existing or drop:
            continue
        scope = {} if standalone else {APP_ID: slug}
        if engine.storage.collection(plan.target).count_documents(scope, limit=1):
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
    """Create ``plan.build`` with the options, documents and indexes of the dump."""
    database = engine.storage.database()
    database.create_collection(plan.build, **plan.metadata["options"])
    raw = engine.storage.collection(plan.build)
    if plan.bson.exists():
        with layout.open_dump_file(plan.bson) as fh:
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

    for position, document in enumerate(bsonraw.iter_file(fh, str(plan.bson))):
        try:
            rewritten = bsonraw.set_field(document, APP_ID, app_id)
        except bsonraw.MalformedBSON as exc:
            raise bsonraw.MalformedBSON(
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
