"""Exact vector search time for 10k and 100k vectors of 384 dimensions.

Compares ``collection.vector_search`` (exact path: one scoped streaming read, numpy top-k) with
the same search written by hand on raw pymongo (one unscoped ``find`` streaming the vectors
into a numpy matrix, then a dot product and ``argpartition``), in the same run on the same
server, for vectors stored as arrays of doubles and as BSON float32 vectors. Both answers
are checked to agree. "numpy only" is the scoring of an in-memory matrix: what is left once
the documents have been read.

    .venv/bin/python benchmarks/vector_search.py [--sizes 10000,100000] [--repeat 2]
        [--hybrid-sizes 10000,50000]

A second table compares ``hybrid_search`` (exact fallback: vector k-NN plus the BM25 keyword
side, fused) with ``vector_search`` alone and ``keyword_search`` alone, on chunks of 100
words with 384-dimension vectors, for a query of three words (one common, two rare).

With no ``MDB_MONGO_URI`` an embedded server is started on a temporary data directory (its
reads dominate the times; a real mongod is several times faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from functools import partial

import numpy as np

from mdb_sync import MongoDBEngine
from mdb_sync.ai.blas import limit_blas_threads
from mdb_sync.ai.embeddings import to_bson_vector
from mdb_sync.ai.hybrid_search import keyword_search
from mdb_sync.ai.vector_search import as_vector

DIMS = 384
LIMIT = 10


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def score_top(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    with limit_blas_threads():
        scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    return np.argpartition(-scores, LIMIT)[:LIMIT]


def raw_search(raw, slug: str, query: np.ndarray, n: int) -> list:
    """The hand-written baseline: stream every vector of the app, score, take the top k."""
    matrix = np.empty((n, DIMS), dtype=np.float64)
    ids = []
    for i, doc in enumerate(raw.find({"app_id": slug}, {"embedding": 1}, batch_size=1000)):
        matrix[i] = as_vector(doc["embedding"])
        ids.append(doc["_id"])
    matrix = matrix[: len(ids)]
    with limit_blas_threads():
        scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    top = np.argpartition(-scores, LIMIT)[:LIMIT]
    return [ids[i] for i in top[np.argsort(-scores[top])]]


def bench_size(engine, db, rng, n: int, repeat: int) -> None:
    vectors = rng.normal(size=(n, DIMS)).astype(np.float32)
    query = rng.normal(size=DIMS)
    as_float64 = vectors.astype(np.float64)
    numpy_s, _ = best_of(repeat, partial(score_top, as_float64, query))
    storages = (("double array", lambda v: v.tolist()), ("bson float32", to_bson_vector))
    for label, encode in storages:
        name = f"v{n}_{label.split()[0]}"
        collection = db[name]
        for start in range(0, n, 1000):
            collection.insert_many(
                [{"embedding": encode(v)} for v in vectors[start : start + 1000]]
            )
        raw = engine._raw_collection(f"bench_{name}")
        ours_s, ours = best_of(repeat, partial(collection.vector_search, query, limit=LIMIT))
        raw_s, theirs = best_of(repeat, partial(raw_search, raw, "bench", query, n))
        same = [d["_id"] for d in ours] == theirs
        print(
            f"{n:>8,} {label:<13}{ours_s:>9.2f}{raw_s:>9.2f}{ours_s / raw_s:>9.2f}x"
            f"{numpy_s * 1000:>15.1f}{'yes' if same else 'NO':>10}"
        )
        raw.drop()


def bench_hybrid(db, rng, n: int, repeat: int) -> None:
    """hybrid_search against its two halves, on the same documents, in the same run."""
    vocabulary = np.array([f"w{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, vocabulary.size + 1)  # Zipf: a few common words, many rare
    weights /= weights.sum()
    collection = db[f"h{n}"]
    for start in range(0, n, 1000):
        size = min(1000, n - start)
        words = rng.choice(vocabulary, size=(size, 100), p=weights)
        vectors = rng.normal(size=(size, DIMS)).astype(np.float32)
        collection.insert_many(
            [
                {"text": " ".join(w), "embedding": to_bson_vector(v)}
                for w, v in zip(words, vectors, strict=True)
            ]
        )
    query_text = "w3 w4000 w15000"
    query = rng.normal(size=DIMS)
    vector_s, _ = best_of(repeat, partial(collection.vector_search, query, limit=40))
    keyword_s, found = best_of(repeat, partial(keyword_search, collection, query_text, limit=40))
    hybrid_s, fused = best_of(
        repeat, partial(collection.hybrid_search, query_text, query_vector=query, limit=LIMIT)
    )
    print(
        f"{n:>8,}{vector_s:>11.2f}{keyword_s:>12.2f}{hybrid_s:>11.2f}"
        f"{hybrid_s / vector_s:>15.2f}x{len(found):>10}{len(fused):>8}"
    )
    collection.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--hybrid-sizes", default="10000,50000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    hybrid_sizes = [int(s) for s in args.hybrid_sizes.split(",") if s]

    uri = os.environ.get("MDB_MONGO_URI")
    # The embedded server on disk: 100k vectors outgrow its in-memory storage.
    data_dir = None if uri else tempfile.mkdtemp(prefix="mdb-bench-vectors-")
    db_name = f"bench_vectors_{uuid.uuid4().hex[:8]}"
    try:
        with MongoDBEngine(uri, db_name, embedded_dir=data_dir) as engine:
            db = engine.get_scoped_db("bench")
            rng = np.random.default_rng(42)
            print(f"server: {engine.describe_server()}; {DIMS} dimensions, top {LIMIT}, ", end="")
            print(f"best of {args.repeat}\n")
            header = (
                f"{'vectors':>8} {'stored as':<13}{'ours s':>9}{'raw s':>9}{'ours/raw':>10}"
                f"{'numpy only ms':>15}{'same top':>10}"
            )
            print(header)
            print("-" * len(header))
            for n in sizes:
                bench_size(engine, db, rng, n, args.repeat)
            if hybrid_sizes:
                print("\nhybrid_search (exact fallback) vs its halves, seconds, best of", end="")
                print(f" {args.repeat}; keyword and vector sides take 40 candidates each\n")
                header = (
                    f"{'chunks':>8}{'vector s':>11}{'keyword s':>12}{'hybrid s':>11}"
                    f"{'hybrid/vector':>16}{'keyword':>10}{'fused':>8}"
                )
                print(header)
                print("-" * len(header))
                for n in hybrid_sizes:
                    bench_hybrid(db, rng, n, args.repeat)
            engine.client.drop_database(db_name)
    finally:
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
