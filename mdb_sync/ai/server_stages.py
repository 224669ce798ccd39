"""Whether the server runs an aggregation stage only some deployments have.

``$vectorSearch`` needs Atlas (or a search node), ``$rankFusion`` MongoDB 8.0+ with search:
the searches use them where the server has them and compute the same answer themselves
elsewhere. The answer is probed once per engine — one ``aggregate`` with the stage on a
collection that does not exist: a server that has the stage answers an empty result, one
that does not answers an error — and remembered for the engine's lifetime. An unreachable
server decides nothing (asked again on the next call).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger(__name__)

_known: weakref.WeakKeyDictionary[Any, dict[str, bool]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def server_supports_stage(engine: Any, stage: Mapping[str, Any], fallback: str) -> bool:
    """Whether ``engine``'s server runs ``stage`` (``{"$vectorSearch": {...}}``, a probe's
    minimal valid stage); ``fallback`` says in the log what is done instead when it does not.
    False without an engine."""
    if engine is None:
        return False
    (name,) = stage
    known = _known.get(engine, {}).get(name)
    if known is not None:
        return known
    with _lock:
        known = _known.get(engine, {}).get(name)
        if known is not None:
            return known
        try:
            # On a collection that never exists (an ``mdb_`` name no app can have): nothing
            # is read, nothing is created.
            engine.storage.database().command(
                "aggregate", "mdb_stage_probe", pipeline=[dict(stage)], cursor={}
            )
            known = True
        except OperationFailure as exc:
            log.info("no %s on this server (%s): %s", name, exc.code, fallback)
            known = False
        except PyMongoError:  # the server is unreachable: decide on the next call
            return False
        _known.setdefault(engine, {})[name] = known
    return known
