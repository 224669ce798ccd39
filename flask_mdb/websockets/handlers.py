"""Message handlers: what an app does with the JSON its clients send.

Clients send JSON objects with a ``type`` (and optionally an ``id`` to match the answer)::

    {"type": "chat", "id": 7, "text": "hello"}

Which handler runs, in this order (the first that applies):

1. a frame that is not a JSON object with a string ``type`` is answered with an error
   (``bad_json``, ``bad_message``) — no handler sees it;
2. the handler registered for that ``type`` (an app may take over a built-in type this way);
3. the built-in types: ``ping`` (answered ``pong``), ``subscribe`` and ``unsubscribe``
   (channels, :mod:`.channels`);
4. the app's catch-all handler (registered without a type); returning :data:`UNHANDLED`
   from it means "not mine" — the client then gets the ``unknown_type`` error;
5. the ``unknown_type`` error.

So a catch-all handler, as the seeds register them, never silences ``ping`` or the channel
messages. A handler is called with the connection and the decoded message, on the
connection's own thread, with the app bound (``flask_mdb.db`` is its sandboxed database).
What it returns (if not None) is sent back, with the request's ``id``. A bad message never
kills the connection: it is answered with an error frame ::

    {"type": "error", "id": 7, "error": {"code": "bad_json", "message": "..."}}

with ``code`` one of ``bad_json``, ``bad_message``, ``unknown_type``, ``internal_error`` or
the code of a :class:`MessageError` the handler raised.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mdb_sync.deprecation import renamed_parameters
from mdb_sync.exceptions import ConfigurationError
from mdb_sync.scoping import validate_slug

from .channels import subscribe, unsubscribe
from .errors import MessageError, error_frame

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("flask_mdb.websockets")

MessageHandler = Callable[["Connection", Any], Any]
ConnectionHandler = Callable[["Connection"], Any]

#: The key of an app's catch-all handler.
ANY_TYPE: str | None = None


class _Unhandled:
    """What a catch-all handler returns for a message it does not handle."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNHANDLED"


#: Returned by a catch-all handler: "not a type I handle" (the client gets ``unknown_type``).
UNHANDLED = _Unhandled()


class HandlerRegistry:
    """Message, connect and disconnect handlers per app slug (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, dict[str | None, MessageHandler]] = {}
        self._connects: dict[str, list[ConnectionHandler]] = {}
        self._disconnects: dict[str, list[ConnectionHandler]] = {}

    def add_message(self, slug: str, handler: MessageHandler, message_type: str | None) -> None:
        validate_slug(slug)
        if message_type is not None and (not isinstance(message_type, str) or not message_type):
            raise ConfigurationError("message_type must be a non-empty string (or None: any)")
        if not callable(handler):
            raise ConfigurationError(f"the message handler must be callable, not {handler!r}")
        with self._lock:
            handlers = self._messages.setdefault(slug, {})
            current = handlers.get(message_type)
            if current is not None and current is not handler:
                what = f"type {message_type!r}" if message_type else "any type"
                raise ConfigurationError(
                    f"app {slug!r} already has a websocket handler for {what}: "
                    f"{getattr(current, '__qualname__', current)!r}"
                )
            handlers[message_type] = handler

    def add_connection_hook(self, slug: str, handler: ConnectionHandler, on: str) -> None:
        validate_slug(slug)
        if not callable(handler):
            raise ConfigurationError(f"the {on} handler must be callable, not {handler!r}")
        hooks = self._connects if on == "connect" else self._disconnects
        with self._lock:
            if handler not in hooks.setdefault(slug, []):
                hooks[slug].append(handler)

    def message_handler(self, slug: str, message_type: Any) -> MessageHandler | None:
        """The handler registered for ``message_type``, else the catch-all (or None)."""
        handlers = self._messages.get(slug) or {}
        if isinstance(message_type, str) and message_type in handlers:
            return handlers[message_type]
        return handlers.get(ANY_TYPE)

    def typed_handler(self, slug: str, message_type: str) -> MessageHandler | None:
        """The handler registered for exactly ``message_type``."""
        return (self._messages.get(slug) or {}).get(message_type)

    def catch_all(self, slug: str) -> MessageHandler | None:
        return (self._messages.get(slug) or {}).get(ANY_TYPE)

    def connect_hooks(self, slug: str) -> list[ConnectionHandler]:
        return list(self._connects.get(slug, ()))

    def disconnect_hooks(self, slug: str) -> list[ConnectionHandler]:
        return list(self._disconnects.get(slug, ()))

    def clear(self, slug: str | None = None) -> None:
        """Forget the handlers of ``slug`` (or of every app)."""
        with self._lock:
            for table in (self._messages, self._connects, self._disconnects):
                if slug is None:
                    table.clear()
                else:
                    table.pop(slug, None)


#: The process's handlers (like Flask's view functions, registered at import time).
registry = HandlerRegistry()


@renamed_parameters(app_slug="slug")
def register_message_handler(
    slug: str, handler: MessageHandler | None = None, message_type: str | None = None
) -> Any:
    """Handle the JSON messages clients of ``slug`` send: those of ``message_type``, or
    (without one) every type that has no handler of its own and is not built in (``ping``,
    ``subscribe``, ``unsubscribe``; a catch-all returns :data:`UNHANDLED` for a type it does
    not know). ``handler(connection, message)`` may return a reply. Also a decorator::

        @register_message_handler("chat", message_type="say")
        def say(connection, message):
            broadcast_to_app("chat", {"type": "said", "text": message["text"]})
            return {"type": "ok"}
    """
    if handler is None:

        def decorator(func: MessageHandler) -> MessageHandler:
            registry.add_message(slug, func, message_type)
            return func

        return decorator
    registry.add_message(slug, handler, message_type)
    return handler


@renamed_parameters(app_slug="slug")
def register_connect_handler(slug: str, handler: ConnectionHandler | None = None) -> Any:
    """Call ``handler(connection)`` when a client of ``slug`` has connected and been
    authenticated. Returning False (or raising :class:`MessageError`) refuses it: the
    connection is closed with code 1008. Also a decorator."""
    return _hook(slug, handler, "connect")


@renamed_parameters(app_slug="slug")
def register_disconnect_handler(slug: str, handler: ConnectionHandler | None = None) -> Any:
    """Call ``handler(connection)`` after a client of ``slug`` is gone (whatever the
    reason). Also a decorator."""
    return _hook(slug, handler, "disconnect")


def _hook(app_slug: str, handler: ConnectionHandler | None, on: str) -> Any:
    if handler is None:

        def decorator(func: ConnectionHandler) -> ConnectionHandler:
            registry.add_connection_hook(app_slug, func, on)
            return func

        return decorator
    registry.add_connection_hook(app_slug, handler, on)
    return handler


# --- dispatch -------------------------------------------------------------------------------------


def dispatch(connection: Connection, raw: str | bytes) -> None:
    """Decode one client frame, run its handler, answer it (never raises)."""
    if not isinstance(raw, str):
        connection.send(error_frame("bad_message", "binary frames are not accepted: send JSON"))
        return
    try:
        message = json.loads(raw)
    except ValueError as exc:
        connection.send(error_frame("bad_json", f"the message is not valid JSON: {exc}"))
        return
    request_id = message.get("id") if isinstance(message, dict) else None
    if not (request_id is None or isinstance(request_id, str | int)) or isinstance(
        request_id, bool
    ):
        request_id = None
    message_type = message.get("type") if isinstance(message, dict) else None
    if not isinstance(message_type, str):
        connection.send(
            error_frame("bad_message", 'send a JSON object with a string "type"', request_id)
        )
        return
    slug = connection.app_slug
    handler = registry.typed_handler(slug, message_type) or BUILT_IN.get(message_type)
    catch_all = handler is None
    if catch_all:
        handler = registry.catch_all(slug)
    if handler is None:
        _unknown(connection, message_type, request_id)
        return
    try:
        reply = handler(connection, message)
        if catch_all and reply is UNHANDLED:
            _unknown(connection, message_type, request_id)
        elif reply is not None:
            connection.send(_with_id(reply, request_id))
    except MessageError as exc:
        connection.send(error_frame(exc.code, exc.message, request_id))
    except Exception:
        log.exception(
            "websocket handler %r of app %r failed",
            getattr(handler, "__qualname__", handler),
            connection.app_slug,
        )
        connection.send(
            error_frame("internal_error", "the server could not handle this message", request_id)
        )


def _unknown(connection: Connection, message_type: str, request_id: Any) -> None:
    connection.send(
        error_frame(
            "unknown_type", f"no handler for messages of type {message_type[:100]!r}", request_id
        )
    )


def _pong(connection: Connection, message: Any) -> dict[str, Any]:
    return {"type": "pong"}


#: The built-in message types (after the app's handlers for the same type, before its
#: catch-all).
BUILT_IN: dict[str, MessageHandler] = {
    "ping": _pong,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
}


def _with_id(reply: Any, request_id: Any) -> Any:
    if request_id is not None and isinstance(reply, dict) and "id" not in reply:
        return {**reply, "id": request_id}
    return reply
