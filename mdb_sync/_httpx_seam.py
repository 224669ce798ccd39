"""Every use of httpx2's and httpcore2's private API, in one module.

The ``openai`` client talks HTTP through an ``httpx2.Client``, whose timeouts bound each
phase (connect, each read, each write) but not a call: a server dripping its answer a byte
at a time, each within the read timeout, holds the call for as long as it likes, and a name
lookup has no timeout at all. httpcore2 — the connection pools under httpx2 — takes a
*network backend* (public API: ``httpcore2.NetworkBackend``) that opens every connection and
does every read and write, which is where a total deadline can be kept
(:mod:`mdb_sync.ai.openai_http`); but httpx2 builds its pools itself, one for direct
connections and one per proxy of the environment, and offers no way to pass one. The names
below reach them. They all live here, each with why it is needed, so that an httpx2 release
that renames or removes one breaks this module and one test —
``tests/test_dependency_seams.py`` checks every name in :data:`PRIVATES` on the installed
httpx2 and that a client given a backend opens its connections through it — rather than
every AI call quietly losing its bound. ``setup.cfg`` keeps httpx2 (which pins its httpcore2)
below its next major version.

Nothing else in the packages may use an httpx2 or httpcore2 private: go through here.
"""

from __future__ import annotations

import httpcore2
import httpx2

#: Each private name used, by the object that has it: what the seam test checks.
PRIVATES: dict[str, tuple[str, ...]] = {
    # A client's transports: the direct one, and one per proxy pattern of the environment
    # (HTTPS_PROXY, ALL_PROXY...; None where NO_PROXY sends it to the direct one).
    "httpx2.Client": ("_transport", "_mounts"),
    # An HTTP transport's connection pool (ConnectionPool, or HTTPProxy/SOCKSProxy, both
    # ConnectionPool subclasses).
    "httpx2.HTTPTransport": ("_pool",),
    # The backend a pool hands each new connection (it opens the socket, reads and writes).
    "httpcore2.ConnectionPool": ("_network_backend",),
}


def use_network_backend(client: httpx2.Client, backend: httpcore2.NetworkBackend) -> None:
    """Make every connection ``client`` opens, direct or through a proxy, go through
    ``backend``. Call it on a new client, before its first request (connections already
    open keep the backend that opened them). Raises ``TypeError`` for a client whose
    transports are not httpx2's own (a test's mock transport, a user's custom one)."""
    transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
    for transport in transports:
        pool = transport._pool if isinstance(transport, httpx2.HTTPTransport) else None
        if not isinstance(pool, httpcore2.ConnectionPool):
            raise TypeError(
                f"{type(transport).__name__} is not an httpx2.HTTPTransport over an "
                "httpcore2 connection pool: its connections cannot be bounded"
            )
        pool._network_backend = backend


__all__ = ["PRIVATES", "use_network_backend"]
