"""Who is running an import or export, and whether it still runs.

An import's journal and an export's staging directory name their process (host, pid and the
process's start time, so a recycled pid is not mistaken for it). A later import, export or
``mdb cleanup`` decides from that whether the work was abandoned — its process died, killed
or crashed — and may be finished or undone, or whether it is still under way and must be
left alone. On another host the pid means nothing: there, work whose heartbeat is older
than :data:`STALE_AFTER` is taken as abandoned.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..embedded import is_alive as process_alive
from ..embedded import process_start_token

#: Seconds without a heartbeat after which work of another host is taken as abandoned.
STALE_AFTER = 120.0
#: How often running work refreshes its heartbeat.
HEARTBEAT_EVERY = 5.0


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _node() -> str:
    """Which pid namespace on which running kernel this process is in: two containers may
    share a host name, never a pid namespace; a reboot changes the boot id."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "|".join(parts)


def this_process() -> dict[str, Any]:
    """The record naming this process."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "node": _node(),
        "pid": pid,
        "started": process_start_token(pid),
    }


def is_alive(owner: Mapping[str, Any] | None, heartbeat: Any) -> bool:
    """Whether the process ``owner`` (a :func:`this_process` record) still runs: checked
    directly on this host, else judged by ``heartbeat`` (a datetime)."""
    if isinstance(owner, Mapping) and owner.get("node") == _node():
        pid = owner.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return False
        if not process_alive(pid):  # a zombie is gone: it will never finish the work
            return False
        started = owner.get("started")
        return started is None or started == process_start_token(pid)
    if not isinstance(heartbeat, _dt.datetime):
        return False
    if heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=_dt.timezone.utc)
    return bool((now() - heartbeat).total_seconds() < STALE_AFTER)


def describe(owner: Mapping[str, Any] | None) -> str:
    if not isinstance(owner, Mapping):
        return "an unknown process"
    return f"pid {owner.get('pid')} on {owner.get('host')}"
