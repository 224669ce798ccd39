"""What a websocket answers a message it refuses with: :class:`MessageError` (raised by the
app's handlers and the built-in ``subscribe`` / ``unsubscribe``) and the error frame.

Below :mod:`.handlers` (which dispatches messages) and :mod:`.channels` (whose built-in
messages the dispatcher runs), which both use it.
"""

from __future__ import annotations

from typing import Any

from mdb_sync.exceptions import MongoDBEngineError


class MessageError(MongoDBEngineError, ValueError):
    """Raise it from a handler to answer the client with an error frame: ``code`` and
    ``message`` are shown to the client (other exceptions are logged and answered with a
    generic ``internal_error``, so nothing internal leaks)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


def error_frame(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": {"code": code, "message": message}}
    if request_id is not None:
        frame["id"] = request_id
    return frame
