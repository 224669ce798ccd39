"""Hybrid search: keyword (BM25) and vector rankings fused by reciprocal rank fusion — the
exact fallback checked against references written here, scoped like every read, and the
``$rankFusion`` aggregation Atlas would run checked as it is sent (the embedded server has
no ``$rankFusion``/``$search``: the test captures the command on the wire)."""

from __future__ import annotations

import math
import re

import pytest
from pymongo.errors import OperationFailure

from mdb_sync import QueryValidationError
from mdb_sync.ai.hybrid_search import (
    KEYWORD_SCAN_LIMIT,
    keyword_search,
    query_terms,
    rank_fusion_pipeline,
    reciprocal_rank_fusion,
)

pytest_plugins = ("openai_server",)

DIMS = 32
CORPUS = [
    "Green tea is brewed at 80 degrees for two minutes.",
    "Black tea wants boiling water and four minutes.",
    "Coffee beans are roasted, ground and brewed.",
    "The green house effect warms the planet.",
    "Tea, tea, tea: the British answer to everything.",
    "A French press brews coffee with coarse grounds.",
    "Matcha is a powdered green tea from Japan.",
    "Herbal infusions are not tea, strictly speaking.",
    "Café au lait: coffee with hot milk.",
    "Water temperature matters for green tea and white tea.",
]


def hybrid_manifest(slug, **extra):
    return {
        "slug": slug,
        "managed_indexes": {
            "docs": [
                {
                    "type": "hybrid",
                    "name": "kb",
                    "hybrid": {
                        "vector_index": {
                            "definition": {
                                "fields": [
                                    {
                                        "type": "vector",
                                        "path": "embedding",
                                        "numDimensions": DIMS,
                                        "similarity": "cosine",
                                    },
                                    {"type": "filter", "path": "lang"},
                                ]
                            }
                        },
                        "text_index": {
                            "definition": {
                                "mappings": {
                                    "dynamic": False,
                                    "fields": {"text": {"type": "string"}},
                                }
                            }
                        },
                    },
                }
            ]
        },
        **extra,
    }


def load(collection, server, texts=CORPUS, **fields):
    collection.insert_many(
        [
            {"n": i, "text": t, "embedding": server.expected_embedding(t), **fields}
            for i, t in enumerate(texts)
        ]
    )


def bm25_reference(texts, query, k1=1.2, b=0.75):
    """BM25 as documented, in plain Python over every text: (score, index) best first."""
    terms = query_terms(query)
    words = [re.findall(r"\w+", t.lower()) for t in texts]
    n = len(texts)
    average = sum(len(t) for t in texts) / n
    df = {term: sum(1 for w in words if term in w) for term in terms}
    scores = []
    for i, (text, tokens) in enumerate(zip(texts, words, strict=True)):
        score = 0.0
        for term in terms:
            tf = tokens.count(term)
            if tf:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(text) / average))
        if score > 0:
            scores.append((score, i))
    return sorted(scores, key=lambda p: (-p[0], p[1]))


@pytest.mark.parametrize(
    "query", ["green tea", "GREEN Tea temperature", "coffee brewed", "café", "nothing matches"]
)
def test_keyword_search_agrees_with_bm25(engine, llm_server, query):
    docs = engine.get_scoped_db("kw").docs
    load(docs, llm_server)
    expected = bm25_reference(CORPUS, query)
    results = keyword_search(docs, query, limit=10)
    assert [r["n"] for r in results] == [i for _, i in expected]
    assert [r["score"] for r in results] == pytest.approx([s for s, _ in expected], rel=1e-9)


def test_keyword_search_reads_only_this_apps_documents(engine, llm_server, recorder):
    mine = engine.get_scoped_db("mine").docs
    theirs = engine.get_scoped_db("theirs").docs
    load(mine, llm_server, CORPUS[:3])
    load(theirs, llm_server, ["green tea green tea green tea"] * 5, owner="theirs")
    recorder.clear()
    results = keyword_search(mine, "green tea", limit=10)
    assert [r["n"] for r in results] == [0, 1]
    assert all("owner" not in r for r in results)
    sent = recorder.commands("aggregate") + recorder.commands("find")
    assert len(sent) == 3, "statistics, the scan, the winners"
    for command in sent:
        assert command.get("aggregate", command.get("find")) == "mine_docs"
        assert "'app_id': 'mine'" in repr(command), command


def test_hybrid_fuses_the_two_rankings_like_rank_fusion(engine, llm_server):
    engine.register_app(hybrid_manifest("fuse"), create_indexes=False)
    docs = engine.get_scoped_db("fuse").docs
    load(docs, llm_server)
    query = "green tea temperature"
    vector = llm_server.expected_embedding("water for tea")  # meaning differs from the words
    by_vector = docs.vector_search(vector, limit=40)
    by_words = keyword_search(docs, query, limit=40)
    expected = {}
    for ranked in (by_vector, by_words):
        for rank, doc in enumerate(ranked, start=1):
            expected[doc["n"]] = expected.get(doc["n"], 0.0) + 1 / (60 + rank)
    best = sorted(expected.items(), key=lambda kv: -kv[1])[:5]

    results = docs.hybrid_search(query, query_vector=vector, limit=5)
    assert [r["n"] for r in results] == [n for n, _ in best]
    assert [r["score"] for r in results] == pytest.approx([s for _, s in best], rel=1e-12)
    assert all("embedding" not in r for r in results), "the vector stays out unless asked"

    only_words = docs.hybrid_search(query, query_vector=vector, limit=5, weights={"vector": 0})
    assert [r["n"] for r in only_words] == [d["n"] for d in by_words[:5]]
    only_vector = docs.hybrid_search(query, query_vector=vector, limit=5, weights={"text": 0})
    assert [r["n"] for r in only_vector] == [d["n"] for d in by_vector[:5]]
    heavy = docs.hybrid_search(query, query_vector=vector, limit=3, weights={"text": 3})
    assert heavy[0]["score"] == pytest.approx(
        1 / 61 * 3 + expected_vector_part(heavy[0], by_vector)
    )


def expected_vector_part(doc, by_vector):
    ranks = [i for i, d in enumerate(by_vector, start=1) if d["n"] == doc["n"]]
    return 1 / (60 + ranks[0]) if ranks else 0.0


def test_reciprocal_rank_fusion_keeps_one_copy_and_breaks_ties_by_order():
    a, b, c = ({"_id": i, "app_id": "x", "v": v} for i, v in enumerate("abc"))
    fused = reciprocal_rank_fusion({"vector": [a, b], "text": [b, c]}, {"vector": 1, "text": 1})
    assert [doc["v"] for _, doc, _ in fused] == ["b", "a", "c"]
    assert fused[0][0] == pytest.approx(1 / 62 + 1 / 61) and fused[0][2] == {"vector": 2, "text": 1}
    assert (fused[1][0], fused[2][0]) == pytest.approx((1 / 61, 1 / 62))
    tie = reciprocal_rank_fusion({"vector": [a], "text": [c]})
    assert [doc["v"] for _, doc, _ in tie] == ["a", "c"], "a tie keeps the order of the lists"
    other_app = {"_id": 0, "app_id": "y", "v": "other"}
    assert len(reciprocal_rank_fusion({"vector": [a], "text": [other_app]})) == 2


def test_hybrid_search_embeds_the_query_and_stays_in_scope(
    engine, llm_server, monkeypatch, recorder
):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("MDB_LLM_BASE_URL", raising=False)
    llm = {"enabled": True, "provider": "openai_compatible", "base_url": llm_server.base_url}
    engine.register_app(hybrid_manifest("rag", llm_config=llm), create_indexes=False)
    engine.register_app(hybrid_manifest("spy", llm_config=llm), create_indexes=False)
    docs = engine.get_scoped_db("rag").docs
    load(docs, llm_server, lang="en")
    spy = engine.get_scoped_db("spy").docs
    load(spy, llm_server, ["green tea temperature"] * 20, lang="en", owner="spy")
    recorder.clear()
    results = docs.hybrid_search("green tea temperature", limit=4, filter={"lang": "en"})
    assert llm_server.recorded("embeddings")[-1].body["input"] == ["green tea temperature"]
    assert len(results) == 4 and all(r["app_id"] == "rag" for r in results)
    assert results[0]["n"] == 9, "the document strong on both sides wins"
    reads = [
        c
        for c in recorder.commands("aggregate") + recorder.commands("find")
        if not c.get("aggregate", c.get("find")).startswith("mdb_")  # the engine's probes
    ]
    assert len(reads) == 4, "vector candidates; keyword statistics, scan and winners"
    for command in reads:
        assert command.get("aggregate", command.get("find")) == "rag_docs"
        assert "'app_id': 'rag'" in repr(command)
        assert "'lang': 'en'" in repr(command), "the filter applies to both sides"
    assert docs.hybrid_search("green tea", limit=3, filter={"lang": "fr"}) == []


def test_projection_and_identity_fields(engine, llm_server):
    docs = engine.get_scoped_db("shape").docs
    load(docs, llm_server)
    vector = llm_server.expected_embedding("green tea")
    (top,) = docs.hybrid_search("green tea", query_vector=vector, limit=1, projection={"text": 1})
    assert set(top) == {"_id", "text", "score"}
    (top,) = docs.hybrid_search(
        "green tea",
        query_vector=vector,
        limit=1,
        projection={"text": 1, "_id": 0},
        score_field="rrf",
    )
    assert set(top) == {"text", "rrf"}
    (top,) = docs.hybrid_search("green tea", query_vector=vector, limit=1, include_vector=True)
    assert top["embedding"] == llm_server.expected_embedding(top["text"])


def test_inputs_are_validated(engine, llm_server):
    engine.register_app(hybrid_manifest("val"), create_indexes=False)
    docs = engine.get_scoped_db("val").docs
    load(docs, llm_server)
    vector = [0.1] * DIMS
    with pytest.raises(ValueError, match="query_text"):
        docs.hybrid_search("  ", query_vector=vector)
    with pytest.raises(ValueError, match="limit"):
        docs.hybrid_search("tea", query_vector=vector, limit=0)
    with pytest.raises(ValueError, match="candidates"):
        docs.hybrid_search("tea", query_vector=vector, limit=10, candidates=5)
    with pytest.raises(ValueError, match="unknown side"):
        docs.hybrid_search("tea", query_vector=vector, weights={"keyword": 1})
    with pytest.raises(ValueError, match="at least one side"):
        docs.hybrid_search("tea", query_vector=vector, weights={"vector": 0, "text": 0})
    with pytest.raises(ValueError, match=">= 0"):
        docs.hybrid_search("tea", query_vector=vector, weights={"text": -1})
    with pytest.raises(ValueError, match="method"):
        docs.hybrid_search("tea", query_vector=vector, method="fast")
    with pytest.raises(TypeError, match="unexpected keyword"):
        docs.hybrid_search("tea", query_vector=vector, colour="red")
    with pytest.raises(QueryValidationError, match="path"):
        docs.hybrid_search("tea", query_vector=vector, text_paths=["$text"])
    with pytest.raises(QueryValidationError):
        docs.hybrid_search("tea", query_vector=vector, filter={"$where": "true"})
    with pytest.raises(QueryValidationError, match="declares 32"):
        docs.hybrid_search("tea", query_vector=[0.1] * 5)
    with pytest.raises(ValueError, match="at most 8"):
        keyword_search(docs, "tea", text_paths=[f"f{i}" for i in range(9)])
    assert len(query_terms(" ".join(f"word{i}" for i in range(40)))) == 16
    assert KEYWORD_SCAN_LIMIT == 10_000


def test_the_rank_fusion_aggregation_atlas_would_run_is_scoped(engine, llm_server, recorder):
    """``method="server"`` sends the one-aggregation form. The embedded server refuses
    ``$rankFusion``, so this checks the command as sent: ``$rankFusion`` over a
    ``$vectorSearch`` and a ``$search`` pipeline, each given the app's ``app_id`` by the
    sandbox, on the app's physical collection."""
    result = engine.register_app(hybrid_manifest("atlas"))
    outcomes = {o["name"]: o for o in result["indexes"]}
    if engine.uses_embedded_server:
        assert outcomes["kb_text"]["status"] == "exact_fallback", "served by the fallback"
        assert outcomes["kb_text"]["served_by"] == "keyword"
    docs = engine.get_scoped_db("atlas").docs
    vector = [0.5] * DIMS
    recorder.clear()
    with pytest.raises(OperationFailure):
        docs.hybrid_search(
            "green tea", query_vector=vector, limit=5, method="server", filter={"lang": "en"}
        )
    (command,) = recorder.commands("aggregate")
    assert command["aggregate"] == "atlas_docs"
    fusion = command["pipeline"][0]["$rankFusion"]
    assert fusion["combination"] == {"weights": {"vector": 1.0, "text": 1.0}}
    (vector_stage,) = fusion["input"]["pipelines"]["vector"]
    search = vector_stage["$vectorSearch"]
    assert search["index"] == "kb_vector" and search["path"] == "embedding"
    assert search["limit"] == 40 and search["numCandidates"] == 800
    assert search["filter"] == {"$and": [{"lang": "en"}, {"app_id": {"$eq": "atlas"}}]}
    text = fusion["input"]["pipelines"]["text"]
    assert text[0]["$search"]["index"] == "kb_text"
    assert text[0]["$search"]["compound"] == {
        "must": [{"text": {"query": "green tea", "path": ["text"]}}],
        "filter": [{"equals": {"path": "app_id", "value": "atlas"}}],
    }
    assert {"$match": {"app_id": "atlas"}} in text and {"$match": {"lang": "en"}} in text
    assert text[-1] == {"$limit": 40}
    assert command["pipeline"][1:] == [
        {"$limit": 5},
        {"$set": {"score": {"$meta": "score"}}},
        {"$project": {"embedding": 0}},
    ]
    plain = rank_fusion_pipeline(
        "q",
        [1.0],
        index="v",
        text_index="t",
        path="embedding",
        paths=["text"],
        limit=3,
        candidates=10,
        num_candidates=100,
        filter=None,
        weights={"vector": 1.0, "text": 0.0},
        projection={"text": 1},
        include_vector=False,
        score_field="score",
    )
    assert list(plain[0]["$rankFusion"]["input"]["pipelines"]) == ["vector"], "weight 0: left out"
    assert plain[-1] == {"$project": {"text": 1, "score": 1}}


def test_several_read_scopes_fuse_both_apps_documents_apart(engine, llm_server):
    """A reader granted another app's data sees both apps' matches; two documents with the
    same ``_id`` in the two apps stay two results (identity is ``app_id`` and ``_id``)."""
    engine.register_app({"slug": "shop"})
    engine.register_app({"slug": "hq", "data_access": {"read_scopes": ["shop"]}})
    text = "green tea from the shop"
    vector = llm_server.expected_embedding(text)
    engine.get_scoped_db("shop").docs.insert_one({"_id": 1, "text": text, "embedding": vector})
    hq = engine.get_scoped_db("hq", read_scopes=["hq", "shop"])
    hq.docs.insert_one({"_id": 1, "text": "green tea at headquarters", "embedding": vector})
    engine.get_scoped_db("other").docs.insert_one({"_id": 1, "text": text, "embedding": vector})
    results = hq.docs.hybrid_search("green tea", query_vector=vector, limit=10)
    assert sorted(r["app_id"] for r in results) == ["hq", "shop"]
    # Each side ranks the two 1st and 2nd: the fused scores add up to both ranks on both.
    assert sum(r["score"] for r in results) == pytest.approx(2 / 61 + 2 / 62)
