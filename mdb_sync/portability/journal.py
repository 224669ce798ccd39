"""The journal of an import: whatever point a crash stops it at, it is finished or undone.

Before its first change an import writes one document into a collection of its own,
``mdb_import_<token>``: the collections it builds and sets aside, the registration it makes
or changes, the process running it (:mod:`.owner`). Its ``phase`` is the commit point:

* ``building`` — collections are being built where no app reads them (``staged``:
  ``mdb_import_<token>_new_<target>``), or in place while the app is registered but inactive
  (``in_place``; the targets' previous collections renamed aside to
  ``mdb_import_<token>_old_<target>``). Undoing drops what was built, puts the set-aside
  collections back and undoes the registration change.
* ``switching`` — every collection is complete. Finishing renames the staged collections
  over their targets (or drops the set-aside ones), registers the app (or reactivates it)
  and drops the journal.

Both are idempotent, so a crash during either is recovered by running it again: a retried
``mdb import`` does it for the imports it collides with, ``mdb cleanup`` for all of them
(never for an import whose process still runs).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel
from pymongo.errors import PyMongoError

from .. import bsonraw
from ..exceptions import PortabilityError
from . import owner

if TYPE_CHECKING:
    from pymongo.database import Database

    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

#: Every collection an import creates for itself starts with this (``mdb`` is a reserved
#: slug: no app can name or read them).
PREFIX = "mdb_import_"
_JOURNAL_RE = re.compile(r"^mdb_import_([0-9a-f]{10})$")
_TOKEN_RE = re.compile(r"^mdb_import_([0-9a-f]{10})_")
#: The description of the inactive registration holding a new app's slug during its import.
PLACEHOLDER = "being imported by mdb import (inactive until the import completes)"
BUILDING, SWITCHING = "building", "switching"
STAGED, IN_PLACE = "staged", "in_place"


def is_placeholder(record: Mapping[str, Any]) -> bool:
    """Whether a registry record is an import's inactive placeholder."""
    manifest = record.get("manifest") or {}
    return record.get("status") == "inactive" and manifest.get("description") == PLACEHOLDER


def journal_name(token: str) -> str:
    return f"{PREFIX}{token}"


def built_name(token: str, target: str) -> str:
    return f"{PREFIX}{token}_new_{target}"


def aside_name(token: str, target: str) -> str:
    return f"{PREFIX}{token}_old_{target}"


def token_of(name: str) -> str | None:
    """The import token in an import's collection name, else None."""
    match = _JOURNAL_RE.match(name) or _TOKEN_RE.match(name)
    return match.group(1) if match else None


class Journal:
    """One import's journal document, kept in ``mdb_import_<token>``."""

    def __init__(self, engine: MongoDBEngine, doc: dict[str, Any]) -> None:
        self.engine = engine
        self.doc = doc

    @property
    def token(self) -> str:
        return str(self.doc["_id"])

    @property
    def collection(self) -> Any:
        return self.engine.storage.collection(journal_name(self.token))

    @classmethod
    def create(cls, engine: MongoDBEngine, doc: dict[str, Any]) -> Journal:
        stamp = owner.now()
        doc = {**doc, "owner": owner.this_process(), "started_at": stamp, "heartbeat_at": stamp}
        engine.storage.collection(journal_name(doc["_id"])).insert_one(doc)
        return cls(engine, doc)

    def update(self, **fields: Any) -> None:
        fields["heartbeat_at"] = owner.now()
        self.collection.update_one({"_id": self.token}, {"$set": fields})
        self.doc.update(fields)

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """While the import runs, show it every few seconds (index builds and waits
        included), so that no other host takes it for abandoned."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(owner.HEARTBEAT_EVERY):
                try:
                    self.collection.update_one(
                        {"_id": self.token}, {"$set": {"heartbeat_at": owner.now()}}
                    )
                except PyMongoError:
                    log.debug("import %s: heartbeat failed", self.token, exc_info=True)

        thread = threading.Thread(target=beat, name=f"mdb-import-{self.token}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(owner.HEARTBEAT_EVERY + 1)

    def alive(self) -> bool:
        return owner.is_alive(self.doc.get("owner"), self.doc.get("heartbeat_at"))

    def touches(self, app: str | None, targets: Iterable[str]) -> bool:
        """Whether this import writes ``app`` or any of ``targets``."""
        if app is not None and self.doc.get("app") == app:
            return True
        return bool(set(targets) & {c["target"] for c in self.collections})

    @property
    def collections(self) -> list[dict[str, Any]]:
        return list(self.doc.get("collections") or [])

    def describe(self) -> dict[str, Any]:
        """The journal as ``mdb cleanup`` lists it."""
        doc = self.doc
        return {
            "token": self.token,
            "app": doc.get("app"),
            "source": doc.get("source"),
            "phase": doc.get("phase"),
            "method": doc.get("method"),
            "owner": owner.describe(doc.get("owner")),
            "running": self.alive(),
            "started_at": doc.get("started_at"),
            "collections": [c["target"] for c in self.collections],
            "action": "finish" if doc.get("phase") == SWITCHING else "undo",
        }


def find(engine: MongoDBEngine) -> list[Journal]:
    """Every import journal in the engine's database (finished imports leave none)."""
    journals = []
    for name in sorted(engine.storage.database().list_collection_names()):
        match = _JOURNAL_RE.match(name)
        if not match:
            continue
        doc = engine.storage.collection(name).find_one({"_id": match.group(1)})
        if doc is not None:
            journals.append(Journal(engine, doc))
    return journals


def orphans(engine: MongoDBEngine) -> list[str]:
    """Import collections that no journal accounts for (an import of an earlier version,
    one killed before its journal existed, a journal lost with its server)."""
    names = engine.storage.database().list_collection_names()
    tokens = {m.group(1) for n in names if (m := _JOURNAL_RE.match(n))}
    return sorted(n for n in names if n.startswith(PREFIX) and token_of(n) not in tokens)


# --- finishing and undoing ----------------------------------------------------------------------


def _drop_probes(database: Database[Any], token: str, names: set[str]) -> None:
    """The throwaway collections of the import's rename probe, if any are left."""
    for name in names:
        if name.startswith(f"{PREFIX}{token}_probe"):
            database.drop_collection(name)


def finish(journal: Journal) -> None:
    """Complete an import whose collections are all built (phase ``switching``); a probe
    collection the import left (its drop lost with the process) goes too."""
    engine, doc = journal.engine, journal.doc
    database = engine.storage.database()
    names = set(database.list_collection_names())
    _drop_probes(database, journal.token, names)
    for entry in doc.get("collections") or []:
        if doc.get("method") == STAGED:
            if entry["build"] in names:
                database[entry["build"]].rename(entry["target"], dropTarget=True)
        elif entry["aside"] in names:
            database.drop_collection(entry["aside"])
    if doc.get("manifest") is not None:
        engine.register_app(doc["manifest"], create_indexes=False)
    elif doc.get("deactivated") is not None:
        engine.register_app(doc["deactivated"], create_indexes=False)
    database.drop_collection(journal_name(journal.token))


def undo(journal: Journal) -> None:
    """Put everything back as it was before the import (phase ``building``)."""
    engine, doc = journal.engine, journal.doc
    database = engine.storage.database()
    names = set(database.list_collection_names())
    _drop_probes(database, journal.token, names)
    for entry in reversed(doc.get("collections") or []):
        target = entry["target"]
        if doc.get("method") is None:
            break  # nothing was written yet
        if doc.get("method") == STAGED:
            if entry["build"] in names:
                database.drop_collection(entry["build"])
        elif entry["aside"] in names:
            _restore(database, entry, keeps_options=bool(doc.get("rename_keeps_options")))
        elif not entry.get("existed") and target in names:
            database.drop_collection(target)
    app = doc.get("app")
    if doc.get("placeholder") and app is not None:
        engine.registry.load()
        record = engine.registry.get_record(app)
        if record is not None and is_placeholder(record):
            engine.unregister_app(app)
    if doc.get("deactivated") is not None:
        engine.register_app(doc["deactivated"], create_indexes=False)
    database.drop_collection(journal_name(journal.token))


def _restore(database: Database[Any], entry: Mapping[str, Any], keeps_options: bool) -> None:
    """Put a set-aside collection back under its name. Where a rename keeps a collection's
    options that is a rename; elsewhere (the embedded server drops them) the collection is
    created again with its recorded options and indexes and the documents copied back."""
    aside, target = entry["aside"], entry["target"]
    database.drop_collection(target)
    options = entry.get("options") or {}
    if keeps_options or not options:
        database[aside].rename(target)
        return
    database.create_collection(target, **options)
    source, copy = database[aside], database[target]
    for batch in source.find_raw_batches({}, batch_size=1000):
        copy.insert_many(
            [RawBSONDocument(d) for d in bsonraw.split(batch)], bypass_document_validation=True
        )
    models = [
        IndexModel(list(spec["key"].items()), **_index_options(spec))
        for spec in source.list_indexes()
        if spec["name"] != "_id_"
    ]
    if models:
        copy.create_indexes(models)
    database.drop_collection(aside)


def _index_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in ("key", "v", "ns", "background")}


def recover(journal: Journal) -> str:
    """Finish or undo an abandoned import; return ``finished`` or ``undone``. Refuses an
    import whose process still runs."""
    if journal.alive():
        raise PortabilityError(
            f"the import {journal.token} of app {journal.doc.get('app')!r} is still running "
            f"({owner.describe(journal.doc.get('owner'))}); wait for it to end",
            context={"token": journal.token, "app": journal.doc.get("app")},
        )
    if journal.doc.get("phase") == SWITCHING:
        finish(journal)
        outcome = "finished"
    else:
        undo(journal)
        outcome = "undone"
    log.warning(
        "import %s of app %r, abandoned by %s, was %s",
        journal.token,
        journal.doc.get("app"),
        owner.describe(journal.doc.get("owner")),
        outcome,
    )
    return outcome
