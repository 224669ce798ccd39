"""What interrupted imports and exports leave behind — listed, and finished or removed
(``mdb cleanup``).

* In the database: the journals of imports whose process is gone (:mod:`.journal`; an
  import past its commit point is finished, any other undone), collections named
  ``mdb_import_...`` and inactive placeholder registrations that no journal accounts for
  (left by an import of an earlier version, or by a server that lost the journal in a
  crash).
* In an export directory: staging directories ``.<slug>.export-<hex>`` whose process is gone,
  and ``.<slug>.replaced-<hex>`` (the previous export, moved aside for the instant of the
  switch; put back if the new one never took its place).

Work whose process still runs is listed as running and never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import journal, owner

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

#: The file in an export's staging directory naming the process writing it.
OWNER_FILE = ".mdb-export-owner.json"
_EXPORT_RE = re.compile(r"^\.(?P<app>[^/]+)\.(?P<kind>export|replaced)-[0-9a-f]{8}$")


def staging_prefix(slug: str) -> str:
    return f".{slug}.export-"


def replaced_prefix(slug: str) -> str:
    return f".{slug}.replaced-"


def claim(staging: Path) -> None:
    """Mark ``staging`` as written by this process. The record appears whole or not at all
    (written aside, then renamed): a process killed while writing it must not leave an
    empty record, which would read as "no record" — running for :data:`owner.STALE_AFTER`."""
    record = {**owner.this_process(), "started_at": owner.now().isoformat()}
    partial = staging / f"{OWNER_FILE}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(record), encoding="utf-8")
    os.replace(partial, staging / OWNER_FILE)


def release(staging: Path) -> None:
    (staging / OWNER_FILE).unlink(missing_ok=True)


def _export_running(path: Path, kind: str) -> bool:
    if kind == "replaced":
        return False  # only ever there for the instant between two renames
    try:
        record = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("node") == owner.this_process()["node"]:
        return owner.is_alive(record, None)
    # Another host, or no record: running while files in it still change.
    try:
        newest = max(
            [path.stat().st_mtime, *(e.stat().st_mtime for e in os.scandir(path))], default=0
        )
    except OSError:
        return False
    return time.time() - newest < owner.STALE_AFTER


def export_leftovers(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The staging and set-aside directories of exports in ``root``."""
    found: list[dict[str, Any]] = []
    base = Path(root)
    if not base.is_dir():
        return found
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        match = _EXPORT_RE.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            continue
        path, kind, app = Path(entry.path), match.group("kind"), match.group("app")
        restore = kind == "replaced" and not (base / app).exists()
        found.append(
            {
                "path": str(path),
                "app": app,
                "kind": kind,
                "running": _export_running(path, kind),
                "action": "restore" if restore else "remove",
            }
        )
    return found


def remove_abandoned_exports(
    root: str | os.PathLike[str], slug: str | None = None
) -> list[dict[str, Any]]:
    """Put back or remove the abandoned export leftovers in ``root`` (of ``slug`` only, if
    given); return what was done."""
    done = []
    for item in export_leftovers(root):
        if item["running"] or (slug is not None and item["app"] != slug):
            continue
        path = Path(item["path"])
        if item["action"] == "restore":
            path.rename(Path(root) / item["app"])
        else:
            shutil.rmtree(path, ignore_errors=True)
        done.append(item)
    return done


def _orphan_placeholders(engine: MongoDBEngine, journals: list[journal.Journal]) -> list[str]:
    engine.registry.load()
    claimed = {entry.doc.get("app") for entry in journals}
    return [
        slug
        for slug in engine.registry.slugs()
        if slug not in claimed
        and (record := engine.registry.get_record(slug)) is not None
        and journal.is_placeholder(record)
    ]


def import_leftovers(engine: MongoDBEngine) -> dict[str, Any]:
    """``{"imports": [journal, ...], "orphans": [collection name, ...], "placeholders":
    [app slug, ...]}``."""
    journals = journal.find(engine)
    return {
        "imports": [entry.describe() for entry in journals],
        "orphans": journal.orphans(engine),
        "placeholders": _orphan_placeholders(engine, journals),
    }


def remove_import_leftovers(engine: MongoDBEngine) -> dict[str, Any]:
    """Finish or undo every abandoned import and drop the orphaned collections; imports
    still running are left alone. Returns what was done."""
    done: dict[str, Any] = {"imports": [], "orphans": [], "placeholders": [], "running": []}
    journals = journal.find(engine)
    for entry in journals:
        if entry.alive():
            done["running"].append(entry.token)
            continue
        outcome = journal.recover(entry)
        done["imports"].append({**entry.describe(), "outcome": outcome})
    database = engine.storage.database()
    for name in journal.orphans(engine):
        database.drop_collection(name)
        done["orphans"].append(name)
    running = [entry for entry in journals if entry.token in done["running"]]
    for slug in _orphan_placeholders(engine, running):
        engine.unregister_app(slug)
        done["placeholders"].append(slug)
    engine.registry.load()
    return done
