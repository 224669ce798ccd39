"""AI services built by the engine from manifests and the environment; ingestion with
EmbeddingService.process_and_store; token usage in the engine's metrics per app."""

from __future__ import annotations

import threading

import pytest

from mdb_sync.ai import EmbeddingService, LLMService, MemoryService
from mdb_sync.ai.config import LLMConfig
from mdb_sync.exceptions import AIProviderError, ConfigurationError, ManifestValidationError

pytest_plugins = ("openai_server",)


@pytest.fixture
def ai_env(monkeypatch, llm_server):
    for key in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "MDB_LLM_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    return llm_server


def ai_manifest(slug, server, **sections):
    manifest = {
        "slug": slug,
        "llm_config": {
            "enabled": True,
            "provider": "openai_compatible",
            "base_url": server.base_url,
            "default_chat_model": "gpt-4o-mini",
            "default_embedding_model": "text-embedding-3-small",
            "max_retries": 0,
        },
        "embedding_config": {"enabled": True, "max_tokens_per_chunk": 40},
        "memory_config": {"enabled": True, "infer": False},
    }
    manifest.update(sections)
    return manifest


def test_services_come_from_the_manifest_and_are_cached(engine, ai_env):
    engine.register_app(ai_manifest("svc", ai_env))
    llm = engine.get_llm_service("svc")
    assert isinstance(llm, LLMService) and llm.config.provider == "openai_compatible"
    assert engine.get_llm_service("svc") is llm
    embeddings = engine.get_embedding_service("svc")
    assert isinstance(embeddings, EmbeddingService)
    assert embeddings.config.max_tokens_per_chunk == 40
    memory = engine.get_memory_service("svc")
    assert isinstance(memory, MemoryService) and engine.get_memory_service("svc") is memory
    assert llm.chat("hi") == "echo: hi"

    changed = ai_manifest("svc", ai_env)
    changed["llm_config"]["default_chat_model"] = "gpt-4o"
    engine.register_app(changed)
    fresh = engine.get_llm_service("svc")
    assert fresh is not llm and fresh.config.default_chat_model == "gpt-4o"


def test_services_are_built_once_under_concurrency(engine, ai_env):
    engine.register_app(ai_manifest("conc", ai_env))
    seen = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        seen.append(engine.get_llm_service("conc"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1


def test_token_usage_lands_in_the_engine_metrics_per_app(engine, ai_env):
    engine.register_app(ai_manifest("meter", ai_env))
    engine.register_app(ai_manifest("other", ai_env))
    engine.get_llm_service("meter").chat("count these four")
    engine.get_embedding_service("meter").embed(["five words are right here"])
    apps = engine.get_metrics()["apps"]
    counters = apps["meter"]["counters"]
    assert counters["llm.tokens.prompt"] == 3
    assert counters["llm.tokens.completion"] == 4
    assert counters["llm.tokens.embedding"] == 5
    assert apps["meter"]["operations"]["llm.chat"]["count"] == 1
    other = apps.get("other", {})  # registered, so it has counters of its own, but no LLM use
    assert not [k for k in other.get("counters", {}) if k.startswith("llm.")]
    assert not [k for k in other.get("operations", {}) if k.startswith("llm.")]
    assert 'mdb_llm_tokens_prompt_total{app="meter"} 3' in engine.metrics_text()


@pytest.mark.parametrize(
    ("sections", "path"),
    [
        ({"llm_config": {"enabled": True, "temperature": 3}}, "llm_config.temperature"),
        ({"llm_config": {"enabled": True, "provider": "acme"}}, "llm_config.provider"),
        ({"llm_config": {"enabled": True, "max_retries": -1}}, "llm_config.max_retries"),
        ({"llm_config": {"enabled": True, "timeout_seconds": 0}}, "llm_config.timeout_seconds"),
        ({"llm_config": {"enabled": True, "base_url": "ftp://x"}}, "llm_config.base_url"),
        ({"llm_config": {"enabled": True, "api_key": "sk-secret"}}, "llm_config.api_key"),
        ({"llm_config": {"enabled": True, "max_retry": 3}}, "llm_config.max_retry"),
        ({"llm_config": "yes"}, "llm_config"),
        (
            {"embedding_config": {"max_tokens_per_chunk": 3}},
            "embedding_config.max_tokens_per_chunk",
        ),
        (
            {"embedding_config": {"max_tokens_per_chunk": 50, "chunk_overlap_tokens": 50}},
            "embedding_config.chunk_overlap_tokens",
        ),
        ({"memory_config": {"similarity_threshold": 2}}, "memory_config.similarity_threshold"),
        ({"memory_config": {"collection_name": "system.bad"}}, "memory_config.collection_name"),
    ],
)
def test_bad_ai_config_names_its_path(engine, ai_env, sections, path):
    """Registration refuses the manifest, naming the path; so does the AI layer's own reader
    for configuration that does not come through a manifest."""
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app({"slug": "bad", **sections})
    assert path in info.value.paths
    assert "sk-secret" not in str(info.value)
    ((section, raw),) = sections.items()
    if section == "llm_config":
        with pytest.raises(ConfigurationError) as direct:
            LLMConfig.from_section(raw, slug="bad")
        assert str(direct.value).startswith(path)
        assert "sk-secret" not in str(direct.value)


def test_a_disabled_llm_config_is_explained(engine, ai_env):
    engine.register_app({"slug": "off", "llm_config": {"enabled": False}})
    with pytest.raises(ConfigurationError, match=r"^llm_config\.enabled"):
        engine.get_llm_service("off")


def test_missing_sections_and_keys_are_explained(engine, ai_env, monkeypatch):
    engine.register_app({"slug": "plain"})
    with pytest.raises(ConfigurationError, match=r"^llm_config\.enabled"):
        engine.get_llm_service("plain")
    with pytest.raises(ConfigurationError, match=r"^memory_config\.enabled"):
        engine.get_memory_service("plain")
    monkeypatch.delenv("OPENAI_API_KEY")
    engine.register_app({"slug": "nokey", "llm_config": {"enabled": True, "provider": "openai"}})
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        engine.get_llm_service("nokey")
    engine.register_app(
        {
            "slug": "offline",
            "llm_config": {"enabled": True, "provider": "local"},
            "memory_config": {},
        }
    )
    with pytest.raises(ConfigurationError, match=r"^memory_config\.infer"):
        engine.get_memory_service("offline")


def test_environment_completes_the_manifest(engine, llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("MDB_LLM_BASE_URL", llm_server.base_url)
    engine.register_app({"slug": "envy", "llm_config": {"enabled": True}})
    service = engine.get_llm_service("envy")
    assert service.config.provider == "openai_compatible", "detected from MDB_LLM_BASE_URL"
    assert service.chat("hello") == "echo: hello"
    monkeypatch.setenv("OPENAI_API_KEY", "rotated")
    assert engine.get_llm_service("envy") is not service, "a rotated key takes effect"


# --- ingestion ------------------------------------------------------------------------------------

DOC_V1 = "\n\n".join(
    f"Paragraph {i} explains topic {i} with several careful words about databases."
    for i in range(8)
)
DOC_V2 = "A much shorter second version about vectors."


def test_process_and_store_replaces_a_source_idempotently(engine, ai_env, raw_db):
    engine.register_app(ai_manifest("rag", ai_env))
    service = engine.get_embedding_service("rag")
    kb = engine.get_scoped_db("rag").kb
    first = service.process_and_store(DOC_V1, "doc-1", kb, metadata={"title": "T"})
    assert first["chunks"] > 1 and first["replaced"] == 0
    service.process_and_store("Another document entirely.", "doc-2", kb)
    stored = list(kb.find({"source_id": "doc-1"}).sort("chunk_index", 1))
    assert [d["chunk_index"] for d in stored] == list(range(first["chunks"]))
    for doc in stored:
        assert doc["token_count"] <= 40
        assert DOC_V1[doc["start"] : doc["end"]] == doc["text"]
        assert doc["metadata"] == {"title": "T"}
        assert len(doc["embedding"]) == ai_env.dimensions
        assert doc["embedding_model"] == "text-embedding-3-small"
    again = service.process_and_store(DOC_V1, "doc-1", kb, metadata={"title": "T"})
    assert again["replaced"] == first["chunks"]
    assert kb.count_documents({"source_id": "doc-1"}) == first["chunks"]
    second = service.process_and_store(DOC_V2, "doc-1", kb)
    assert [d["text"] for d in kb.find({"source_id": "doc-1"})] == [DOC_V2]
    assert second["replaced"] == first["chunks"]
    assert kb.count_documents({"source_id": "doc-2"}) == 1, "other sources untouched"
    assert {d["app_id"] for d in raw_db["rag_kb"].find()} == {"rag"}
    hits = kb.vector_search(query_text="shorter second version vectors", limit=1)
    assert hits[0]["source_id"] == "doc-1" and hits[0]["text"] == DOC_V2


def test_a_failed_ingest_keeps_the_previous_version(engine, ai_env):
    engine.register_app(ai_manifest("safe", ai_env))
    service = engine.get_embedding_service("safe")
    kb = engine.get_scoped_db("safe").kb
    service.process_and_store(DOC_V2, "doc", kb)
    ai_env.fail_next(500, path="embeddings")
    with pytest.raises(AIProviderError):
        service.process_and_store(DOC_V1, "doc", kb)
    assert [d["text"] for d in kb.find({"source_id": "doc"})] == [DOC_V2]
    with pytest.raises(ValueError, match="source_id"):
        service.process_and_store(DOC_V1, "", kb)
    with pytest.raises(TypeError, match="collection"):
        service.process_and_store(DOC_V1, "doc", "kb")


def test_concurrent_ingests_of_one_source_converge(engine, ai_env):
    engine.register_app(ai_manifest("race", ai_env))
    service = engine.get_embedding_service("race")
    kb = engine.get_scoped_db("race").kb
    texts = [" ".join([f"Version {i} of the document."] * 3) for i in range(4)]
    threads = [
        threading.Thread(target=service.process_and_store, args=(t, "doc", kb)) for t in texts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    docs = list(kb.find({"source_id": "doc"}))
    assert len({d["ingest_id"] for d in docs}) == 1, "exactly one version remains"
    assert docs[0]["text"] in texts


def test_bson_vectors_are_stored_compactly_and_searchable(engine, ai_env, raw_db):
    engine.register_app(ai_manifest("compact", ai_env))
    service = engine.get_embedding_service("compact")
    kb = engine.get_scoped_db("compact").kb
    service.process_and_store(DOC_V2, "doc", kb, bson_vectors=True)
    stored = raw_db["compact_kb"].find_one()
    assert stored["embedding"].subtype == 9
    assert kb.vector_search(query_text="vectors", limit=1)[0]["text"] == DOC_V2


def test_services_survive_an_engine_restart(engine, ai_env):
    engine.register_app(ai_manifest("restart", ai_env))
    before = engine.get_memory_service("restart")
    before.add("Remember me", user_id="u")
    engine.shutdown()
    engine.initialize()
    after = engine.get_memory_service("restart")
    assert after is not before, "rebuilt on the new client"
    assert [m["memory"] for m in after.get_all("u")] == ["Remember me"]
