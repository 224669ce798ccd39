"""A small, real HTTP server that speaks the OpenAI API, for tests.

It listens on 127.0.0.1 and answers what the ``openai`` client sends:
``POST /v1/embeddings``, ``POST /v1/chat/completions`` (plain and streamed as server-sent
events), ``GET /v1/models``, and the Azure routes
``/openai/deployments/<deployment>/{embeddings,chat/completions}?api-version=...``.

- Embeddings are deterministic: a hashed bag of words, normalized, so texts sharing words
  are near each other and any test can compute the expected vector with :func:`embed_text`.
  ``float`` and ``base64`` encodings, the ``dimensions`` parameter, and a maximum batch size.
- Chat replies are scripted (:meth:`OpenAIServer.script_chat`): strings, or callables that
  receive the request body; without a script the reply echoes the last user message
  (``echo: ...``, or the server's ``echo_prefix``). A reply longer than the request's
  ``max_tokens`` (tokens are words here) is cut there, with ``finish_reason`` ``length``.
- Faults are injected (:meth:`OpenAIServer.fail_next`, :meth:`OpenAIServer.delay_next`):
  429 with ``Retry-After``, 500, and responses slower than the client's timeout.
- Every request is recorded (:attr:`OpenAIServer.requests`) for assertions.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_MODELS = {
    "text-embedding-3-small": "embedding",
    "text-embedding-3-large": "embedding",
    "nomic-embed-text": "embedding",
    "gpt-4o-mini": "chat",
    "gpt-4o": "chat",
    "llama3": "chat",
}
_WORD = re.compile(r"\w+", re.UNICODE)


def embed_text(text: str, dimensions: int = 32) -> list[float]:
    """The server's embedding of ``text``: hashed word counts with signs, unit length."""
    vector = [0.0] * dimensions
    words = _WORD.findall(text.lower()) or [""]
    for word in words:
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def count_words(text: str) -> int:
    return len(_WORD.findall(text or ""))


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    status: int = 0
    retry_after: str | None = None
    retry_after_ms: str | None = None
    delay: float = 0.0
    path: str | None = None
    message: str = "injected failure"


class OpenAIServer:
    """Start with :meth:`start` (or ``with``); ``base_url`` is the OpenAI-style base URL."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        dimensions: int = 32,
        max_batch: int = 2048,
        models: dict[str, str] | None = None,
        echo_prefix: str = "echo: ",
    ) -> None:
        self.api_key = api_key
        self.echo_prefix = echo_prefix
        self.dimensions = dimensions
        self.max_batch = max_batch
        self.models = dict(DEFAULT_MODELS if models is None else models)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._replies: deque[Any] = deque()
        self._faults: deque[_Fault] = deque()
        self.requests: list[Recorded] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> OpenAIServer:
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- scripting ----------------------------------------------------------------------------

    def script_chat(self, *replies: str | Callable[[dict[str, Any]], Any] | dict[str, Any]) -> None:
        """Queue chat replies: a string, a dict (``{"content": ..., "status": ...}``) or a
        callable of the request body returning either."""
        with self._lock:
            self._replies.extend(replies)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        path: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """The next ``times`` requests (to ``path`` if given) answer ``status``."""
        fault = _Fault(
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            retry_after_ms=None if retry_after_ms is None else str(retry_after_ms),
            path=path,
            message=message,
        )
        with self._lock:
            self._faults.extend([fault] * times)

    def delay_next(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` requests wait ``seconds`` and then close the connection without
        an answer (set the client's timeout below ``seconds``)."""
        with self._lock:
            self._faults.extend([_Fault(delay=seconds, path=path)] * times)

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self._faults.clear()
            self.requests.clear()

    def expected_embedding(self, text: str, dimensions: int | None = None) -> list[float]:
        """The vector this server returns for ``text``."""
        return embed_text(text, dimensions or self.dimensions)

    def recorded(self, suffix: str) -> list[Recorded]:
        """Recorded requests whose path ends with ``suffix`` (``embeddings``...)."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    # --- internals ----------------------------------------------------------------------------

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is None or path.endswith(fault.path):
                    del self._faults[i]
                    return fault
        return None

    def _next_reply(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if callable(reply):
            reply = reply(body)
        if reply is None:
            users = [m for m in body.get("messages", []) if m.get("role") == "user"]
            last = users[-1].get("content") if users else ""
            reply = f"{self.echo_prefix}{_text_of(last)}"
        if isinstance(reply, str):
            reply = {"content": reply}
        return reply


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class _Handler(BaseHTTPRequestHandler):
    api: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- plumbing -----------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_json(
            status, {"error": {"message": message, "type": kind, "code": code}}, headers
        )

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.api._record(
            Recorded("GET", url.path, parse_qs(url.query), dict(self.headers.items()), None)
        )
        if url.path == "/v1/models":
            if not self._authorized(url.path):
                return
            data = [{"id": m, "object": "model", "owned_by": "test"} for m in self.api.models]
            self._send_json(200, {"object": "list", "data": data})
            return
        self._error(404, f"no route {url.path}", code="not_found")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._read_body()
        self.api._record(Recorded("POST", url.path, query, dict(self.headers.items()), body))
        # The client may have given up already (timeout tests).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._dispatch(url.path, query, body)

    def _authorized(self, path: str) -> bool:
        expected = self.api.api_key
        if path.startswith("/openai/"):
            ok = self.headers.get("api-key") == expected
        else:
            ok = self.headers.get("Authorization") == f"Bearer {expected}"
        if not ok:
            self._error(
                401, "Incorrect API key provided.", code="invalid_api_key", kind="auth_error"
            )
        return ok

    def _dispatch(self, path: str, query: dict[str, list[str]], body: Any) -> None:
        azure = re.fullmatch(r"/openai/deployments/([^/]+)/(embeddings|chat/completions)", path)
        if azure:
            if "api-version" not in query:
                self._error(404, "Resource not found: api-version is required")
                return
            operation, deployment = azure.group(2), azure.group(1)
        elif path in ("/v1/embeddings", "/v1/chat/completions"):
            operation, deployment = path.removeprefix("/v1/"), None
        else:
            self._error(404, f"no route {path}", code="not_found")
            return
        if not self._authorized(path):
            return
        fault = self.api._take_fault(path)
        if fault is not None:
            if fault.delay:
                # Answer nothing: the client has timed out by now, and a late reply must not
                # consume a scripted answer meant for a later request.
                self.api._stopping.wait(fault.delay)
                self.close_connection = True
                return
            if fault.status:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = fault.retry_after
                if fault.retry_after_ms is not None:
                    headers["retry-after-ms"] = fault.retry_after_ms
                kind = "rate_limit_error" if fault.status == 429 else "server_error"
                self._error(fault.status, fault.message, kind=kind, headers=headers)
                return
        if not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.")
            return
        model = deployment or body.get("model")
        if self.api.models.get(model) is None:
            self._error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
            return
        if operation == "embeddings":
            self._embeddings(model, body)
        else:
            self._chat(model, body)

    # --- endpoints ----------------------------------------------------------------------------

    def _embeddings(self, model: str, body: dict[str, Any]) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            self._error(400, "'input' must be a non-empty string or array of strings")
            return
        if len(inputs) > self.api.max_batch:
            self._error(400, f"too many inputs: at most {self.api.max_batch} per request")
            return
        if any(not isinstance(text, str) or text == "" for text in inputs):
            self._error(400, "'input' items must be non-empty strings")
            return
        dims = body.get("dimensions") or self.api.dimensions
        encoding = body.get("encoding_format") or "float"
        data = []
        for i, text in enumerate(inputs):
            vector = embed_text(text, dims)
            if encoding == "base64":
                value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                value = vector
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(count_words(t) for t in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, model: str, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._error(400, "'messages' must be a non-empty array")
            return
        reply = self.api._next_reply(body)
        if reply.get("status"):
            self._error(int(reply["status"]), reply.get("content", "scripted error"))
            return
        content = reply.get("content", "")
        if not isinstance(content, str):
            content = json.dumps(content)
        finish = reply.get("finish_reason", "stop")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_words(content) > limit:
            words = re.findall(r"\w+\W*", content)
            content, finish = "".join(words[:limit]).rstrip(), "length"
        prompt_tokens = sum(count_words(_text_of(m.get("content"))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_words(content),
            "total_tokens": prompt_tokens + count_words(content),
        }
        created = int(time.time())
        ident = "chatcmpl-" + hashlib.sha1(content.encode()).hexdigest()[:12]
        if body.get("stream"):
            self._stream(ident, created, model, content, finish, usage, body)
            return
        self._send_json(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
        )

    def _stream(
        self,
        ident: str,
        created: int,
        model: str,
        content: str,
        finish: str,
        usage: dict[str, int],
        body: dict[str, Any],
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        event({"role": "assistant", "content": ""})
        for piece in re.findall(r"\S+\s*|\s+", content):
            event({"content": piece})
        event({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


# --- pytest fixtures (imported by the AI test modules) ------------------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def _openai_server_session():
    with OpenAIServer() as server:
        yield server


#: The second server's models: a vendor's names, beside the usual ones.
SECOND_MODELS = {**DEFAULT_MODELS, "voyage-2": "embedding", "claude-3-5-haiku-latest": "chat"}


@pytest.fixture(scope="session")
def _second_openai_server_session():
    with OpenAIServer(api_key="second-key", models=SECOND_MODELS, echo_prefix="second: ") as server:
        yield server


@pytest.fixture
def second_llm_server(_second_openai_server_session):
    """Another OpenAI-compatible server (key ``second-key``, replies ``second: ...``): a
    second provider beside :func:`llm_server`."""
    server = _second_openai_server_session
    server.reset()
    server.dimensions, server.max_batch = 32, 2048
    yield server
    server.reset()
    server.dimensions, server.max_batch = 32, 2048


@pytest.fixture
def llm_server(_openai_server_session):
    """The session's OpenAI-compatible server, with no script, fault or record left over."""
    server = _openai_server_session
    server.reset()
    server.dimensions, server.max_batch = 32, 2048
    yield server
    server.reset()
    server.dimensions, server.max_batch = 32, 2048
