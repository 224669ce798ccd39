"""Vector search for a newcomer: a declared vector index on a server without Atlas Search is
served by the exact search (healthy, one INFO line, `mdb health --strict` exits 0), and a
filter on a chunk's metadata key written as a top-level field is explained, not silently
answered with ``[]``."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from mdb_sync import QueryValidationError
from mdb_sync.ai.vector_search import server_supports_vector_search
from mdb_sync.cli import cli

VECTOR_INDEX = {
    "type": "vectorSearch",
    "name": "kb_vector",
    "definition": {
        "fields": [
            {"type": "vector", "path": "embedding", "numDimensions": 3, "similarity": "cosine"}
        ]
    },
}


def _register(engine, slug, *indexes):
    return engine.register_app({"slug": slug, "managed_indexes": {"kb": list(indexes)}})


def test_a_vector_index_without_atlas_search_is_served_exactly_and_healthy(
    engine, mongo_uri, db_name, caplog
):
    if server_supports_vector_search(engine):  # Atlas: the index itself serves
        result = _register(engine, "kb_app", VECTOR_INDEX)
        assert result["indexes"][0]["status"] in ("created", "pending", "exists")
        return
    caplog.set_level(logging.INFO, logger="mdb_sync")
    result = _register(engine, "kb_app", VECTOR_INDEX)
    (outcome,) = result["indexes"]
    assert outcome["status"] == "exact_fallback"
    assert outcome["served_by"] == "exact" and "exact" in outcome["note"]
    assert "error" not in outcome
    lines = [r for r in caplog.records if "kb_vector" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO], [r.getMessage() for r in lines]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    health = engine.get_health_status()
    assert health["status"] == "healthy", health
    assert health["indexes"]["outcomes"] == {"exact_fallback": 1}
    assert health["apps"]["degraded"] == []
    env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    strict = CliRunner().invoke(cli, ["health", "--strict"], env=env)
    assert strict.exit_code == 0, strict.output
    listed = json.loads(CliRunner().invoke(cli, ["apps", "list", "--json"], env=env).stdout)
    assert listed[0]["index_problems"] == 0

    # ... and the exact search does serve it.
    db = engine.get_scoped_db("kb_app")
    db.kb.insert_many([{"t": "x", "embedding": [1.0, 0.0, 0.0]}, {"embedding": [0.0, 1.0, 0.0]}])
    assert db.kb.vector_search([1.0, 0.1, 0.0], limit=1)[0]["t"] == "x"

    # A full-text search index has no fallback: still reported, still degraded.
    text = {"type": "search", "name": "kb_text", "definition": {"mappings": {"dynamic": True}}}
    caplog.clear()
    result = _register(engine, "kb_text_app", text)
    assert result["indexes"][0]["status"] == "not_supported"
    assert engine.get_health_status()["status"] == "degraded"


@pytest.fixture
def chunks(engine):
    db = engine.get_scoped_db("rag")
    db.knowledge_base.insert_many(
        [
            {"text": "starter", "embedding": [1.0, 0.0], "metadata": {"lang": "en"}},
            {"text": "levain", "embedding": [0.9, 0.1], "metadata": {"lang": "fr"}},
            {"text": "tea", "embedding": [0.0, 1.0], "source_id": "doc", "metadata": {}},
        ]
    )
    return db.knowledge_base


def test_a_filter_on_a_metadata_key_names_metadata_dot_key(chunks):
    with pytest.raises(QueryValidationError, match=r"'metadata\.lang'") as refused:
        chunks.vector_search([1.0, 0.0], path="embedding", filter={"lang": "en"})
    assert refused.value.context["use"] == "metadata.lang"
    with pytest.raises(QueryValidationError, match=r"metadata\.lang"):
        chunks.vector_search([1.0, 0.0], filter={"$or": [{"lang": "en"}, {"lang": "de"}]})
    found = chunks.vector_search([1.0, 0.0], filter={"metadata.lang": "en"})
    assert [r["text"] for r in found] == ["starter"]


def test_empty_results_for_real_fields_stay_empty(chunks):
    # A top-level field that exists, and one no document has (yet): a legitimate [] each.
    assert chunks.vector_search([1.0, 0.0], filter={"source_id": "other"}) == []
    assert chunks.vector_search([1.0, 0.0], filter={"archived": True}) == []
    assert chunks.vector_search([1.0, 0.0], filter={"metadata.lang": "de"}) == []


def test_the_hint_never_looks_at_another_apps_documents(engine, chunks):
    other = engine.get_scoped_db("other_rag")
    other.knowledge_base.insert_one({"embedding": [1.0, 0.0], "metadata": {"topic": "x"}})
    # "topic" exists under metadata only in the other app: here it is just an empty result.
    assert chunks.vector_search([1.0, 0.0], filter={"topic": "x"}) == []
