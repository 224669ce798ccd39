"""Total deadlines for calls to other servers (``mdb_sync.net_bounds``), against real
misbehaving servers on 127.0.0.1: a call ends within its bound whatever the server does
(never answers, drips its body, drips its status line and headers), its abandoned worker is
cut loose at once (the server sees the client hang up), abandoned workers that cannot be cut
loose are capped and further calls refused at once, and a forked child starts with none."""

from __future__ import annotations

import multiprocessing
import socket
import time

import pytest
from net_faults import (
    drip_body,
    drip_headers,
    fault_server,
    hold_until_released,
    never_answer,
    serve,
)

from mdb_sync.exceptions import NetworkError, NetworkTimeout
from mdb_sync.net_bounds import Workers, call_within, deadline, fetch, remaining_within

#: A loaded machine's slack; an unbounded call would never return at all.
MARGIN = 5.0


@pytest.mark.parametrize(
    "misbehave",
    [never_answer, drip_body, drip_headers],
    ids=["silent", "dripping-body", "dripping-headers"],
)
def test_a_fetch_ends_within_its_bound_and_leaves_nothing_running(misbehave):
    """Each byte of the dripping servers comes well within any socket timeout: only a total
    deadline ends the call. The worker left behind is cut loose when the caller gives up:
    the server sees the client hang up right after the bound, and no abandoned worker stays
    counted."""
    workers = Workers()
    with fault_server(misbehave) as server:
        started = time.monotonic()
        with pytest.raises(NetworkTimeout, match=r"^the test endpoint took longer than 1\.2s$"):
            fetch(
                f"{server.url}/slow",
                what="the test endpoint",
                timeout=1.2,
                max_bytes=10_000_000,
                workers=workers,
            )
        elapsed = time.monotonic() - started
        assert server.wait_ended(1, MARGIN), "the abandoned worker kept the connection open"
        hung_up = server.ended[0] - started
    assert 1.2 * 0.9 <= elapsed < 1.2 + MARGIN
    assert hung_up < 1.2 + MARGIN
    assert server.requests[0].startswith(b"GET /slow HTTP/1.1\r\n")
    deadline_ = time.monotonic() + MARGIN
    while workers.abandoned and time.monotonic() < deadline_:
        time.sleep(0.02)
    assert workers.abandoned == 0


def _stuck(port: int):
    """A call blocked where no shutdown of a tracked socket reaches it (as a name lookup
    is): a read on a socket it does not track, from a server that holds it."""

    def call(_):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"hello")
            return sock.recv(1)

    return call


def test_abandoned_workers_are_capped_and_further_calls_refused_at_once():
    """With ``limit`` abandoned workers alive, a new call is refused at once — it starts no
    thread and never reaches the server — with the same error; when they end, calls run
    again."""
    workers = Workers(limit=2)
    with fault_server(hold_until_released) as server:
        for _ in range(2):
            with pytest.raises(NetworkTimeout, match=r"^a stuck call took longer than 0\.3s$"):
                call_within(_stuck(server.port), 0.3, what="a stuck call", workers=workers)
        assert workers.abandoned == 2
        started = time.monotonic()
        with pytest.raises(NetworkTimeout, match="the third call was refused: 2 earlier calls"):
            call_within(_stuck(server.port), 5, what="the third call", workers=workers)
        with pytest.raises(NetworkTimeout, match="a fetch was refused") as info:
            fetch(server.url, what="a fetch", timeout=5, max_bytes=10, workers=workers)
        refused_in = time.monotonic() - started
        assert info.value.context == {"abandoned": 2, "limit": 2, "host": "127.0.0.1"}
        time.sleep(0.3)
        assert len(server.requests) == 2, "a refused call reached the server"

        server.release.set()  # the server hangs up: the stuck workers end
        until = time.monotonic() + MARGIN
        while workers.abandoned and time.monotonic() < until:
            time.sleep(0.02)
        assert workers.abandoned == 0
        assert call_within(lambda call: round(call.remaining()), 3, what="x", workers=workers) == 3
    assert refused_in < 1.0  # not the 5 s each of them would have been allowed


def test_one_stuck_host_does_not_get_calls_to_other_hosts_refused():
    """Abandoned workers are capped per host as well: with ``per_host`` calls that depend on
    one host stuck (as name lookups of a hostile DNS would be), further calls to it are
    refused at once, never reaching it, while a call to another host — another app's
    provider — still goes through, until the cap for the whole process is reached."""
    workers = Workers(limit=3, per_host=2)
    with fault_server(hold_until_released) as stuck, fault_server(serve(b"ok")) as healthy:
        for _ in range(2):
            with pytest.raises(NetworkTimeout, match=r"took longer than 0\.3s$"):
                call_within(
                    _stuck(stuck.port), 0.3, what="a lookup", host="127.0.0.1", workers=workers
                )
        started = time.monotonic()
        with pytest.raises(NetworkTimeout, match=r"stuck for 127\.0\.0\.1 \(at most 2\)") as info:
            fetch(stuck.url, what="the stuck host", timeout=5, max_bytes=10, workers=workers)
        assert time.monotonic() - started < 1.0
        assert info.value.context == {"abandoned": 2, "limit": 2, "host": "127.0.0.1"}
        other = f"http://localhost:{healthy.port}/"  # another host name, the same server
        answer = fetch(other, what="another host", timeout=5, max_bytes=10, workers=workers)
        assert (answer.status, answer.body) == (200, b"ok")

        # One more stuck call, to a third host, reaches the cap of the whole process.
        with pytest.raises(NetworkTimeout, match=r"took longer than 0\.3s$"):
            call_within(_stuck(stuck.port), 0.3, what="a lookup", host="third", workers=workers)
        with pytest.raises(NetworkTimeout, match=r"stuck in this process \(at most 3\)"):
            fetch(other, what="another host", timeout=5, max_bytes=10, workers=workers)
        time.sleep(0.3)
        assert stuck.requests == [b"hello"] * 3, "a refused call reached the stuck host"
        assert len(healthy.requests) == 1

        stuck.release.set()
        until = time.monotonic() + MARGIN
        while workers.abandoned and time.monotonic() < until:
            time.sleep(0.02)
        assert workers.abandoned == 0
        answer = fetch(other, what="another host", timeout=5, max_bytes=10, workers=workers)
        assert answer.status == 200


def test_an_answer_is_returned_whatever_its_status_and_redirects_only_when_asked():
    with fault_server(serve(b"moved")) as target:
        location = f"{target.url}/there"

        def redirect(conn, request, server):
            head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 3\r\n\r\n"
            conn.sendall(head.encode() + b"see")

        with fault_server(redirect) as first:
            answer = fetch(first.url, what="a 302", timeout=5, max_bytes=100)
            assert (answer.status, answer.body) == (302, b"see")
            assert answer.headers["Location"] == location
            assert target.requests == []  # not followed: nothing sent where it points
            followed = fetch(
                first.url, what="a 302", timeout=5, max_bytes=100, follow_redirects=True
            )
        assert (followed.status, followed.body) == (200, b"moved")
        assert target.requests[0].startswith(b"GET /there ")


def _redirect_to(location: str):
    def handle(conn, request, server):
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        conn.sendall(head.encode())

    return handle


def test_a_redirect_leaves_http_never():
    """Followed redirects go to http(s) only: ``file:`` is answered as the 3xx it is
    (urllib's redirect handler refuses it), ``ftp:`` — which urllib's default opener would
    fetch, without any bound — finds no handler."""
    with fault_server(_redirect_to("file:///etc/passwd")) as server:
        answer = fetch(server.url, what="to file", timeout=5, max_bytes=100, follow_redirects=True)
    assert (answer.status, answer.body) == (302, b"")
    with (
        fault_server(_redirect_to("ftp://127.0.0.1/pub/file")) as server,
        pytest.raises(NetworkError, match=r"^to ftp could not be reached \(unknown url type"),
    ):
        fetch(server.url, what="to ftp", timeout=5, max_bytes=100, follow_redirects=True)


def test_sizes_and_schemes_are_refused_clearly():
    with (
        fault_server(serve(b"x" * 1000)) as server,
        pytest.raises(NetworkError, match=r"^big answered more than 100 bytes$"),
    ):
        fetch(server.url, what="big", timeout=5, max_bytes=100)
    with pytest.raises(NetworkError, match="is not an http"):
        fetch("file:///etc/passwd", what="a file", timeout=5, max_bytes=100)
    with pytest.raises(ValueError, match="deadline"):
        fetch("http://127.0.0.1:9/", what="never", timeout=0, max_bytes=100)


def test_an_unreachable_server_is_a_network_error_naming_the_call():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with pytest.raises(NetworkError, match=r"^the closed port could not be reached \("):
            fetch(f"http://127.0.0.1:{port}/", what="the closed port", timeout=5, max_bytes=1)


def test_a_threads_deadline_clips_its_steps_and_nests():
    assert remaining_within(7.0) == 7.0  # no deadline: as given
    with deadline(2.0) as outer:
        assert 1.5 < remaining_within(None) <= 2.0
        assert remaining_within(0.5) == 0.5
        with deadline(60.0) as inner:  # cannot outlive the enclosing one
            assert inner.at == outer.at
        assert not outer.expired
    assert remaining_within(None) is None


_FORK_WORKERS = Workers(limit=1)


def _call_in_child(queue) -> None:
    try:
        queue.put(call_within(lambda call: "ran", 2, what="child", workers=_FORK_WORKERS))
    except NetworkTimeout as exc:
        queue.put(f"refused: {exc}")


def test_a_forked_child_starts_with_no_abandoned_workers():
    """The parent's abandoned workers are not in a forked child (threads do not survive a
    fork): the child's calls are not refused for them."""
    with fault_server(hold_until_released) as server:
        with pytest.raises(NetworkTimeout):
            call_within(_stuck(server.port), 0.2, what="stuck", workers=_FORK_WORKERS)
        with pytest.raises(NetworkTimeout, match="refused"):
            call_within(lambda call: None, 2, what="parent", workers=_FORK_WORKERS)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_call_in_child, args=(queue,))
        child.start()
        try:
            assert queue.get(timeout=30) == "ran"
        finally:
            child.join(30)
        server.release.set()
