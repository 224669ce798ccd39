"""Total deadlines for blocking calls to other servers, and a bounded HTTP fetch built on them.

A socket timeout bounds one operation, not a call: a server that sends its answer (headers
included) one byte every few seconds never trips it, and a name lookup has no timeout at all
(``getaddrinfo`` blocks as long as the resolver likes). A call to another party's server —
an identity provider, a file server, a model endpoint — must end within its bound whatever
that server, its DNS or a proxy on the way do. Two tools here give it one:

- :func:`call_within` runs a blocking call in a daemon worker thread and waits for it at most
  ``seconds``; then it raises :class:`~mdb_sync.exceptions.NetworkTimeout` naming the call
  and the bound. The abandoned worker is not killed (Python cannot), but every socket it
  registered (:meth:`Call.track`) is shut down, which ends a blocked read or write at once;
  a worker stuck where no socket helps (a name lookup) ends when the resolver gives up.
  At most :data:`MAX_ABANDONED_PER_HOST` abandoned workers may be alive at once for one
  host, and :data:`MAX_ABANDONED` in all, per :class:`Workers` (the process-wide
  :data:`WORKERS` unless told): beyond that, new calls (to that host) are refused at once
  with the same error instead of piling up threads — a hostile DNS server making every
  sign-in leave a thread behind runs into the cap, not out of memory, and one app's hostile
  provider host does not get the calls of other apps to other hosts refused.
- :func:`deadline` sets a deadline for the calls the current thread makes, which code
  blocking in small steps (an HTTP client's reads) clips each step to
  (:func:`remaining_within`): no thread needed.

:func:`fetch` is a bounded HTTP call on top of :func:`call_within`: status, headers and a
body of at most ``max_bytes``, redirects followed only when asked, proxies from the
environment as urllib reads them, and nothing but ``http``/``https`` URLs.
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from .exceptions import NetworkError, NetworkTimeout

T = TypeVar("T")

#: Abandoned workers (calls whose caller stopped waiting) that may be alive at once in one
#: :class:`Workers`; past it new calls are refused at once.
MAX_ABANDONED = 128
#: Abandoned workers of calls to one host that may be alive at once; past it new calls to
#: that host are refused at once (calls to other hosts go on, up to :data:`MAX_ABANDONED`).
MAX_ABANDONED_PER_HOST = 16
#: The longest bound accepted (a day): larger values are mistakes (and overflow waits).
MAX_SECONDS = 86_400.0
_CHUNK = 65_536


# --- the deadline of a thread's calls -----------------------------------------------------------


class Deadline:
    """When the calls made under :func:`deadline` must be done (``time.monotonic()``)."""

    __slots__ = ("at", "seconds", "started")

    def __init__(self, seconds: float, at: float, started: float) -> None:
        self.seconds = seconds
        self.at = at
        self.started = started

    def remaining(self) -> float:
        """Seconds left (zero or less once it has passed)."""
        return self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


_local = threading.local()


def current_deadline() -> Deadline | None:
    """The deadline of the current thread's calls, if one is set."""
    found: Deadline | None = getattr(_local, "deadline", None)
    return found


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Within the block, the current thread's calls must be done ``seconds`` from now (or
    by the enclosing deadline, if that is sooner). Only code that asks
    (:func:`remaining_within`) honours it; it is reset when the block ends, so a generator
    must leave the block before it yields."""
    _check_seconds(seconds)
    outer = current_deadline()
    now = time.monotonic()
    at = now + seconds if outer is None else min(now + seconds, outer.at)
    _local.deadline = Deadline(seconds, at, now)
    try:
        yield _local.deadline
    finally:
        _local.deadline = outer


def remaining_within(timeout: float | None) -> float | None:
    """``timeout`` (None: no timeout) shortened to what is left of the current thread's
    deadline; zero or less when the deadline has passed."""
    current = current_deadline()
    if current is None:
        return timeout
    left = current.remaining()
    return left if timeout is None else min(timeout, left)


def _check_seconds(seconds: float) -> None:
    if not (isinstance(seconds, (int, float)) and 0 < seconds <= MAX_SECONDS):
        raise ValueError(f"a deadline must be a number of seconds in (0, {MAX_SECONDS:g}]")


# --- calls in worker threads --------------------------------------------------------------------


class Call:
    """One call run by :meth:`Workers.call`, as the function running it sees it."""

    def __init__(self, what: str, seconds: float, workers: Workers) -> None:
        self.what = what
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._workers = workers

    def remaining(self) -> float:
        """Seconds left before the caller stops waiting."""
        return self.deadline - time.monotonic()

    def track(self, sock: socket.socket) -> None:
        """Shut ``sock`` down if the caller stops waiting (at once if it already has),
        which ends a read or write blocked on it."""
        self._workers.track(self, sock)


@dataclass
class _Running:
    """What :class:`Workers` knows of a call in progress."""

    #: Duplicates of the tracked sockets' descriptors, closed when the call ends: a
    #: shutdown can never reach a later socket reusing a closed one's number.
    sockets: list[socket.socket] = field(default_factory=list)
    abandoned: bool = False
    host: str | None = None


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Workers:
    """Runs calls in worker threads with a total deadline, and keeps count of the workers
    whose caller stopped waiting (abandoned) while they are alive: at most ``limit`` in all
    and ``per_host`` for calls naming one host — a new call is refused while there are that
    many. (Calls already running when a limit is reached may still be abandoned: each has
    its caller waiting, so there are no more of them than threads calling.)"""

    def __init__(self, limit: int = MAX_ABANDONED, per_host: int = MAX_ABANDONED_PER_HOST) -> None:
        for name, value in (("limit", limit), ("per_host", per_host)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Workers.{name} must be a positive integer")
        self.limit = limit
        self.per_host = per_host
        self._lock = threading.Lock()
        self._abandoned = 0
        #: Abandoned workers alive, by host (only hosts with some: at most ``limit`` keys).
        self._by_host: dict[str, int] = {}
        self._running: dict[Call, _Running] = {}
        _ALL_WORKERS.add(self)

    @property
    def abandoned(self) -> int:
        """Abandoned workers still alive (still blocked in their call)."""
        with self._lock:
            return self._abandoned

    def call(
        self, fn: Callable[[Call], T], seconds: float, *, what: str, host: str | None = None
    ) -> T:
        """``fn(call)`` run in a daemon thread, its result or exception returned or raised
        here; :class:`NetworkTimeout` when it takes longer than ``seconds`` (the sockets it
        tracked are then shut down) or, at once, when ``limit`` abandoned workers are still
        alive, or ``per_host`` of calls to ``host`` (the server's name, lower case: what
        its DNS or the server itself can hold up). ``what`` names the call in errors ("the
        token endpoint of Google")."""
        _check_seconds(seconds)
        call = Call(what, seconds, self)
        with self._lock:
            stuck = self._abandoned
            stuck_here = self._by_host.get(host, 0) if host is not None else 0
            refused = stuck >= self.limit or stuck_here >= self.per_host
            if not refused:
                self._running[call] = _Running(host=host)
        if refused:
            if stuck >= self.limit:
                where, count, limit = "in this process", stuck, self.limit
            else:
                where, count, limit = f"for {host}", stuck_here, self.per_host
            raise NetworkTimeout(
                f"{what} was refused: {count} earlier calls that timed out are still stuck "
                f"{where} (at most {limit}); the network or the servers called are not "
                "answering",
                context={"abandoned": count, "limit": limit, "host": host},
            )
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()

        def run() -> None:
            try:
                outcome.append((True, fn(call)))
            except BaseException as exc:  # handed to the caller below
                outcome.append((False, exc))
            finally:
                self._finish(call)
                done.set()

        worker = threading.Thread(target=run, name=f"mdb-net {what}"[:64], daemon=True)
        try:
            worker.start()
        except BaseException:
            self._finish(call)
            raise
        if not done.wait(seconds) and self._abandon(call):
            raise NetworkTimeout(
                f"{what} took longer than {seconds:g}s", context={"seconds": seconds}
            )
        done.wait()  # finished just as the wait ended: its outcome is being stored
        ok, value = outcome[0]
        if ok:
            return cast(T, value)
        raise value

    def track(self, call: Call, sock: socket.socket) -> None:
        """See :meth:`Call.track`."""
        try:
            copy = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return  # already closed: nothing left to interrupt
        with self._lock:
            running = self._running.get(call)
            if running is not None and not running.abandoned:
                running.sockets.append(copy)
                return
        if running is not None:
            _shut(copy)
        copy.close()

    def _abandon(self, call: Call) -> bool:
        """Mark ``call`` abandoned and cut its sockets (False: it finished first)."""
        with self._lock:
            running = self._running.get(call)
            if running is None:
                return False
            running.abandoned = True
            self._abandoned += 1
            if running.host is not None:
                self._by_host[running.host] = self._by_host.get(running.host, 0) + 1
            sockets = list(running.sockets)
        for sock in sockets:
            _shut(sock)
        return True

    def _finish(self, call: Call) -> None:
        with self._lock:
            running = self._running.pop(call, None)
            if running is not None and running.abandoned:
                self._abandoned -= 1
                if running.host is not None:
                    left = self._by_host.pop(running.host) - 1
                    if left:
                        self._by_host[running.host] = left
        for sock in running.sockets if running is not None else ():
            sock.close()

    def after_fork_in_child(self) -> None:
        """A forked child has none of its parent's workers (threads do not survive a fork):
        nothing is stuck there, and a lock held at the fork would never be released."""
        self._lock = threading.Lock()
        self._abandoned = 0
        self._by_host = {}
        self._running = {}


_ALL_WORKERS: weakref.WeakSet[Workers] = weakref.WeakSet()

#: The workers of every bounded call that names no other.
WORKERS = Workers()


def call_within(
    fn: Callable[[Call], T],
    seconds: float,
    *,
    what: str,
    host: str | None = None,
    workers: Workers | None = None,
) -> T:
    """``fn(call)`` within ``seconds`` in all (see :meth:`Workers.call`: ``host`` names the
    server the call depends on), counted in ``workers`` (default :data:`WORKERS`)."""
    return (workers or WORKERS).call(fn, seconds, what=what, host=host)


def _after_fork_in_child() -> None:
    for workers in list(_ALL_WORKERS):
        workers.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- a bounded HTTP fetch -----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a server answered: any status (the caller decides what it accepts)."""

    status: int
    headers: Message
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (``application/json``)."""
        return str(self.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def fetch(
    url: str,
    *,
    what: str,
    timeout: float,
    max_bytes: int,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = False,
    workers: Workers | None = None,
) -> Answer:
    """One HTTP call to ``url`` done within ``timeout`` seconds in all — name lookup,
    connection, TLS, status line, headers and body — with a body of at most ``max_bytes``.

    A redirect is followed only with ``follow_redirects`` (up to urllib's 10, to ``http``
    and ``https`` URLs only); otherwise a 3xx is returned like any answer, so that nothing
    sent (a token, a secret) goes where a redirect points. Proxies come from the
    environment (``HTTPS_PROXY``, ``NO_PROXY``...), as for urllib.

    Raises :class:`NetworkTimeout` when the bound is reached (or the call is refused, see
    :class:`Workers`) and :class:`NetworkError` when the server cannot be reached, the
    answer breaks off or is larger than ``max_bytes``; each message names ``what``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NetworkError(f"{what}: {url!r} is not an http(s) URL")
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    return (workers or WORKERS).call(
        lambda call: _fetch(call, request, max_bytes, follow_redirects),
        timeout,
        what=what,
        host=parts.hostname,
    )


def _fetch(call: Call, request: urllib.request.Request, max_bytes: int, follow: bool) -> Answer:
    opener = _opener(call, follow)
    try:
        response: Any = opener.open(request, timeout=max(call.remaining(), 0.001))
    except urllib.error.HTTPError as exc:
        response = exc  # an error status after redirects were followed: still an answer
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise _failure(call, exc, "could not be reached") from exc
    try:
        status = int(getattr(response, "status", None) or response.getcode() or 0)
        headers: Message = response.headers
        declared = str(headers.get("Content-Length") or "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise NetworkError(f"{call.what} answered more than {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = response.read(min(_CHUNK, max_bytes + 1 - size))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise _failure(call, exc, "broke off its answer") from exc
            if not chunk:
                return Answer(status, headers, b"".join(chunks))
            size += len(chunk)
            if size > max_bytes:
                raise NetworkError(f"{call.what} answered more than {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        with suppress(OSError, http.client.HTTPException):
            response.close()


def _failure(call: Call, exc: BaseException, doing: str) -> NetworkError:
    """The error of a failed step: a socket timeout is the bound reached by the worker
    first (each socket operation is given what is left of it)."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
        return NetworkTimeout(f"{call.what} took longer than {call.seconds:g}s")
    return NetworkError(f"{call.what} {doing} ({reason})")


class _TrackedConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket its bounded call shuts down if abandoned, registered
    as soon as it is connected (before TLS: see :class:`_TrackedTLSConnection`)."""

    bounded_call: Call | None = None

    def connect(self) -> None:
        super().connect()
        if self.bounded_call is not None:
            self.bounded_call.track(self.sock)


class _TrackedTLSConnection(http.client.HTTPSConnection, _TrackedConnection):
    """HTTPS: ``HTTPSConnection.connect`` connects through ``super().connect()`` — here
    :meth:`_TrackedConnection.connect` — and then shakes hands, so the TCP socket is tracked
    before the handshake, which a shutdown then interrupts too."""


def _connection_factory(cls: type[_TrackedConnection], call: Call) -> Any:
    def connection(host: str, **kwargs: Any) -> _TrackedConnection:
        made = cls(host, **kwargs)
        made.bounded_call = call
        return made

    return connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection_factory(_TrackedConnection, self.call), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, call: Call) -> None:
        self.tls = _tls_context()
        super().__init__(context=self.tls)
        self.call = call

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = _connection_factory(_TrackedTLSConnection, self.call)
        return self.do_open(factory, req, context=self.tls)


class _EveryStatus(urllib.request.BaseHandler):
    """Hands every answer back as it is (urllib's error processor would raise for a
    non-2xx and send a 3xx to the redirect handler)."""

    handler_order = 1000

    def http_response(self, request: Any, response: Any) -> Any:
        return response

    https_response = http_response


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, loaded once (an SSLContext is thread-safe)."""
    return ssl.create_default_context()


def _opener(call: Call, follow_redirects: bool) -> urllib.request.OpenerDirector:
    """urllib with http and https only (no ftp:, file: or data: — nor redirects to them),
    its connections tracked by ``call``."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HTTPHandler(call),
        _HTTPSHandler(call),
    ]
    if follow_redirects:
        handlers += [
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPRedirectHandler(),
            urllib.request.HTTPErrorProcessor(),
        ]
    else:
        handlers.append(_EveryStatus())
    for handler in handlers:
        opener.add_handler(handler)
    return opener


__all__ = [
    "MAX_ABANDONED",
    "WORKERS",
    "Answer",
    "Call",
    "Deadline",
    "Workers",
    "call_within",
    "current_deadline",
    "deadline",
    "fetch",
    "remaining_within",
]
