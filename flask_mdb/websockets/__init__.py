"""Websockets declared in the manifest, served with flask-sock, with broadcasts that reach
every process.

::

    # manifest.json
    "websockets": {"realtime": {"path": "/ws", "auth": {"required": true}, "ping_interval": 30}}

    from flask_mdb.websockets import broadcast_to_app, broadcast_to_channel

    broadcast_to_app("my_app", {"type": "update", "data": {...}})   # any process
    # clients send {"type": "subscribe", "channel": "rooms/42"} (authorized by the app's RBAC,
    # or register_channel_authorizer), then:
    broadcast_to_channel("my_app", "rooms/42", {"type": "said", "text": "hi"})

``MDB.init_app`` serves the endpoints of the ``MDB_MANIFESTS`` (``mdb.register_websocket_routes(
app, slug)`` serves another registered app's). Each app has a connection manager per process
(:func:`get_websocket_manager`); sending goes through the engine's event bus
(:mod:`mdb_sync.realtime`), so a message published in a request, a script or a Celery task
reaches the app's clients in every web process.

A socket does not outlive its login: a logout, a password change, a deactivation, an expiry
or a role change the app's policy refuses closes it in every process, with code 4401
(credentials revoked or lapsed) or 4403 (access revoked), and no message of it is handled
afterwards (:mod:`.credentials`, :mod:`mdb_sync.auth.revocation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, has_app_context

from mdb_sync import realtime
from mdb_sync.deprecation import renamed_parameters
from mdb_sync.exceptions import RealtimeError
from mdb_sync.realtime import Event

from ..state import get_state, lazy_engines_waiting
from .channels import authorizers as channel_authorizers
from .channels import register_channel_authorizer
from .connection import Connection
from .endpoints import Endpoint, endpoints_of
from .errors import MessageError
from .handlers import (
    UNHANDLED,
    register_connect_handler,
    register_disconnect_handler,
    register_message_handler,
)
from .handlers import registry as handler_registry
from .manager import WebSocketManager, connection_ids
from .routes import bearer_token, get_websocket_manager


def _engine(app: Flask | None) -> Any:
    if app is not None or has_app_context():
        return get_state(app).ensure_ready()
    return None  # outside Flask: the process's engine


def _publish(send: Callable[..., Event], app: Flask | None, **kwargs: Any) -> Event:
    """Publish with the right engine; before any engine has started, say why (the
    extension's engine is lazy) instead of only that there is none."""
    engine = _engine(app)
    try:
        return send(engine=engine, **kwargs)
    except RealtimeError as exc:
        if engine is not None or not lazy_engines_waiting():
            raise
        raise RealtimeError(
            f"cannot send to {kwargs['slug']!r}: {exc}. Note that flask_mdb starts its "
            "engine lazily, on the first request (or the first use of mdb.engine / "
            "mdb.get_db()), and this process has an MDB extension whose engine has not "
            "started. Outside a request, pass app=your_flask_app, call it inside "
            "`with app.app_context():`, or start the engine first with mdb.get_engine(app)",
            context={"app": kwargs["slug"]},
        ) from exc


@renamed_parameters(app_slug="slug")
def broadcast_to_app(
    slug: str,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    app: Flask | None = None,
) -> Event:
    """Send ``message`` to every connection of ``slug`` in every process (with the current
    Flask app's engine — or ``app``'s; outside both, the process's). ``exclude``: connection(s)
    to skip (:class:`Connection` objects or their ids)."""
    return _publish(
        realtime.broadcast_to_app,
        app,
        slug=slug,
        message=message,
        exclude=connection_ids(exclude),
        local_only=local_only,
    )


@renamed_parameters(app_slug="slug")
def send_to_user(
    slug: str,
    user_id: Any,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    app: Flask | None = None,
) -> Event:
    """Send ``message`` to every connection of user ``user_id`` of ``slug``, in every
    process. ``exclude``: connection(s) to skip — e.g. the sender's own, so a user's other
    tabs hear of a change but the tab that made it does not."""
    return _publish(
        realtime.send_to_user,
        app,
        slug=slug,
        user_id=user_id,
        message=message,
        exclude=connection_ids(exclude),
        local_only=local_only,
    )


@renamed_parameters(app_slug="slug")
def broadcast_to_channel(
    slug: str,
    channel: str,
    message: Any,
    *,
    exclude: Any = None,
    local_only: bool = False,
    app: Flask | None = None,
) -> Event:
    """Send ``message`` to the connections of ``slug`` that joined ``channel``, in
    every process (engine: as for :func:`broadcast_to_app`). ``exclude``: connection(s) to
    skip. A bad channel name raises :class:`~mdb_sync.exceptions.InvalidChannelError`."""
    return _publish(
        realtime.broadcast_to_channel,
        app,
        slug=slug,
        channel=channel,
        message=message,
        exclude=connection_ids(exclude),
        local_only=local_only,
    )


__all__ = [
    "UNHANDLED",
    "Connection",
    "Endpoint",
    "MessageError",
    "WebSocketManager",
    "bearer_token",
    "broadcast_to_app",
    "broadcast_to_channel",
    "channel_authorizers",
    "endpoints_of",
    "get_websocket_manager",
    "handler_registry",
    "register_channel_authorizer",
    "register_connect_handler",
    "register_disconnect_handler",
    "register_message_handler",
    "send_to_user",
]
