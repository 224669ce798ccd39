"""The HTTP client of the OpenAI provider: every call within a total deadline.

httpx2 (under the ``openai`` client) bounds each phase of a request — connecting, each read,
each write — not the request: an OpenAI-compatible server that drips its answer, a byte every
few seconds each within the read timeout, holds an embeddings or chat call (and the web
request waiting on it) as long as it likes, and a name lookup has no timeout at all.

So the provider's client opens its connections through :class:`BoundedBackend`, an httpcore2
network backend (the layer that opens sockets, reads and writes) that keeps the deadline the
calling thread set with :func:`mdb_sync.net_bounds.deadline`: the name lookup runs in a
bounded worker (:func:`mdb_sync.net_bounds.call_within`, which caps the lookups left stuck),
and connecting, the TLS handshake, every read and every write are each given what is left of
the deadline instead of the full per-phase timeout — once it has passed, the next one fails at
once with httpcore2's timeout error, which the ``openai`` client reports as
``APITimeoutError``. Reads and TLS handshakes end by the deadline exactly; a write is sent in
pieces of :data:`WRITE_PIECE` bytes, each bounded by what is left when it starts. Without a
deadline set, the backend behaves like httpcore2's own (the per-phase timeouts only).
The backend holds no state: threads and forked children (which build their own client) share
nothing through it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

from .._httpx_seam import use_network_backend
from ..exceptions import NetworkTimeout
from ..net_bounds import call_within, remaining_within

#: Bytes handed to the socket per write step (each step gets what is left of the deadline).
WRITE_PIECE = 8192
_DEADLINE_PASSED = "the call's deadline has passed"


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` clipped to the thread's deadline; ``error`` once that has passed."""
    left = remaining_within(timeout)
    if left is not None and left <= 0:
        raise error(_DEADLINE_PASSED)
    return left


class BoundedStream(httpcore2.NetworkStream):
    """A connection whose every step is clipped to the calling thread's deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            piece, view = view[:WRITE_PIECE], view[WRITE_PIECE:]
            self._inner.write(bytes(piece), _bounded(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        bound = _bounded(timeout, httpcore2.ConnectTimeout)
        return BoundedStream(self._inner.start_tls(ssl_context, server_hostname, bound))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class BoundedBackend(httpcore2.NetworkBackend):
    """httpcore2's synchronous backend, its steps clipped to the thread's deadline and its
    name lookups bounded (see the module's docstring)."""

    def __init__(self) -> None:
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        options = list(socket_options or ())
        failure: Exception | None = None
        for address in self._addresses(host, port, timeout):
            bound = _bounded(timeout, httpcore2.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(address, port, bound, local_address, options)
            except httpcore2.ConnectError as exc:  # the next address may answer
                failure = exc
                continue
            return BoundedStream(stream)
        raise failure or httpcore2.ConnectError(f"{host} has no address")

    def _addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """``host``'s addresses, looked up within the deadline (an IP address as it is)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        bound = _bounded(timeout, httpcore2.ConnectTimeout)

        def lookup(_: object) -> list[Any]:
            return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

        try:
            if bound is None:
                found = lookup(None)
            else:
                found = call_within(
                    lookup, bound, what=f"the name lookup of {host}", host=host.lower()
                )
        except NetworkTimeout as exc:
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore2.ConnectError(f"the name lookup of {host} failed ({exc})") from exc
        return list(dict.fromkeys(str(entry[4][0]) for entry in found))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        bound = _bounded(timeout, httpcore2.ConnectTimeout)
        return BoundedStream(self._inner.connect_unix_socket(path, bound, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bounded_http_client(**options: Any) -> httpx2.Client:
    """An ``httpx2.Client`` with the ``openai`` client's defaults (``options`` override
    them) whose connections all go through a :class:`BoundedBackend`."""
    import openai

    client: httpx2.Client = openai.DefaultHttpx2Client(**options)
    use_network_backend(client, BoundedBackend())
    return client


__all__ = ["WRITE_PIECE", "BoundedBackend", "BoundedStream", "bounded_http_client"]
