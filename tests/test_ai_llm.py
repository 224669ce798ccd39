"""LLMService against a real OpenAI-compatible HTTP server through the real openai client:
chat, streaming, structured output, embeddings, batching, retries, errors, Azure, metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest
from marshmallow import Schema, fields, post_load
from pydantic import BaseModel

from mdb_sync.ai import LLMConfig, LLMService, RetryPolicy
from mdb_sync.exceptions import (
    AIProviderError,
    AIRateLimitError,
    ConfigurationError,
    ModelNotFoundError,
    StructuredOutputError,
)
from mdb_sync.observability.metrics import MetricsCollector

#: The test server and its ``llm_server`` fixture.
pytest_plugins = ("openai_server",)

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05, max_retry_after=5)


def make_service(server, **overrides):
    config = {
        "provider": "openai",
        "base_url": server.base_url,
        "api_key": "test-key",
        "timeout_seconds": 5.0,
    }
    config.update(overrides)
    retry = config.pop("retry", FAST)
    metrics = MetricsCollector()
    return LLMService(LLMConfig(**config), metrics=metrics, app="app1", retry=retry)


def counters(service):
    return service.telemetry.metrics.snapshot()["apps"]["app1"].get("counters", {})


def operations(service):
    return service.telemetry.metrics.snapshot()["apps"]["app1"].get("operations", {})


# --- chat -----------------------------------------------------------------------------------------


def test_chat_returns_the_reply_and_records_usage(llm_server):
    service = make_service(llm_server)
    assert service.chat([{"role": "user", "content": "hello there"}]) == "echo: hello there"
    result = service.chat_completion("two words", model="gpt-4o")
    assert result.content == "echo: two words"
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (2, 3)
    assert counters(service)["llm.tokens.prompt"] == 2 + 2
    assert counters(service)["llm.tokens.completion"] == 3 + 3
    assert operations(service)["llm.chat"]["count"] == 2
    bodies = [r.body for r in llm_server.recorded("chat/completions")]
    assert [b["model"] for b in bodies] == ["gpt-4o-mini", "gpt-4o"]


def test_chat_parameters_come_from_config_and_call(llm_server):
    service = make_service(llm_server, temperature=0.2, max_tokens=50)
    llm_server.script_chat("scripted")
    assert service.chat("hi", temperature=0.9, seed=7) == "scripted"
    body = llm_server.recorded("chat/completions")[-1].body
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.9, 50, 7)


def test_streaming_yields_pieces_and_records_usage(llm_server):
    service = make_service(llm_server)
    llm_server.script_chat("the quick brown fox")
    pieces = list(service.chat("go", stream=True))
    assert len(pieces) > 1
    assert "".join(pieces) == "the quick brown fox"
    body = llm_server.recorded("chat/completions")[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert counters(service)["llm.tokens.completion"] == 4
    assert operations(service)["llm.chat"]["errors"] == 0


def test_messages_are_checked_before_sending(llm_server):
    service = make_service(llm_server)
    with pytest.raises(ValueError, match="non-empty list"):
        service.chat([])
    with pytest.raises(ValueError, match=r"messages\[0\].role"):
        service.chat([{"role": "wizard", "content": "x"}])
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        service.chat([{"role": "user", "content": "x"}, "oops"])
    assert llm_server.recorded("chat/completions") == []


# --- structured output ----------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_structured_output_re_asks_with_the_errors(llm_server):
    service = make_service(llm_server)
    llm_server.script_chat("I think it is Ada", '{"name": "Ada"}', '{"name": "Ada", "age": 36}')
    assert service.chat_structured("Who?", PERSON) == {"name": "Ada", "age": 36}
    requests = llm_server.recorded("chat/completions")
    assert len(requests) == 3
    first = requests[0].body
    assert first["response_format"] == {"type": "json_object"}
    assert "JSON Schema" in first["messages"][0]["content"]
    last_user = requests[2].body["messages"][-1]["content"]
    assert "$.age: required" in last_user
    assert counters(service)["llm.structured.invalid"] == 2


def test_structured_output_gives_up_with_the_last_errors(llm_server):
    service = make_service(llm_server)
    llm_server.script_chat('{"name": 1, "age": -1}', '{"name": 1, "age": -1}')
    with pytest.raises(StructuredOutputError) as info:
        service.chat_structured("Who?", PERSON, max_attempts=2)
    assert "$.name: expected string" in str(info.value)
    assert info.value.reply == '{"name": 1, "age": -1}'
    assert len(llm_server.recorded("chat/completions")) == 2


class Person:
    def __init__(self, name, age):
        self.name, self.age = name, age


class PersonSchema(Schema):
    name = fields.String(required=True)
    age = fields.Integer(required=True)
    tags = fields.List(fields.String())

    @post_load
    def make(self, data, **kwargs):
        return Person(data["name"], data["age"])


def test_structured_output_with_a_marshmallow_schema(llm_server):
    service = make_service(llm_server)
    llm_server.script_chat('{"name": "Bo"}', 'Sure:\n```json\n{"name": "Bo", "age": 4}\n```')
    person = service.chat_structured("Who?", PersonSchema)
    assert isinstance(person, Person) and (person.name, person.age) == ("Bo", 4)
    prompt = llm_server.recorded("chat/completions")[0].body["messages"][0]["content"]
    assert '"age": {"type": "integer"}' in prompt and '"required": ["name", "age"]' in prompt
    assert "Missing data for required field" in str(
        llm_server.recorded("chat/completions")[1].body["messages"][-1]["content"]
    )


class City(BaseModel):
    name: str
    population: int


def test_structured_output_with_a_pydantic_model(llm_server):
    service = make_service(llm_server)
    llm_server.script_chat(
        '{"name": "Oslo", "population": "many"}', '{"name": "Oslo", "population": 700000}'
    )
    city = service.chat_structured("Capital of Norway?", City, json_mode=False)
    assert city == City(name="Oslo", population=700000)
    assert "response_format" not in llm_server.recorded("chat/completions")[0].body


def test_structured_output_refuses_an_unknown_schema_kind(llm_server):
    with pytest.raises(TypeError, match="marshmallow Schema"):
        make_service(llm_server).chat_structured("x", 42)


# --- embeddings -----------------------------------------------------------------------------------


def test_embeddings_are_batched_and_ordered(llm_server):
    llm_server.max_batch = 3
    service = make_service(llm_server, embedding_batch_size=3)
    texts = [f"text number {i}" for i in range(7)]
    vectors = service.embed(texts)
    assert np.allclose(vectors, [llm_server.expected_embedding(t) for t in texts], atol=1e-6)
    sizes = [len(r.body["input"]) for r in llm_server.recorded("embeddings")]
    assert sizes == [3, 3, 1]
    assert counters(service)["llm.tokens.embedding"] == 21
    assert operations(service)["llm.embed"]["count"] == 3


def test_embedding_dimensions_and_input_checks(llm_server):
    service = make_service(llm_server, embedding_dimensions=8)
    assert [len(v) for v in service.embed("one text")] == [8]
    assert llm_server.recorded("embeddings")[-1].body["dimensions"] == 8
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        service.embed(["ok", ""])
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        service.embed([b"bytes"])
    assert service.embed([]) == []
    assert len(llm_server.recorded("embeddings")) == 1


# --- retries and errors ---------------------------------------------------------------------------


def test_429_is_retried_after_the_retry_after_delay(llm_server):
    service = make_service(llm_server)
    llm_server.fail_next(429, times=2, retry_after=0.2)
    started = time.monotonic()
    assert service.chat("hi") == "echo: hi"
    assert time.monotonic() - started >= 0.4
    requests = llm_server.recorded("chat/completions")
    assert len(requests) == 3
    assert requests[2].at - requests[1].at >= 0.19
    assert counters(service)["llm.retries"] == 2


def test_retry_after_ms_is_honoured(llm_server):
    service = make_service(llm_server)
    llm_server.fail_next(429, retry_after_ms=150)
    service.embed("x")
    first, second = llm_server.recorded("embeddings")
    assert second.at - first.at >= 0.14


def test_server_errors_are_retried_with_backoff(llm_server):
    service = make_service(llm_server)
    llm_server.fail_next(500, times=2)
    llm_server.fail_next(503)
    assert service.chat("hi") == "echo: hi"
    assert len(llm_server.recorded("chat/completions")) == 4


def test_persistent_rate_limit_gives_up_with_retry_after(llm_server):
    service = make_service(llm_server)
    llm_server.fail_next(429, times=10, retry_after=0.01)
    with pytest.raises(AIRateLimitError) as info:
        service.chat("hi")
    assert info.value.status == 429 and info.value.retry_after == pytest.approx(0.01)
    assert "after 4 attempt(s)" in str(info.value)
    assert len(llm_server.recorded("chat/completions")) == 4
    assert operations(service)["llm.chat"]["errors"] == 1


def test_a_retry_after_beyond_the_budget_is_not_waited_for(llm_server):
    service = make_service(llm_server)
    llm_server.fail_next(429, retry_after=3600)
    started = time.monotonic()
    with pytest.raises(AIRateLimitError) as info:
        service.chat("hi")
    assert time.monotonic() - started < 2
    assert info.value.retry_after == 3600
    assert len(llm_server.recorded("chat/completions")) == 1


def test_timeouts_are_retried(llm_server):
    service = make_service(llm_server, timeout_seconds=0.3)
    llm_server.delay_next(1.0)
    assert service.chat("slow") == "echo: slow"
    assert len(llm_server.recorded("chat/completions")) == 2
    llm_server.delay_next(1.0, times=4)
    with pytest.raises(AIProviderError, match="Timeout"):
        service.chat("slow")


def test_unknown_models_fail_at_once(llm_server):
    service = make_service(llm_server)
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        service.chat("hi", model="no-such-model")
    with pytest.raises(ModelNotFoundError):
        service.embed("hi", model="no-such-embedder")
    assert len(llm_server.requests) == 2, "not retried"


def test_a_wrong_key_fails_at_once_naming_the_variable(llm_server):
    service = make_service(llm_server, api_key="wrong")
    with pytest.raises(AIProviderError, match="OPENAI_API_KEY") as info:
        service.chat("hi")
    assert info.value.status == 401
    assert len(llm_server.requests) == 1


def test_a_rejected_request_is_not_retried(llm_server):
    service = make_service(llm_server)
    llm_server.script_chat({"status": 400, "content": "bad things"})
    with pytest.raises(AIProviderError, match="bad things") as info:
        service.chat("hi")
    assert info.value.status == 400
    assert len(llm_server.requests) == 1


def test_the_openai_provider_needs_a_key():
    config = LLMConfig.from_section({"provider": "openai"}, environ={})
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        config.require_ready("app1")


# --- Azure ----------------------------------------------------------------------------------------


def test_azure_uses_deployments_api_version_and_api_key_header(llm_server):
    config = LLMConfig.from_section(
        {"provider": "azure", "default_chat_model": "gpt-4o", "api_version": "2024-10-21"},
        environ={
            "AZURE_OPENAI_API_KEY": "test-key",
            "AZURE_OPENAI_ENDPOINT": llm_server.azure_endpoint,
        },
    )
    config.require_ready()
    service = LLMService(config, retry=FAST)
    assert service.chat("hello azure") == "echo: hello azure"
    assert len(service.embed(["a", "b"], model="text-embedding-3-small")) == 2
    chat, emb = llm_server.requests
    assert chat.path == "/openai/deployments/gpt-4o/chat/completions"
    assert emb.path == "/openai/deployments/text-embedding-3-small/embeddings"
    assert chat.query["api-version"] == ["2024-10-21"]
    assert chat.headers.get("api-key") == "test-key"
    assert "Authorization" not in chat.headers or "test-key" not in chat.headers["Authorization"]
