"""Realtime: broadcasts that reach every web process and worker through MongoDB.

::

    from mdb_sync.realtime import broadcast_to_app, send_to_user

    broadcast_to_app("my_app", {"type": "task.added", "task": task})   # every connection
    send_to_user("my_app", user_id, {"type": "notification", "text": "Done"})
    broadcast_to_channel("my_app", "rooms/42", {"type": "said", "text": "hi"})  # its members

Call them from anywhere — a request thread, a script, a Celery task. The message is JSON
(``ObjectId`` and ``datetime`` values are rendered as strings), encoded once, delivered at
once to this process's connections and through the ``mdb_events`` collection to every other
process's: see :class:`~mdb_sync.realtime.bus.EventBus` (``engine.events``) for how, and
``flask_mdb``'s websockets for the connections that receive them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import RealtimeError
from .bus import EVENTS_COLLECTION, MODES, EventBus, Subscription
from .channels import MAX_CHANNEL_LENGTH, channel_resource, validate_channel
from .codec import encode_message
from .events import Event

if TYPE_CHECKING:
    from ..engine import MongoDBEngine


def engine_for(app_slug: str, engine: MongoDBEngine | None = None) -> MongoDBEngine:
    """``engine``, else the process's one initialized engine (a web worker's, a Celery
    worker's, a script's); with several, the only one that has ``app_slug`` registered."""
    if engine is not None:
        return engine
    from ..engine import _ENGINES

    engines = [e for e in list(_ENGINES) if e.is_initialized]
    if len(engines) > 1:
        engines = [e for e in engines if e.registry.get_record(app_slug) is not None]
    if len(engines) == 1:
        return engines[0]
    if not engines:
        raise RealtimeError(
            "no initialized engine in this process: pass engine=..., or initialize one first "
            "(a Celery worker with MDBCelery has one in every pool process)"
        )
    raise RealtimeError(
        f"several engines in this process serve app {app_slug!r}: pass engine=... to choose"
    )


def broadcast_to_app(
    app_slug: str,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    engine: MongoDBEngine | None = None,
) -> Event:
    """Send ``message`` to every live connection of ``app_slug``, in every process.
    ``exclude``: connection id(s) to skip. See :meth:`EventBus.publish`."""
    bus = engine_for(app_slug, engine).events
    return bus.publish(app_slug, message, exclude=exclude, local_only=local_only)


def send_to_user(
    app_slug: str,
    user_id: Any,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    engine: MongoDBEngine | None = None,
) -> Event:
    """Send ``message`` to every live connection of user ``user_id`` in ``app_slug``,
    whichever process holds them."""
    bus = engine_for(app_slug, engine).events
    return bus.publish(app_slug, message, user_id=user_id, exclude=exclude, local_only=local_only)


def broadcast_to_channel(
    app_slug: str,
    channel: str,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    engine: MongoDBEngine | None = None,
) -> Event:
    """Send ``message`` to the live connections of ``app_slug`` that joined ``channel``,
    whichever process holds them. ``exclude``: connection id(s) to skip. The channel name is
    checked (:func:`validate_channel`) before anything is stored."""
    name = validate_channel(channel)  # None is no channel: never the whole app
    bus = engine_for(app_slug, engine).events
    return bus.publish(app_slug, message, channel=name, exclude=exclude, local_only=local_only)


__all__ = [
    "EVENTS_COLLECTION",
    "MAX_CHANNEL_LENGTH",
    "MODES",
    "Event",
    "EventBus",
    "Subscription",
    "broadcast_to_app",
    "broadcast_to_channel",
    "channel_resource",
    "encode_message",
    "engine_for",
    "send_to_user",
    "validate_channel",
]
