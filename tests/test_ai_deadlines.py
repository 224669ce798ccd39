"""Every call of the OpenAI provider ends within ``timeout_seconds`` in all, against real
OpenAI-compatible servers on 127.0.0.1 that misbehave: accept and never answer, drip their
status line and headers or their body a byte at a time (each byte well within the openai
client's per-read timeout, which alone never trips), start a stream and stall, or stream
empty events forever. The provider reports a timeout as the retryable error the services
retry, the services name the bound, and a Flask view above them answers its documented
error within the bound."""

from __future__ import annotations

import json
import socket
import time

import pytest
from flask_apps import AppFactory, http, serve, write_manifest
from net_faults import drip, drip_body, drip_headers, fault_server, never_answer

from flask_mdb import MDB
from mdb_sync.ai import LLMConfig, LLMService, RetryPolicy
from mdb_sync.ai.providers import OpenAIProvider
from mdb_sync.ai.retry import RetryableError
from mdb_sync.exceptions import AIProviderError, NetworkTimeout

#: A loaded machine's slack; an unbounded call would never return at all.
MARGIN = 5.0
FAST = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\n"
)


def event(content: str | None) -> bytes:
    """One server-sent chat chunk (no choices when ``content`` is None)."""
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    chunk = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": choices,
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _wait_for_hangup(conn: socket.socket) -> None:
    conn.settimeout(60)
    while conn.recv(65536):
        pass


def sse_then_silence(conn, request, server) -> None:
    """Answers a stream's headers, then nothing."""
    conn.sendall(SSE_HEAD)
    _wait_for_hangup(conn)


def sse_dripping_its_first_event(conn, request, server) -> None:
    conn.sendall(SSE_HEAD)
    drip(conn, event("never whole"))


def sse_stalling_after_one_event(conn, request, server) -> None:
    """One event, then the next one a byte per 0.1 s: never a whole event again."""
    conn.sendall(SSE_HEAD + event("hello "))
    drip(conn, event("never whole"))


def sse_empty_events_forever(conn, request, server) -> None:
    """One event, then an empty one every 0.1 s (each well within the idle bound)."""
    conn.sendall(SSE_HEAD + event("hello "))
    for _ in range(600):
        conn.sendall(event(None))
        time.sleep(0.1)


def config(server, timeout: float) -> LLMConfig:
    return LLMConfig(
        provider="openai_compatible",
        base_url=f"{server.url}/v1",
        api_key="test-key",
        timeout_seconds=timeout,
    )


CALLS = {
    "embeddings": lambda p: p.embed(["hello"], model="text-embedding-3-small"),
    "chat": lambda p: p.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini"),
}


@pytest.mark.parametrize("what", sorted(CALLS))
@pytest.mark.parametrize(
    "misbehave",
    [never_answer, drip_headers, drip_body],
    ids=["silent", "dripping-headers", "dripping-body"],
)
def test_a_call_fails_within_timeout_seconds_with_the_retryable_error(misbehave, what):
    bound = 1.0
    with fault_server(misbehave) as server:
        provider = OpenAIProvider(config(server, bound))
        try:
            started = time.monotonic()
            with pytest.raises(RetryableError) as info:
                CALLS[what](provider)
            elapsed = time.monotonic() - started
            # The connection is closed right away: nothing keeps reading in the background.
            assert server.wait_ended(1, MARGIN)
        finally:
            provider.close()
    assert bound * 0.9 <= elapsed < bound + MARGIN
    path = {"embeddings": "/v1/embeddings", "chat": "/v1/chat/completions"}[what]
    assert server.requests[0].startswith(f"POST {path} ".encode())
    cause = info.value.cause
    assert isinstance(cause, NetworkTimeout)
    assert str(cause) == (
        f"openai_compatible {what} took longer than 1s (timeout_seconds: the bound of the "
        "whole call)"
    )
    assert info.value.status is None


def test_the_service_retries_a_timed_out_call_and_names_the_bound():
    with fault_server(drip_headers) as server:
        service = LLMService(config(server, 0.5), retry=FAST)
        try:
            started = time.monotonic()
            with pytest.raises(AIProviderError) as info:
                service.embed(["hello"], model="text-embedding-3-small")
            elapsed = time.monotonic() - started
        finally:
            service.close()
    assert len(server.requests) == 2  # timeouts are retried
    assert elapsed < 2 * 0.5 + MARGIN
    assert str(info.value).startswith(
        "openai_compatible embeddings failed after 2 attempt(s): NetworkTimeout: "
        "openai_compatible embeddings took longer than 0.5s"
    )
    assert info.value.status is None


@pytest.mark.parametrize(
    "misbehave",
    [never_answer, sse_then_silence, sse_dripping_its_first_event],
    ids=["silent", "headers-only", "dripping-first-event"],
)
def test_a_stream_whose_first_event_does_not_come_in_time_is_retried_then_fails(misbehave):
    """Opening a stream ends with its first event: a server that answers the headers and
    then nothing (or drips the event) fails the attempt within the bound, and the attempt is
    retried like any call."""
    with fault_server(misbehave) as server:
        service = LLMService(config(server, 0.5), retry=FAST)
        try:
            started = time.monotonic()
            with pytest.raises(AIProviderError, match=r"chat failed after 2 attempt\(s\)"):
                list(service.chat("hi", stream=True))
            elapsed = time.monotonic() - started
        finally:
            service.close()
    assert len(server.requests) == 2
    assert 2 * 0.5 * 0.9 <= elapsed < 2 * 0.5 + MARGIN


def test_a_stream_that_stalls_after_an_event_ends_at_the_idle_bound():
    """Each next event must come within timeout_seconds: bytes of an event that never
    completes do not count (a byte-dripper cannot hold the stream open)."""
    with fault_server(sse_stalling_after_one_event) as server:
        service = LLMService(config(server, 1.0), retry=FAST)
        pieces = []
        try:
            with pytest.raises(AIProviderError) as info:
                for piece in service.chat("hi", stream=True):
                    pieces.append(piece)
                    after_first = time.monotonic()
            stalled_for = time.monotonic() - after_first
            assert server.wait_ended(1, MARGIN)
        finally:
            service.close()
    assert pieces == ["hello "]  # what came is kept; the stream is not retried
    assert len(server.requests) == 1
    assert str(info.value) == (
        "openai_compatible: the chat stream stalled: no event for 1s (timeout_seconds)"
    )
    assert 0.9 <= stalled_for < 1.0 + MARGIN


def test_a_stream_of_empty_events_ends_at_its_ceiling():
    """Whole events, each in time but carrying nothing, forever: the stream as a whole may
    last 10 times timeout_seconds."""
    with fault_server(sse_empty_events_forever) as server:
        service = LLMService(config(server, 0.4), retry=FAST)
        try:
            started = time.monotonic()
            with pytest.raises(AIProviderError) as info:
                list(service.chat("hi", stream=True))
            elapsed = time.monotonic() - started
        finally:
            service.close()
    assert str(info.value) == (
        "openai_compatible: the chat stream went on longer than 4s in all (10 x timeout_seconds)"
    )
    assert 4 * 0.9 <= elapsed < 4 + MARGIN


def test_a_flask_view_answers_its_documented_error_within_the_bound(mongo_uri, db_name, tmp_path):
    """Engine, service, provider, a real WSGI server and a real client: a view calling a
    dripping model server answers 500 ``AIProviderError`` (docs/flask.rst: other server
    errors) within the bound, not whenever the server stops dripping."""
    factory = AppFactory(mongo_uri, db_name)
    with fault_server(drip_headers) as server:
        llm_config = {
            "enabled": True,
            "provider": "openai_compatible",
            "base_url": f"{server.url}/v1",
            "default_chat_model": "gpt-4o-mini",
            "timeout_seconds": 1,
            "max_retries": 0,
        }
        path = write_manifest(tmp_path, "asker", llm_config=llm_config)
        mdb = MDB()
        app = factory(mdb, MDB_APP_SLUG="asker", MDB_MANIFESTS=[str(path)])
        app.config["PROPAGATE_EXCEPTIONS"] = False

        @app.get("/ask")
        def ask():
            return {"reply": mdb.engine.get_llm_service("asker").chat("hi")}

        try:
            with serve(app) as base:
                started = time.monotonic()
                status, _headers, body = http(f"{base}/ask")
                elapsed = time.monotonic() - started
        finally:
            factory.close()
    assert status == 500
    assert body["error"]["type"] == "AIProviderError"
    assert elapsed < 1 + MARGIN
    assert len(server.requests) == 1
