"""An engine's watch over the embedded server it uses: notices the server died, brings it back.

Two signals say the server is gone: pymongo's monitor reports a failed heartbeat (at once
when the process died — its port refuses connections — or after the heartbeat timeout when
it hangs), and, before each operation, the server's pid no longer exists (a process that was
itself stopped while its server was killed learns it there first). The watch then runs one
recovery attempt on a background thread, never on the monitor's thread or the caller's:
:func:`mdb_sync.embedded.recover`, under ``server.lock``, re-attaches to the server another
process started meanwhile or starts a new one, on the same port when it is free (the
engine's client then reconnects on its own), else on a new port (its connection builds a
new client; scoped collections pick it up on their next operation).

States: ``running``; ``recovering`` (an attempt is under way: operations wait for it, at most
the server-selection timeout); ``unresponsive`` (the server process is alive but does not
answer — stopped with SIGSTOP, or overloaded — and is left alone: operations go on and time
out on their own bounds); ``down`` (it died and could not be restarted, was stopped with
``mdb embedded stop``, or was a private in-memory server: operations fail at once with
:class:`~mdb_sync.exceptions.EmbeddedServerUnavailable` saying which, and try again after a
backoff of 1 s doubling up to 30 s — never a loop). A successful heartbeat means ``running``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from pymongo import monitoring

from . import embedded
from .exceptions import EmbeddedServerUnavailable

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

RUNNING = "running"
RECOVERING = "recovering"
UNRESPONSIVE = "unresponsive"
DOWN = "down"

#: First and longest wait between two recovery attempts of one engine (seconds).
MIN_BACKOFF = 1.0
MAX_BACKOFF = 30.0


class EmbeddedWatch:
    """Watches the embedded server of one engine's connection (see the module docstring);
    tells the connection (``embedded_replaced``) when the server came back elsewhere."""

    def __init__(
        self, connection: Connection, server: embedded.EmbeddedServer, durable: bool | None
    ) -> None:
        self._connection = weakref.ref(connection)
        self._durable = durable
        self.server = server
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self.state = RUNNING
        self.error: str | None = None
        self.recoveries = 0
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._closed = False

    def after_fork_in_child(self) -> None:
        self._reset()

    def close(self) -> None:
        """Stop reacting to heartbeats (the engine shuts down)."""
        with self._lock:
            self._closed = True

    def listener(self) -> monitoring.ServerHeartbeatListener:
        """The pymongo heartbeat listener to install on the engine's client."""
        return _HeartbeatListener(self)

    def status(self) -> dict[str, Any]:
        """For the health report: no I/O."""
        info: dict[str, Any] = {
            "state": self.state,
            "pid": self.server.pid,
            "port": self.server.port,
            "dir": str(self.server.base_dir) if self.server.base_dir else embedded.MEMORY,
            "recoveries": self.recoveries,
        }
        if self.error:
            info["error"] = self.error
        return info

    # --- events (pymongo's monitor thread: cheap, no I/O) ----------------------------------

    def heartbeat_failed(self) -> None:
        self._start_attempt()

    def heartbeat_succeeded(self) -> None:
        if self.state in (UNRESPONSIVE, DOWN):
            with self._lock:
                if self.state in (UNRESPONSIVE, DOWN):
                    self.state, self.error, self._backoff = RUNNING, None, 0.0

    # --- the operation path ------------------------------------------------------------------

    def server_gone(self) -> bool:
        """True when the server's process no longer exists (one ``kill(pid, 0)``, about a
        microsecond): checked before each operation, so an operation started after a crash
        waits for the recovery instead of failing on the dead server's port first."""
        try:
            os.kill(self.server.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def check(self, timeout: float) -> None:
        """Called before an operation when the state is not ``running``: wait for a recovery
        under way (at most ``timeout`` seconds), raise when the server is down."""
        if self.state == DOWN and not self._start_attempt():
            raise EmbeddedServerUnavailable(self.error or "the embedded server is down")
        if self.state == RECOVERING:
            self._done.wait(timeout)
        if self.state == DOWN:
            raise EmbeddedServerUnavailable(self.error or "the embedded server is down")

    # --- recovery ------------------------------------------------------------------------------

    def _start_attempt(self) -> bool:
        """Start a recovery attempt unless one runs or the backoff is not over; True when an
        attempt is under way."""
        with self._lock:
            if self._closed:
                return False
            if self.state == RECOVERING:
                return True
            if time.monotonic() < self._next_attempt:
                return False
            self.state = RECOVERING
            self._done.clear()
        threading.Thread(target=self._recover, name="mdb-embedded-recovery", daemon=True).start()
        return True

    def _recover(self) -> None:
        server, state, error = self.server, RUNNING, None
        try:
            if server.is_private:
                replacement = self._check_private(server)
            else:
                assert server.base_dir is not None
                replacement = embedded.recover(server.base_dir, durable=self._durable)
        except EmbeddedServerUnavailable as exc:
            state = UNRESPONSIVE if exc.context.get("reason") == "unresponsive" else DOWN
            error = str(exc)
        except Exception as exc:  # a bug or an OS error: report it, never kill the thread
            state, error = DOWN, f"recovering the embedded server failed: {exc}"
            log.exception("recovering the embedded server failed")
        else:
            connection = self._connection()
            if replacement is not server and connection is not None and not self._closed:
                connection.embedded_replaced(replacement)
            if replacement.pid != server.pid:
                self.recoveries += 1
            self.server = replacement
        with self._lock:
            self.state, self.error = state, error
            if state == RUNNING:
                self._backoff = 0.0
            else:
                self._backoff = min(max(self._backoff * 2, MIN_BACKOFF), MAX_BACKOFF)
                self._next_attempt = time.monotonic() + self._backoff
                log.warning("embedded server %s: %s", state, error)
            self._done.set()

    @staticmethod
    def _check_private(server: embedded.EmbeddedServer) -> embedded.EmbeddedServer:
        if server.is_running():
            return server
        if embedded.is_alive(server.pid):
            raise EmbeddedServerUnavailable(
                f"the private in-memory embedded server (pid {server.pid}) does not answer "
                "(stopped with SIGSTOP, or overloaded)",
                context={"reason": "unresponsive", "pid": server.pid},
            )
        raise EmbeddedServerUnavailable(
            f"the private in-memory embedded server (pid {server.pid}) exited and its data "
            "went with it; it is not restarted: create a new engine",
            context={"reason": "exited", "pid": server.pid},
        )


class _HeartbeatListener(monitoring.ServerHeartbeatListener):
    def __init__(self, watch: EmbeddedWatch) -> None:
        self._watch = weakref.ref(watch)

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        watch = self._watch()
        if watch is not None:
            watch.heartbeat_succeeded()

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        watch = self._watch()
        if watch is not None:
            watch.heartbeat_failed()
