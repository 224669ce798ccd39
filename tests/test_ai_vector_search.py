"""Vector search on scoped collections: exact k-NN against a brute-force reference, result
shape, validation against the declared index, isolation between apps, server detection."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
from bson import Binary, MaxKey, MinKey, ObjectId

from mdb_sync import QueryValidationError
from mdb_sync.ai.embeddings import to_bson_vector
from mdb_sync.ai.hybrid_search import server_supports_rank_fusion
from mdb_sync.ai.vector_search import exact_search, server_supports_vector_search

pytest_plugins = ("openai_server",)
DIMS = 16


def manifest(slug, similarity="cosine", dims=DIMS, **extra):
    return {
        "slug": slug,
        "managed_indexes": {
            "items": [
                {
                    "type": "vectorSearch",
                    "name": "items_vector",
                    "definition": {
                        "fields": [
                            {
                                "type": "vector",
                                "path": "vec",
                                "numDimensions": dims,
                                "similarity": similarity,
                            },
                            {"type": "filter", "path": "group"},
                        ]
                    },
                }
            ]
        },
        **extra,
    }


def brute_force(docs, query, similarity, limit):
    """The reference: plain Python over every document."""

    def score(vec):
        if similarity == "euclidean":
            return 1 / (1 + math.sqrt(sum((a - b) ** 2 for a, b in zip(vec, query, strict=True))))
        dot = sum(a * b for a, b in zip(vec, query, strict=True))
        if similarity == "cosine":
            dot /= math.sqrt(sum(a * a for a in vec)) * math.sqrt(sum(b * b for b in query))
        return (1 + dot) / 2

    ranked = sorted(((score(d["vec"]), i) for i, d in enumerate(docs)), key=lambda p: -p[0])
    return [(docs[i]["n"], s) for s, i in ranked[:limit]]


@pytest.fixture
def random_docs():
    rng = np.random.default_rng(1234)
    return [
        {"n": i, "group": i % 3, "vec": rng.normal(size=DIMS).round(6).tolist()} for i in range(400)
    ]


@pytest.mark.parametrize("similarity", ["cosine", "dotProduct", "euclidean"])
def test_exact_search_agrees_with_brute_force(engine, random_docs, similarity):
    engine.register_app(manifest("vs", similarity), create_indexes=False)
    items = engine.get_scoped_db("vs").items
    items.insert_many([dict(d) for d in random_docs])
    rng = np.random.default_rng(99)
    for _ in range(3):
        query = rng.normal(size=DIMS).tolist()
        results = items.vector_search(query, limit=12)
        expected = brute_force(random_docs, query, similarity, 12)
        assert [r["n"] for r in results] == [n for n, _ in expected]
        assert [r["score"] for r in results] == pytest.approx([s for _, s in expected], abs=1e-9)
        in_group = [d for d in random_docs if d["group"] == 1]
        filtered = items.vector_search(query, limit=5, filter={"group": 1})
        assert [r["n"] for r in filtered] == [
            n for n, _ in brute_force(in_group, query, similarity, 5)
        ]


def test_small_pages_give_the_same_answer(engine, random_docs):
    items = engine.get_scoped_db("pages").items
    items.insert_many([dict(d) for d in random_docs[:60]])
    query = np.asarray(random_docs[0]["vec"])
    common = dict(
        path="vec",
        similarity="cosine",
        limit=10,
        filter=None,
        projection=None,
        include_vector=False,
        score_field="score",
    )
    whole = exact_search(items, query, **common)
    paged = exact_search(items, query, page_size=7, **common)
    assert [d["n"] for d in paged] == [d["n"] for d in whole]
    assert whole[0]["n"] == 0 and whole[0]["score"] == pytest.approx(1.0)


def test_every_id_type_is_reached_when_paging(engine):
    items = engine.get_scoped_db("ids").items
    ids = [
        MinKey(),
        None,
        float("nan"),
        1,
        2.5,
        "a",
        "b",
        {"k": 1},
        Binary(b"x", 0),
        ObjectId(),
        ObjectId(),
        False,
        True,
        datetime.datetime(2020, 1, 1),
        MaxKey(),
    ]
    items.insert_many([{"_id": i, "n": n, "vec": [1.0, float(n)]} for n, i in enumerate(ids)])
    found = exact_search(
        items,
        np.array([1.0, 0.5]),
        path="vec",
        similarity="euclidean",
        limit=len(ids),
        filter=None,
        projection=None,
        include_vector=False,
        score_field="score",
        page_size=2,
    )
    assert sorted(d["n"] for d in found) == list(range(len(ids)))


def test_result_shape_projection_threshold_and_bson_vectors(engine):
    items = engine.get_scoped_db("shape").items
    items.insert_many(
        [
            {"n": 1, "title": "one", "vec": [1.0, 0.0]},
            {"n": 2, "title": "two", "vec": to_bson_vector([0.0, 1.0])},
            {"n": 3, "title": "no vector"},
            {"n": 4, "title": "wrong size", "vec": [1.0, 0.0, 0.0]},
            {"n": 5, "title": "not numbers", "vec": ["a", "b"]},
        ]
    )
    results = items.vector_search([1.0, 0.1], path="vec", limit=10)
    assert [r["n"] for r in results] == [1, 2], "documents without a usable vector are skipped"
    assert items.vector_search([1.0, 0.1], limit=10) == [], "the default path is 'embedding'"
    assert set(results[0]) == {"_id", "n", "title", "score", "app_id"}
    with_vector = items.vector_search([1.0, 0.1], path="vec", limit=1, include_vector=True)
    assert with_vector[0]["vec"] == [1.0, 0.0]
    projected = items.vector_search(
        [0.0, 1.0], path="vec", limit=1, projection={"title": 1}, score_field="sim"
    )
    assert set(projected[0]) == {"_id", "title", "sim"} and projected[0]["title"] == "two"
    assert [
        r["n"] for r in items.vector_search([1.0, 0.0], path="vec", limit=5, min_score=0.9)
    ] == [1]
    assert items.vector_search([1.0, 0.0], path="vec", filter={"n": {"$gt": 10}}) == []


def test_inputs_are_validated(engine):
    engine.register_app(manifest("val"), create_indexes=False)
    items = engine.get_scoped_db("val").items
    good = [0.1] * DIMS
    with pytest.raises(QueryValidationError, match=f"15 dimensions.*declares {DIMS}"):
        items.vector_search([0.1] * 15)
    with pytest.raises(ValueError, match="NaN"):
        items.vector_search([float("nan")] * DIMS)
    with pytest.raises(TypeError, match="sequence of numbers"):
        items.vector_search("not a vector")
    with pytest.raises(ValueError, match="limit"):
        items.vector_search(good, limit=0)
    with pytest.raises(ValueError, match="limit"):
        items.vector_search(good, limit=10_001)
    with pytest.raises(ValueError, match="num_candidates"):
        items.vector_search(good, limit=10, num_candidates=5)
    with pytest.raises(ValueError, match="query_vector or query_text"):
        items.vector_search()
    with pytest.raises(ValueError, match="not both"):
        items.vector_search(good, query_text="x")
    with pytest.raises(TypeError, match="unexpected keyword"):
        items.vector_search(good, colour="red")
    with pytest.raises(QueryValidationError):
        items.vector_search(good, filter={"$where": "true"})
    with pytest.raises(QueryValidationError, match="path"):
        items.vector_search(good, path="$vec")
    with pytest.raises(ValueError, match="similarity"):
        items.vector_search(good, similarity="manhattan")


def test_apps_never_see_each_others_vectors(engine, recorder):
    a = engine.get_scoped_db("app_a").items
    b = engine.get_scoped_db("app_b").items
    query = [1.0, 0.0, 0.0]
    a.insert_many(
        [{"owner": "a", "embedding": [0.0, 1.0, 0.0]}, {"owner": "a", "embedding": [0.0, 0.0, 1.0]}]
    )
    b.insert_many([{"owner": "b", "embedding": list(query)} for _ in range(5)])  # b's are closer
    recorder.clear()
    results = a.vector_search(query, limit=10)
    assert {r["owner"] for r in results} == {"a"} and len(results) == 2
    finds = recorder.commands("find")
    assert finds, "candidates are read with find"
    for command in finds:
        assert command["find"] == "app_a_items"
        assert "'app_id': 'app_a'" in repr(command["filter"])
    assert {r["owner"] for r in b.vector_search(query, limit=10)} == {"b"}


def test_the_sandbox_reaches_the_searches_through_its_host(engine):
    """The scoping layer imports no AI module: a scoped database searches with what its host
    brings (the engine's), and a host that brings none refuses clearly."""
    from mdb_sync import ConfigurationError
    from mdb_sync.scoping import ScopedDatabase
    from mdb_sync.scoping.host import StorageScopeHost

    calls = []
    host = StorageScopeHost(
        engine.storage,
        lambda *args: None,
        lambda *args: None,
        lambda slug: None,
        search=lambda kind, coll, *args, **kwargs: calls.append((kind, coll, args, kwargs)) or [],
    )
    db = ScopedDatabase(host, "hosted")
    assert db.docs.vector_search([1.0, 0.0], limit=3) == []
    assert db.docs.hybrid_search("tea", limit=2) == []
    assert [(kind, c) for kind, c, _, _ in calls] == [("vector", db.docs), ("hybrid", db.docs)]
    assert calls[0][3]["limit"] == 3 and calls[1][2] == ("tea",)
    bare = StorageScopeHost(engine.storage, lambda *a: None, lambda *a: None, lambda s: None)
    with pytest.raises(ConfigurationError, match="vector_search"):
        ScopedDatabase(bare, "hosted").docs.vector_search([1.0])


def test_server_support_is_probed_once_per_engine(engine, recorder):
    supported = server_supports_vector_search(engine)
    assert isinstance(supported, bool)
    if engine.uses_embedded_server or engine.describe_server().startswith("mongodb://127.0.0.1"):
        assert supported is False, "the embedded server has no $vectorSearch"
    recorder.clear()
    assert server_supports_vector_search(engine) is supported
    assert recorder.commands("aggregate") == [], "cached"
    # $rankFusion goes through the same probe, remembered separately for the same engine.
    fusion = server_supports_rank_fusion(engine)
    probes = recorder.commands("aggregate")
    assert [list(p["pipeline"][0]) for p in probes] == [["$rankFusion"]]
    assert probes[0]["aggregate"] == "mdb_stage_probe"
    assert server_supports_rank_fusion(engine) is fusion
    assert server_supports_vector_search(engine) is supported
    assert len(recorder.commands("aggregate")) == 1, "both cached"


def test_query_text_is_embedded_with_the_apps_service(engine, llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    engine.register_app(
        {
            "slug": "texts",
            "llm_config": {
                "enabled": True,
                "provider": "openai_compatible",
                "base_url": llm_server.base_url,
            },
        }
    )
    docs = engine.get_scoped_db("texts").docs
    for text in ["red apples and green pears", "fast cars on the highway", "apples in the orchard"]:
        docs.insert_one({"text": text, "embedding": llm_server.expected_embedding(text)})
    results = docs.vector_search(query_text="apples", limit=2)
    assert {r["text"] for r in results} == {"red apples and green pears", "apples in the orchard"}
    assert llm_server.recorded("embeddings")[-1].body["input"] == ["apples"]
