"""How a registration claims its slug atomically across processes.

Two apps may never be registered when their physical names could collide (``my`` +
``app_tasks`` and ``my_app`` + ``tasks`` are both ``my_app_tasks``): one slug is a
``_``-separated prefix of the other. No set of unique indexes can express that rule (``my``
collides with every ``my_*``, which do not collide with each other), so registrations that
*could* collide take turns instead. Colliding slugs always share their first segment (the
text before the first ``_``), so that segment is the lock: a registration of a new slug

1. inserts ``{_id: <segment>}`` into ``mdb_registry_locks`` (the server's unique ``_id`` makes
   exactly one registration of the segment hold it; the others wait, at most
   :data:`LOCK_WAIT_SECONDS`);
2. looks for overlapping apps in ``apps_config`` with indexed queries, and if there are none
   inserts its record with status ``registering`` (a *pending claim*, which later
   registrations see);
3. checks that the lock is still its own (fencing: a holder stalled past its lease may have
   lost it, and then withdraws its record rather than risk two winners) and deletes it.

The lock is held for those few indexed round trips only; the slow part of a registration
(collection settings, index builds, seeding) runs after it, under the pending claim. A lock
or claim whose holder died is taken over: at once when the holder ran on this host and its
process is gone (or is this process, which no longer holds it: an attempt that failed
half-way, say because the server went away, and is retried), else once it is older than
:data:`LOCK_LEASE_SECONDS` (locks) or :data:`CLAIM_STALE_SECONDS` (claims).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from . import storage
from .exceptions import AppConflictError

if TYPE_CHECKING:
    from pymongo.collection import Collection

log = logging.getLogger(__name__)

#: Engine-internal collection of the per-segment registration locks (empty when idle).
LOCKS_COLLECTION = storage.REGISTRY_LOCKS
#: A lock older than this is considered abandoned (its critical section is a few queries).
LOCK_LEASE_SECONDS = 15.0
#: How long a registration waits for the lock of its segment before giving up.
LOCK_WAIT_SECONDS = 30.0
#: A pending claim (status ``registering``) older than this is considered abandoned.
CLAIM_STALE_SECONDS = 300.0
#: Status of an app whose first registration is still running.
REGISTERING = "registering"

_HOST = socket.gethostname()
#: Tokens of the locks and claims this process holds right now.
_held: set[str] = set()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def segment(slug: str) -> str:
    """The first ``_``-separated segment of ``slug``: every slug that could overlap it has the
    same one."""
    return slug.split("_", 1)[0]


def new_holder() -> dict[str, Any]:
    """Who holds a lock or a claim: a unique token, this host and process, and when. Call
    :func:`let_go` once it is released (or abandoned)."""
    token = uuid.uuid4().hex
    _held.add(token)
    return {"token": token, "host": _HOST, "pid": os.getpid(), "at": _now()}


def let_go(holder: dict[str, Any] | None) -> None:
    """This process no longer holds ``holder`` (whatever the database still says)."""
    if holder is not None:
        _held.discard(holder["token"])


def describe(holder: Any) -> str:
    """``pid 123 on host web-1 since 12:00:01 UTC`` (for error messages)."""
    if not isinstance(holder, dict):
        return "another process"
    at = holder.get("at")
    since = f" since {at:%H:%M:%S} UTC" if isinstance(at, _dt.datetime) else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{since}"


def _age(holder: dict[str, Any]) -> float:
    at = holder.get("at")
    if not isinstance(at, _dt.datetime):
        return float("inf")
    if at.tzinfo is None:
        at = at.replace(tzinfo=_dt.timezone.utc)
    return (_now() - at).total_seconds()


def _process_gone(holder: dict[str, Any]) -> bool:
    """True when ``holder`` ran on this host and its process no longer exists, or is this
    process and no longer holds it."""
    if holder.get("host") != _HOST:
        return False
    pid = holder.get("pid")
    if pid == os.getpid():
        return holder.get("token") not in _held
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def abandoned(holder: Any, max_age: float) -> bool:
    """True when the lock or claim of ``holder`` can be taken over."""
    if not isinstance(holder, dict):
        return True
    return _process_gone(holder) or _age(holder) > max_age


def claim_of(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pending claim of a registry record (None for a registered app)."""
    if record is None or record.get("status") != REGISTERING:
        return None
    claim = record.get("claim")
    return claim if isinstance(claim, dict) else {}


@contextmanager
def segment_lock(locks: Collection[Any], slug: str) -> Iterator[dict[str, Any]]:
    """Hold the registration lock of ``slug``'s segment; yields the holder document, whose
    ``token`` :func:`still_held` checks before the caller trusts what it did under the lock.

    Raises :class:`AppConflictError` when the lock stays held by a live registration for
    :data:`LOCK_WAIT_SECONDS`.
    """
    key = segment(slug)
    holder = new_holder()
    try:
        _acquire(locks, key, holder, slug)
    except BaseException:
        let_go(holder)
        raise
    try:
        yield holder
    finally:
        let_go(holder)
        try:
            locks.delete_one({"_id": key, "token": holder["token"]})
        except PyMongoError as exc:  # left behind: taken over as abandoned (see above)
            log.warning("could not release the registry lock of %r: %s", key, exc)


def _acquire(locks: Collection[Any], key: str, holder: dict[str, Any], slug: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    pause = 0.005
    while True:
        try:
            locks.insert_one({"_id": key, **holder})
            return
        except DuplicateKeyError:
            pass
        current = locks.find_one({"_id": key})
        if current is None:
            continue  # released meanwhile
        if abandoned(current, LOCK_LEASE_SECONDS):
            locks.delete_one({"_id": key, "token": current.get("token")})
            continue
        if time.monotonic() >= deadline:
            raise AppConflictError(
                f"app {slug!r} cannot be registered now: another registration of a slug "
                f"starting with {key!r} ({describe(current)}) holds the registry lock; "
                "retry shortly",
                context={"app": slug, "segment": key},
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def still_held(locks: Collection[Any], slug: str, holder: dict[str, Any]) -> bool:
    """True when the lock of ``slug``'s segment is still the one ``holder`` took."""
    return locks.find_one({"_id": segment(slug), "token": holder["token"]}, {"_id": 1}) is not None
