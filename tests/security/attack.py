"""An outsider's tools for the security tests: real HTTP requests to a live WSGI server, each
from its own client address (127.0.0.2, 127.0.0.3, ... — the whole of 127.0.0.0/8 is local),
sent one at a time or all at once.

A burst opens every connection first, then releases all requests together from their own
threads (a barrier), so the server sees them as simultaneously as a distributed attacker
could send them.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: 24 distinct client addresses (bound with ``source_address``).
ADDRESSES = tuple(f"127.0.0.{i}" for i in range(2, 26))
TIMEOUT = 60.0


@dataclass(frozen=True)
class Call:
    """One request: ``method path`` from ``source`` with a JSON ``body``."""

    method: str
    path: str
    source: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    call: Call
    status: int
    headers: Mapping[str, str]
    body: Any


def _connect(base_url: str, source: str) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=TIMEOUT, source_address=(source, 0)
    )
    conn.connect()
    return conn


def _exchange(conn: http.client.HTTPConnection, call: Call) -> Answer:
    headers = dict(call.headers)
    data = None
    if call.body is not None:
        data = json.dumps(call.body).encode()
        headers.setdefault("Content-Type", "application/json")
    headers.setdefault("Accept", "application/json")
    try:
        conn.request(call.method, call.path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read().decode()
        head = {k: v for k, v in response.getheaders()}
        head["Set-Cookie"] = "\n".join(response.msg.get_all("Set-Cookie") or [])
    finally:
        conn.close()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw
    return Answer(call, response.status, head, body)


def send(base_url: str, call: Call) -> Answer:
    """``call`` now, from its source address."""
    return _exchange(_connect(base_url, call.source), call)


def burst(base_url: str, calls: Sequence[Call]) -> list[Answer]:
    """Every call on its own thread and connection, released together; the answers in the
    order of ``calls``. A request that failed at the transport level raises here."""
    conns = [_connect(base_url, call.source) for call in calls]
    barrier = threading.Barrier(len(calls))
    answers: list[Answer | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            answers[i] = _exchange(conns[i], calls[i])
        except BaseException as exc:  # reported below, on the test's thread
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    for answer in answers:
        if not isinstance(answer, Answer):
            raise AssertionError(f"a request of the burst failed: {answer!r}")
    return answers  # type: ignore[return-value]


def cookies(answer: Answer) -> dict[str, str]:
    """The cookies an answer sets (name -> value)."""
    out = {}
    for line in answer.headers.get("Set-Cookie", "").splitlines():
        name, _, rest = line.partition("=")
        out[name.strip()] = rest.split(";", 1)[0]
    return out


def csrf_headers(base_url: str, source: str, headers: Mapping[str, str]) -> dict[str, str]:
    """What a browser at ``source`` sends with a form post: its CSRF cookie and token."""
    answer = send(base_url, Call("GET", "/auth/csrf", source, headers=headers))
    assert answer.status == 200, answer.body
    jar = "; ".join(f"{k}={v}" for k, v in cookies(answer).items())
    return {**headers, "Cookie": jar, "X-CSRF-Token": answer.body["csrf_token"]}


def statuses(answers: Sequence[Answer]) -> list[int]:
    return [a.status for a in answers]
