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

from ..context import NoCurrentEngineError, current_engine
from ..deprecation import renamed_parameters
from ..exceptions import RealtimeError
from .bus import EVENTS_COLLECTION, MODES, EventBus, Subscription
from .channels import MAX_CHANNEL_LENGTH, channel_resource, validate_channel
from .codec import encode_message
from .events import Event

if TYPE_CHECKING:
    from ..engine import MongoDBEngine


@renamed_parameters(app_slug="slug")
def engine_for(slug: str, engine: MongoDBEngine | None = None) -> MongoDBEngine:
    """``engine``, else the current one (:func:`mdb_sync.context.current_engine`: the
    request's or task's, else the process's one initialized engine; with several, the only
    one that has ``slug`` registered). Raises :class:`RealtimeError` when none fits."""
    if engine is not None:
        return engine
    try:
        return current_engine(slug)
    except NoCurrentEngineError as exc:
        raise RealtimeError(str(exc), context=exc.context) from exc


@renamed_parameters(app_slug="slug")
def broadcast_to_app(
    slug: str,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    engine: MongoDBEngine | None = None,
) -> Event:
    """Send ``message`` to every live connection of ``slug``, in every process.
    ``exclude``: connection id(s) to skip. See :meth:`EventBus.publish`."""
    bus = engine_for(slug, engine).events
    return bus.publish(slug, message, exclude=exclude, local_only=local_only)


@renamed_parameters(app_slug="slug")
def send_to_user(
    slug: str,
    user_id: Any,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    engine: MongoDBEngine | None = None,
) -> Event:
    """Send ``message`` to every live connection of user ``user_id`` in ``slug``,
    whichever process holds them."""
    bus = engine_for(slug, engine).events
    return bus.publish(slug, message, user_id=user_id, exclude=exclude, local_only=local_only)


@renamed_parameters(app_slug="slug")
def broadcast_to_channel(
    slug: str,
    channel: str,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    engine: MongoDBEngine | None = None,
) -> Event:
    """Send ``message`` to the live connections of ``slug`` that joined ``channel``,
    whichever process holds them. ``exclude``: connection id(s) to skip. The channel name is
    checked (:func:`validate_channel`) before anything is stored."""
    name = validate_channel(channel)  # None is no channel: never the whole app
    bus = engine_for(slug, engine).events
    return bus.publish(slug, message, channel=name, exclude=exclude, local_only=local_only)


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
