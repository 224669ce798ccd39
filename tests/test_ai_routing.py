"""``provider/model`` names: a model name picks a configured provider, through the real
openai client, against two OpenAI-compatible servers at once (one also speaking Azure's
deployment routes); unknown providers are refused at manifest validation with the list."""

from __future__ import annotations

import threading

import pytest

from mdb_sync.ai import LLMConfig, LLMService
from mdb_sync.ai.routing import split_model
from mdb_sync.exceptions import AIProviderError, ConfigurationError, ManifestValidationError

pytest_plugins = ("openai_server",)

ENV = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_VERSION",
    "MDB_LLM_BASE_URL",
    "MDB_LLM_OLLAMA_BASE_URL",
    "MDB_LLM_OPENAI_BASE_URL",
    "OLLAMA_API_KEY",
    "VOYAGE_API_KEY",
    "MDB_LLM_PRICES",
)


@pytest.fixture
def two_providers(monkeypatch, llm_server, second_llm_server):
    """Azure (deployments on the first server) and Voyage (the second server), configured
    the seeds' way: the manifest names models, the environment holds endpoints and keys."""
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", llm_server.azure_endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("VOYAGE_API_KEY", "second-key")
    return llm_server, second_llm_server


def seeds_manifest(slug, second, **llm):
    """The seeds' ``llm_config`` (``azure/gpt-4o`` chat, ``voyage/voyage-2`` embeddings), with
    Voyage's endpoint pointed at the second test server."""
    config = {
        "enabled": True,
        "default_chat_model": "azure/gpt-4o",
        "default_embedding_model": "voyage/voyage-2",
        "providers": {"voyage": {"base_url": second.base_url}},
        "max_retries": 0,
    }
    config.update(llm)
    return {"slug": slug, "llm_config": config}


def test_model_names_split_at_the_first_slash():
    assert split_model("azure/gpt-4o") == ("azure", "gpt-4o")
    assert split_model("gpt-4o-mini") == (None, "gpt-4o-mini")
    assert split_model("vllm/meta-llama/Llama-3.1-8B") == ("vllm", "meta-llama/Llama-3.1-8B")
    assert split_model("llama3:8b") == (None, "llama3:8b")
    assert split_model("sentence-transformers/all-MiniLM-L6-v2") == (
        "local",
        "sentence-transformers/all-MiniLM-L6-v2",
    )


def test_the_seeds_models_reach_two_providers_at_once(engine, two_providers):
    first, second = two_providers
    engine.register_app(seeds_manifest("rag", second))
    llm = engine.get_llm_service("rag")

    assert llm.chat("hello there") == "echo: hello there"
    (chat,) = first.recorded("chat/completions")
    assert chat.path == "/openai/deployments/gpt-4o/chat/completions", "Azure's deployment route"
    assert chat.query["api-version"] and chat.headers["api-key"] == "test-key"
    assert second.recorded("chat/completions") == []

    vectors = llm.embed(["red apples", "green pears"])
    expected = [second.expected_embedding(t) for t in ("red apples", "green pears")]
    assert vectors[0] == pytest.approx(expected[0], abs=1e-6)
    assert vectors[1] == pytest.approx(expected[1], abs=1e-6)
    (embedding,) = second.recorded("embeddings")
    assert embedding.path == "/v1/embeddings" and embedding.body["model"] == "voyage-2"
    assert {k.lower(): v for k, v in embedding.headers.items()}["authorization"] == (
        "Bearer second-key"
    )
    assert first.recorded("embeddings") == []

    assert llm.route().label == "azure/gpt-4o"
    assert llm.route(embedding=True).label == "voyage/voyage-2"
    service = engine.get_embedding_service("rag")
    assert service.embed_query("apples") == pytest.approx(
        second.expected_embedding("apples"), abs=1e-6
    )


def test_two_providers_serve_concurrent_threads_without_crossing(engine, two_providers):
    first, second = two_providers
    engine.register_app(seeds_manifest("busy", second))
    llm = engine.get_llm_service("busy")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def chat(i):
        barrier.wait()
        try:
            assert llm.chat(f"message {i}") == f"echo: message {i}"
        except BaseException as exc:
            errors.append(exc)

    def embed(i):
        barrier.wait()
        try:
            (vector,) = llm.embed(f"text {i}")
            assert vector == pytest.approx(second.expected_embedding(f"text {i}"), abs=1e-6)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=embed, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(first.recorded("chat/completions")) == 4 and first.recorded("embeddings") == []
    assert len(second.recorded("embeddings")) == 4 and second.recorded("chat/completions") == []
    counters = engine.get_metrics()["apps"]["busy"]["operations"]
    assert counters["llm.chat"]["count"] == 4 and counters["llm.embed"]["count"] == 4


def test_a_call_may_name_any_configured_provider(engine, two_providers, monkeypatch):
    """Per-call ``model=``: a preset reached through ``MDB_LLM_<NAME>_BASE_URL`` (Ollama, with
    an optional key), OpenAI itself, and streaming, all through the real client."""
    first, second = two_providers
    monkeypatch.setenv("MDB_LLM_OLLAMA_BASE_URL", second.base_url)
    monkeypatch.setenv("OLLAMA_API_KEY", "second-key")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("MDB_LLM_OPENAI_BASE_URL", first.base_url)
    engine.register_app(seeds_manifest("any", second))
    llm = engine.get_llm_service("any")
    assert llm.chat("hi", model="ollama/llama3") == "second: hi"
    assert second.recorded("chat/completions")[-1].body["model"] == "llama3"
    assert llm.chat("hi", model="openai/gpt-4o-mini") == "echo: hi"
    assert first.recorded("chat/completions")[-1].path == "/v1/chat/completions"
    assert llm.route().provider_name == "azure" and llm.config.provider == "openai"
    assert llm.chat("hi") == "echo: hi", "Azure, though OpenAI is now the default provider"
    assert first.recorded("chat/completions")[-1].query["api-version"] == ["2024-10-21"]
    assert "".join(llm.chat("one two three", model="ollama/llama3", stream=True)) == (
        "second: one two three"
    )
    with pytest.raises(ConfigurationError, match=r"unknown provider 'olama'.*ollama, openai"):
        llm.chat("hi", model="olama/llama3")


def test_unknown_providers_are_refused_at_registration_with_the_list(engine, two_providers):
    _, second = two_providers
    bad = seeds_manifest("typo", second, default_chat_model="anthropc/claude-3-5-haiku-latest")
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app(bad)
    assert info.value.paths == ["llm_config.default_chat_model"]
    message = str(info.value)
    assert "unknown provider 'anthropc'" in message
    assert "configured providers: anthropic, azure, gemini, local, mistral, ollama, openai" in (
        message
    )
    assert engine.get_app("typo") is None, "nothing registered"

    declared = seeds_manifest("declared", second, providers={"vllm": {"base_url": second.base_url}})
    declared["memory_config"] = {"enabled": True, "chat_model": "vlm/llama3"}
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app(declared)
    assert info.value.paths == ["memory_config.chat_model"]
    assert "vllm" in str(info.value), "declared providers are in the list"

    priced = seeds_manifest("priced", second, prices={"voyag/voyage-2": 0.1})
    with pytest.raises(ManifestValidationError, match="unknown provider 'voyag'"):
        engine.register_app(priced)


def test_declared_provider_settings_are_checked(engine, two_providers):
    _, second = two_providers
    cases = [
        ({"acme": {"type": "bedrock"}}, "llm_config.providers.acme.type"),
        ({"acme": {"api_key": "sk-secret"}}, "llm_config.providers.acme.api_key"),
        ({"acme": {"base_url": "ftp://acme"}}, "llm_config.providers.acme.base_url"),
        ({"acme": {"api_key_env": "NOT A NAME"}}, "llm_config.providers.acme.api_key_env"),
        ({"acme": {"api_key_env": "MDB_MONGO_URI"}}, "llm_config.providers.acme.api_key_env"),
        ({"Acme": {}}, "llm_config.providers.Acme"),
    ]
    for providers, path in cases:
        manifest = seeds_manifest("bad", second, providers=providers)
        with pytest.raises(ManifestValidationError) as info:
            engine.register_app(manifest)
        assert path in info.value.paths, (providers, info.value.paths)
        assert "sk-secret" not in str(info.value)
        with pytest.raises(ConfigurationError) as direct:
            LLMConfig.from_section(manifest["llm_config"], slug="bad", environ={})
        assert str(direct.value).startswith(path), str(direct.value)
        assert "sk-secret" not in str(direct.value)


def test_a_provider_missing_its_key_is_explained_where_it_is_used(
    engine, two_providers, monkeypatch
):
    _, second = two_providers
    monkeypatch.delenv("VOYAGE_API_KEY")
    engine.register_app(seeds_manifest("nokey", second))
    llm = engine.get_llm_service("nokey")
    assert llm.chat("still works") == "echo: still works", "Azure does not need Voyage's key"
    with pytest.raises(ConfigurationError, match="needs an API key: set VOYAGE_API_KEY"):
        llm.embed(["x"])
    assert second.recorded("embeddings") == [], "nothing sent without a key"

    monkeypatch.setenv("VOYAGE_API_KEY", "wrong-key")
    llm = engine.get_llm_service("nokey")  # a changed key rebuilds the service
    with pytest.raises(AIProviderError, match=r"voyage refused the credentials \(401\).*VOYAGE"):
        llm.embed(["x"])


def test_keys_never_cross_the_network_in_the_clear(two_providers, monkeypatch):
    """A declared provider on plain http to a non-loopback host is refused before a key is
    sent (https, or http to loopback only)."""
    monkeypatch.setenv("REMOTE_API_KEY", "secret")
    config = LLMConfig.from_section(
        {
            "enabled": True,
            "provider": "local",
            "providers": {"remote": {"base_url": "http://192.0.2.10:8000/v1"}},
        }
    )
    llm = LLMService(config)
    with pytest.raises(ConfigurationError, match="in the clear"):
        llm.chat("hi", model="remote/model")


def test_local_embeddings_beside_a_remote_chat_model(engine, two_providers):
    """``local/all-MiniLM-L6-v2`` embeds on this machine while chat goes to a server."""
    first, second = two_providers
    engine.register_app(
        seeds_manifest("mixed", second, default_embedding_model="local/all-MiniLM-L6-v2")
    )
    service = engine.get_embedding_service("mixed")
    (vector,) = service.embed(["a sentence to embed locally"])
    assert len(vector) == 384
    assert first.recorded("embeddings") == [] and second.recorded("embeddings") == []
    chunks = service.split("word " * 600, max_tokens_per_chunk=1000)
    assert max(c.token_count for c in chunks) <= 254, "the local model's window applies"
    assert engine.get_llm_service("mixed").chat("hi") == "echo: hi"
