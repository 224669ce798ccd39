"""Hybrid search: keyword and vector results fused by reciprocal rank fusion, on every server.

``db.docs.hybrid_search("green tea temperature", limit=5)`` ranks the app's documents twice —
by keywords (BM25) and by vector similarity to the query's embedding — and fuses the two
rankings the way MongoDB's ``$rankFusion`` does: each document scores
``sum(weight / (60 + rank))`` over the lists it appears in (ranks from 1), best first.

Three paths, chosen per call (``method="auto"``):

- **Atlas with ``$rankFusion``** (MongoDB 8.0+ with Atlas Search and Vector Search, both
  indexes queryable): one aggregation, ``$rankFusion`` over a ``$vectorSearch`` pipeline and a
  ``$search`` pipeline, sent through the scoped collection — the sandbox's pipeline rewriter
  adds the ``app_id`` filter to ``$vectorSearch.filter`` and to the ``$search`` operator
  (a ``compound`` filter plus a ``$match``), inside each input pipeline.
- **Search indexes without ``$rankFusion``**: each side runs on the server where its index is
  queryable (``$vectorSearch``, ``$search``) and the fusion is computed here.
- **The exact fallback** (the embedded server, a plain mongod): the vector side is the exact
  k-NN search of :mod:`~mdb_sync.ai.vector_search`; the keyword side is
  :func:`keyword_search`: the server selects, through the scoped collection, the documents
  containing a query term (a case-insensitive whole-word regular expression per term), and
  BM25 is computed here over that bounded set, with the collection's statistics (document
  count, mean length) from one server-side ``$group``.

The keyword fallback's bounds: at most :data:`MAX_QUERY_TERMS` distinct terms of 2 to
:data:`MAX_TERM_LENGTH` characters (words, lower-cased; shorter or extra ones are dropped),
at most :data:`MAX_TEXT_PATHS` string fields, at most :data:`KEYWORD_SCAN_LIMIT` documents
containing a term read per query — streamed, keeping only their term counts (beyond that,
the first ones in the server's natural order are scored and the document frequencies are
scaled up to the full count, with a log line) — at most 1,000 candidates per side, and each
read bounded by the scoped ``maxTimeMS`` like any other. Words are ``\\w+`` runs,
lower-cased; the server's prefilter uses ``\\b`` boundaries next to ASCII word characters only
(where every server agrees on them), so it never misses a document the words match. Scores
follow BM25 (k1 = 1.2, b = 0.75, length in characters of the text fields joined by spaces,
IDF ``ln(1 + (N - df + 0.5) / (df + 0.5))``).
"""

from __future__ import annotations

import heapq
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import encode

from ..exceptions import QueryValidationError
from .server_stages import server_supports_stage
from .vector_search import (
    MAX_NUM_CANDIDATES,
    as_vector,
    checked_path,
    declared_vector_fields,
    engine_of,
    search_index_ready,
    server_supports_vector_search,
    vector_search,
)

log = logging.getLogger(__name__)

#: Reciprocal rank fusion's constant (``$rankFusion`` uses 60 and does not let it change).
RRF_K = 60
MAX_QUERY_TERMS = 16
MIN_TERM_LENGTH = 2
MAX_TERM_LENGTH = 64
MAX_TEXT_PATHS = 8
#: Documents containing a query term that the keyword fallback scores per query.
KEYWORD_SCAN_LIMIT = 10_000
#: Results each side contributes to the fusion at most.
MAX_CANDIDATES = 1_000
BM25_K1 = 1.2
BM25_B = 0.75
DEFAULT_TEXT_PATHS = ("text",)
METHODS = ("auto", "exact", "server")
SIDES = ("vector", "text")
#: Where each side's own score travels until the fusion replaces it.
SIDE_SCORE = "_mdb_side_score"

_WORD = re.compile(r"\w+")
_ASCII_WORD = re.compile(r"[A-Za-z0-9_]")


# --- terms and the keyword fallback --------------------------------------------------------------


def query_terms(text: str) -> list[str]:
    """The distinct words of ``text`` (lower-cased, in order) that the keyword side matches:
    2 to 64 characters, at most 16."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if MIN_TERM_LENGTH <= len(word) <= MAX_TERM_LENGTH and word not in terms:
            terms.append(word)
            if len(terms) == MAX_QUERY_TERMS:
                break
    return terms


def term_pattern(term: str) -> str:
    """A regular expression matching ``term`` as a whole word (``\\b`` only next to ASCII
    word characters, where every server agrees on what a boundary is)."""
    pattern = re.escape(term)
    if _ASCII_WORD.fullmatch(term[0]):
        pattern = r"\b" + pattern
    if _ASCII_WORD.fullmatch(term[-1]):
        pattern += r"\b"
    return pattern


def _text_expression(paths: Sequence[str]) -> Any:
    """The documents' text: the string fields of ``paths`` joined by spaces ("" otherwise)."""
    parts: list[Any] = []
    for path in paths:
        if parts:
            parts.append(" ")
        parts.append({"$cond": [{"$eq": [{"$type": f"${path}"}, "string"]}, f"${path}", ""]})
    return parts[0] if len(parts) == 1 else {"$concat": parts}


def _checked_paths(paths: Any) -> list[str]:
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, Sequence) or not paths:
        raise ValueError("text_paths must be a non-empty list of field names")
    if len(paths) > MAX_TEXT_PATHS:
        raise ValueError(f"text_paths: at most {MAX_TEXT_PATHS} fields")
    return [checked_path(p) for p in dict.fromkeys(paths)]


def _scoped_filter(filter: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"$and": [dict(filter), dict(extra)]} if filter else dict(extra)


def keyword_search(
    collection: Any,
    query_text: str,
    *,
    text_paths: Sequence[str] | str = DEFAULT_TEXT_PATHS,
    limit: int = 10,
    filter: Mapping[str, Any] | None = None,
    projection: Mapping[str, Any] | None = None,
    score_field: str = "score",
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """The ``limit`` documents of ``collection`` that best match ``query_text``'s words, by
    BM25, best first, each with its ``score`` — on any server, every read through the scoped
    collection (filtered by ``app_id``).

    Three reads: the statistics of the documents matching ``filter`` (their number and mean
    text length, one server-side ``$group``); the text of those containing a query term
    (a case-insensitive whole-word regular expression per term, at most
    :data:`KEYWORD_SCAN_LIMIT` documents, streamed: only each document's term counts are
    kept); and the winners, by ``_id``. ``kwargs``: ``session``, ``max_time_ms``.
    """
    if not isinstance(query_text, str) or not query_text.strip():
        raise ValueError("query_text must be a non-empty string")
    paths = _checked_paths(text_paths)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CANDIDATES:
        raise ValueError(f"limit must be an integer from 1 to {MAX_CANDIDATES}, got {limit!r}")
    if filter is not None and not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
    if projection is not None and not isinstance(projection, Mapping):
        raise TypeError(f"projection must be a mapping, not {type(projection).__name__}")
    unknown = set(kwargs) - {"session", "max_time_ms"}
    if unknown:
        raise TypeError(f"keyword_search() got unexpected keyword argument(s): {sorted(unknown)}")
    terms = query_terms(query_text)
    if not terms:
        return []
    read_kwargs = dict(kwargs)
    if "max_time_ms" in read_kwargs:
        read_kwargs["maxTimeMS"] = read_kwargs.pop("max_time_ms")

    # 1. How many documents the filter selects, and their mean text length.
    group = {"_id": None, "n": {"$sum": 1}, "chars": {"$sum": {"$strLenCP": "$t"}}}
    stats_pipeline = [
        {"$match": dict(filter or {})},
        {"$project": {"t": _text_expression(paths)}},
        {"$group": group},
    ]
    stats = next(iter(collection.aggregate(stats_pipeline, **read_kwargs)), None)
    if not stats or not stats.get("n"):
        return []
    n = int(stats["n"])
    average = max(float(stats.get("chars") or 0) / n, 1.0)

    # 2. The term counts of the documents containing a term (streamed, bounded).
    contains = {
        "$or": [
            {path: {"$regex": term_pattern(t), "$options": "i"}} for t in terms for path in paths
        ]
    }
    wanted = set(terms)
    rows: list[tuple[bytes, Any, int, dict[str, int]]] = []
    scanned = 0
    shape = {"_id": 1, "app_id": 1, **dict.fromkeys(paths, 1)}
    scan_kwargs = {k: v for k, v in kwargs.items() if k == "session"}
    if "max_time_ms" in kwargs:
        scan_kwargs["max_time_ms"] = kwargs["max_time_ms"]
    with collection.scan(_scoped_filter(filter, contains), shape, **scan_kwargs) as cursor:
        for doc in cursor:
            scanned += 1
            text = " ".join(_string_at(doc, path) for path in paths)
            counts: dict[str, int] = {}
            for word in _WORD.findall(text.lower()):
                if word in wanted:
                    counts[word] = counts.get(word, 0) + 1
            if counts:
                rows.append((_identity(doc), doc.get("_id"), len(text), counts))
            if scanned >= KEYWORD_SCAN_LIMIT:
                break
    if not rows:
        return []
    df = {t: sum(1 for row in rows if t in row[3]) for t in terms}
    if scanned >= KEYWORD_SCAN_LIMIT:
        # More documents contain a term than were read: scale the frequencies up to all.
        total = collection.count_documents(_scoped_filter(filter, contains), **read_kwargs)
        log.info(
            "keyword search on %s: %d documents contain a query term; the first %d were "
            "scored (use Atlas Search for full-text search at this scale)",
            collection.name,
            total,
            scanned,
        )
        df = {t: min(n, round(c * total / scanned)) for t, c in df.items()}
    idf = {t: _idf(n, c) for t, c in df.items() if c}
    scored = []
    for order, (key, ident, length, counts) in enumerate(rows):
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / average)
        score = sum(idf[t] * c * (BM25_K1 + 1) / (c + norm) for t, c in counts.items())
        scored.append((-score, order, key, ident))
    best = heapq.nsmallest(limit, scored)

    # 3. The winners, whole (or as projected).
    fetch = _with_identity(projection)
    by_key = {}
    winners = _scoped_filter(filter, {"_id": {"$in": [b[3] for b in best]}})
    for doc in collection.find(winners, fetch, **read_kwargs):
        by_key[_identity(doc)] = doc
    results = []
    for negative, _, key, _ in best:
        doc = by_key.get(key)
        if doc is None:  # deleted since it was read
            continue
        doc[score_field] = -negative
        results.append(_restore_identity(doc, projection, score_field))
    return results


def _string_at(document: Mapping[str, Any], path: str) -> str:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    return value if isinstance(value, str) else ""


def _idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _score_and_projection(
    source: str | None, score_field: str, projection: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Stages that move the score into ``score_field`` and apply the caller's projection."""
    stages: list[dict[str, Any]] = []
    if source is not None:
        stages.append({"$set": {score_field: f"${source}"}})
        stages.append({"$unset": source})
    if projection:
        spec = dict(projection)
        if any(v not in (0, False) for k, v in spec.items() if k != "_id"):
            spec[score_field] = 1
        stages.append({"$project": spec})
    return stages


# --- fusion ------------------------------------------------------------------------------------


def _identity(doc: Mapping[str, Any]) -> bytes:
    return encode({"a": doc.get("app_id"), "i": doc.get("_id")})


def reciprocal_rank_fusion(
    ranked: Mapping[str, Sequence[Mapping[str, Any]]],
    weights: Mapping[str, float] | None = None,
    *,
    k: int = RRF_K,
) -> list[tuple[float, dict[str, Any], dict[str, int]]]:
    """Fuse ranked lists (name -> documents, best first): ``(score, document, ranks)`` best
    first, ``score = sum(weight / (k + rank))`` with ranks from 1, as ``$rankFusion``.

    A document is the same across lists when its ``app_id`` and ``_id`` are; its copy from
    the first list it appears in is kept. Ties keep the order of the lists and ranks.
    """
    weights = weights or {}
    fused: dict[bytes, list[Any]] = {}
    order: list[bytes] = []
    for name, docs in ranked.items():
        weight = float(weights.get(name, 1.0))
        for rank, doc in enumerate(docs, start=1):
            key = _identity(doc)
            entry = fused.get(key)
            if entry is None:
                entry = fused[key] = [0.0, dict(doc), {}]
                order.append(key)
            if name not in entry[2]:
                entry[0] += weight / (k + rank)
                entry[2][name] = rank
    position = {key: i for i, key in enumerate(order)}
    keys = sorted(order, key=lambda key: (-fused[key][0], position[key]))
    return [(fused[key][0], fused[key][1], fused[key][2]) for key in keys]


# --- the indexes declared for a collection -------------------------------------------------------


@dataclass(frozen=True)
class HybridIndexes:
    """The vector and text indexes of a collection, from its manifest."""

    vector_index: str | None
    text_index: str | None
    text_paths: tuple[str, ...] | None


def declared_hybrid(manifest: Mapping[str, Any] | None, collection: str) -> HybridIndexes:
    """The manifest's ``hybrid`` index on ``collection`` (else a ``vectorSearch`` plus a
    ``search`` index), and the string fields its text index maps."""
    specs = [
        s
        for s in ((manifest or {}).get("managed_indexes") or {}).get(collection) or []
        if isinstance(s, Mapping)
    ]
    vector = text = None
    definition: Mapping[str, Any] = {}
    for spec in specs:
        if spec.get("type") == "hybrid" and isinstance(spec.get("hybrid"), Mapping):
            vector = (spec["hybrid"].get("vector_index") or {}).get("name")
            part = spec["hybrid"].get("text_index") or {}
            text, definition = part.get("name"), part.get("definition") or {}
            break
    else:
        for spec in specs:
            if spec.get("type") == "search" and text is None:
                text, definition = spec.get("name"), spec.get("definition") or {}
        fields = declared_vector_fields(manifest, collection)
        vector = fields[0].index if fields else None
    return HybridIndexes(vector, text, _string_fields(definition))


def _string_fields(definition: Mapping[str, Any]) -> tuple[str, ...] | None:
    fields = (definition.get("mappings") or {}).get("fields") or {}
    found = []
    for name, mapping in fields.items() if isinstance(fields, Mapping) else ():
        kinds = mapping if isinstance(mapping, list) else [mapping]
        if name != "app_id" and any(
            isinstance(m, Mapping) and m.get("type") in ("string", "autocomplete") for m in kinds
        ):
            found.append(name)
    return tuple(found) or None


def server_supports_rank_fusion(engine: Any) -> bool:
    """Whether ``engine``'s server runs ``$rankFusion`` (probed once per engine, like
    ``$vectorSearch``; see :mod:`mdb_sync.ai.server_stages`)."""
    stage = {"input": {"pipelines": {"probe": [{"$sort": {"_id": 1}}]}}}
    return server_supports_stage(engine, {"$rankFusion": stage}, "fusing here")


# --- the entry point ---------------------------------------------------------------------------


def hybrid_search(
    collection: Any,
    query_text: str,
    *,
    query_vector: Any = None,
    limit: int = 10,
    candidates: int | None = None,
    num_candidates: int | None = None,
    filter: Mapping[str, Any] | None = None,
    path: str | None = None,
    text_paths: Sequence[str] | str | None = None,
    index: str | None = None,
    text_index: str | None = None,
    weights: Mapping[str, float] | None = None,
    method: str = "auto",
    projection: Mapping[str, Any] | None = None,
    include_vector: bool = False,
    score_field: str = "score",
    embedding_service: Any = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """The ``limit`` documents of ``collection`` best matching ``query_text`` by keywords and
    meaning together (reciprocal rank fusion), best first, each with its fused ``score``.

    :param query_text: the query; its words are the keyword side, its embedding (with the
        app's embedding service, or ``embedding_service``) the vector side.
    :param query_vector: the query's vector, if already computed.
    :param candidates: results each side contributes (default ``4 * limit``, at least 40,
        at most 1,000).
    :param num_candidates: ``$vectorSearch``'s candidate pool (see ``vector_search``).
    :param filter: a query both sides apply (scoped and guarded like any ``find`` filter).
    :param path: the vector field (default: the declared index's, else ``embedding``).
    :param text_paths: the string fields of the keyword side (default: those the declared
        search index maps, else ``["text"]``, where ``process_and_store`` keeps chunks).
    :param index: / :param text_index: the vector and search index names (default: the
        manifest's ``hybrid`` index, else its ``vectorSearch`` and ``search`` indexes).
    :param weights: ``{"vector": w, "text": w}``, each >= 0 (default 1 and 1).
    :param method: ``auto``; ``exact`` (both sides computed without search indexes); or
        ``server`` (one ``$rankFusion`` aggregation; fails rather than falls back).
    :param projection: fields of the results, as in ``find``.
    :param include_vector: keep the vector field in the results.
    :param score_field: the name of the fused score in the results.
    :param session: a session of the scoped database, forwarded; ``max_time_ms`` too.
    """
    if not isinstance(query_text, str) or not query_text.strip():
        raise ValueError("query_text must be a non-empty string")
    unknown = set(kwargs) - {"session", "max_time_ms"}
    if unknown:
        raise TypeError(f"hybrid_search() got unexpected keyword argument(s): {sorted(unknown)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CANDIDATES:
        raise ValueError(f"limit must be an integer from 1 to {MAX_CANDIDATES}, got {limit!r}")
    if candidates is None:
        candidates = min(max(4 * limit, 40), MAX_CANDIDATES)
    if (
        isinstance(candidates, bool)
        or not isinstance(candidates, int)
        or not limit <= candidates <= MAX_CANDIDATES
    ):
        raise ValueError(
            f"candidates must be an integer from limit ({limit}) to {MAX_CANDIDATES}, "
            f"got {candidates!r}"
        )
    weights = _checked_weights(weights)
    if filter is not None and not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
    if projection is not None and not isinstance(projection, Mapping):
        raise TypeError(f"projection must be a mapping, not {type(projection).__name__}")
    if not isinstance(score_field, str) or not score_field or score_field.startswith("$"):
        raise ValueError(f"score_field must be a field name, got {score_field!r}")

    engine = engine_of(collection)
    app = getattr(getattr(collection, "database", None), "app_slug", None)
    manifest = engine.get_app(app) if engine is not None and app else None
    declared = declared_hybrid(manifest, collection.name)
    index = index or declared.vector_index
    text_index = text_index or declared.text_index
    paths = _checked_paths(text_paths or declared.text_paths or DEFAULT_TEXT_PATHS)
    if query_vector is None:
        query_vector = _embed(query_text, engine, app, embedding_service)
    vector_args = dict(
        path=path,
        index=index,
        filter=filter,
        num_candidates=num_candidates,
        include_vector=include_vector,
        **kwargs,
    )

    fuse_on_server = method == "server" or (
        method == "auto" and _fusion_ready(engine, collection, index, text_index)
    )
    if fuse_on_server:
        return _rank_fusion(
            collection,
            query_text,
            query_vector,
            limit=limit,
            candidates=candidates,
            paths=paths,
            text_index=text_index,
            weights=weights,
            projection=projection,
            score_field=score_field,
            **vector_args,
        )

    vector_method = "exact" if method == "exact" else "auto"
    hidden = None if include_vector else _vector_path(manifest, collection, index, path)
    ranked: dict[str, list[dict[str, Any]]] = {}
    if weights["vector"] > 0:
        ranked["vector"] = vector_search(
            collection,
            query_vector,
            limit=candidates,
            method=vector_method,
            projection=_with_identity(projection),
            score_field=SIDE_SCORE,
            **vector_args,
        )
    if weights["text"] > 0:
        use_search = (
            method == "auto"
            and text_index is not None
            and server_supports_vector_search(engine)
            and search_index_ready(engine, collection, text_index)
        )
        if use_search and text_index is not None:
            ranked["text"] = _server_text_search(
                collection,
                query_text,
                text_index=text_index,
                paths=paths,
                limit=candidates,
                filter=filter,
                projection=projection,
                vector_path=hidden,
                **kwargs,
            )
        else:
            ranked["text"] = keyword_search(
                collection,
                query_text,
                text_paths=paths,
                limit=candidates,
                filter=filter,
                projection=_text_projection(projection, hidden),
                score_field=SIDE_SCORE,
                **kwargs,
            )
    results = []
    for score, doc, _ in reciprocal_rank_fusion(ranked, weights)[:limit]:
        doc.pop(SIDE_SCORE, None)
        doc[score_field] = score
        results.append(_restore_identity(doc, projection, score_field))
    return results


def _checked_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    out = {"vector": 1.0, "text": 1.0}
    if weights is None:
        return out
    if not isinstance(weights, Mapping):
        raise TypeError("weights must be a mapping like {'vector': 1, 'text': 1}")
    for key, value in weights.items():
        if key not in SIDES:
            raise ValueError(f"weights: unknown side {key!r} (use 'vector' and 'text')")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"weights.{key} must be a number >= 0")
        if not math.isfinite(value):
            raise ValueError(f"weights.{key} must be finite")
        out[key] = float(value)
    if not any(out.values()):
        raise ValueError("weights: at least one side must weigh more than 0")
    return out


def _embed(text: str, engine: Any, app: str | None, embedder: Any) -> Any:
    if embedder is None:
        if engine is None or app is None:
            raise ValueError("hybrid_search needs embedding_service= (or query_vector=) here")
        embedder = engine.get_embedding_service(app)
    if hasattr(embedder, "embed_query"):
        return embedder.embed_query(text)
    return embedder.embed([text])[0]


def _vector_path(manifest: Any, collection: Any, index: str | None, path: str | None = None) -> str:
    if path:
        return path
    for field in declared_vector_fields(manifest, collection.name):
        if index is None or field.index == index:
            return field.path
    return "embedding"


def _with_identity(projection: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``projection`` keeping ``_id`` and ``app_id``, which identify a document across the
    two lists (removed again from the fused results if the caller excluded them)."""
    if projection is None:
        return None
    spec = dict(projection)
    inclusion = any(v not in (0, False) for k, v in spec.items() if k != "_id")
    spec.pop("_id", None)
    if inclusion:
        spec["app_id"] = 1
    else:
        spec.pop("app_id", None)
    return spec or None


def _text_projection(
    projection: Mapping[str, Any] | None, vector_path: str | None
) -> dict[str, Any] | None:
    spec = _with_identity(projection)
    if vector_path is None:
        return spec
    if spec is None:
        return {vector_path: 0}
    if any(v not in (0, False) for k, v in spec.items() if k != "_id"):
        spec.pop(vector_path, None)  # an inclusion projection leaves it out unless named
        return spec
    spec[vector_path] = 0
    return spec


def _restore_identity(
    doc: dict[str, Any], projection: Mapping[str, Any] | None, score_field: str
) -> dict[str, Any]:
    if projection is None:
        return doc
    if projection.get("_id") in (0, False):
        doc.pop("_id", None)
    inclusion = any(v not in (0, False) for k, v in projection.items() if k != "_id")
    if (inclusion and "app_id" not in projection) or projection.get("app_id") in (0, False):
        doc.pop("app_id", None)
    return doc


def _fusion_ready(engine: Any, collection: Any, index: str | None, text_index: str | None) -> bool:
    scopes = getattr(collection.database, "read_scopes", ())
    return (
        len(scopes) <= 1  # $rankFusion reads one collection: several scopes fuse here
        and index is not None
        and text_index is not None
        and callable(getattr(type(collection), "aggregate", None))
        and server_supports_vector_search(engine)
        and server_supports_rank_fusion(engine)
        and search_index_ready(engine, collection, index)
        and search_index_ready(engine, collection, text_index)
    )


def rank_fusion_pipeline(
    query_text: str,
    query_vector: Sequence[float],
    *,
    index: str,
    text_index: str,
    path: str,
    paths: Sequence[str],
    limit: int,
    candidates: int,
    num_candidates: int,
    filter: Mapping[str, Any] | None,
    weights: Mapping[str, float],
    projection: Mapping[str, Any] | None,
    include_vector: bool,
    score_field: str,
) -> list[dict[str, Any]]:
    """The aggregation ``hybrid_search`` sends where the server has ``$rankFusion`` (before
    the sandbox scopes it: the scoped collection adds ``app_id`` inside both inputs)."""
    vector_stage: dict[str, Any] = {
        "index": index,
        "path": path,
        "queryVector": [float(x) for x in query_vector],
        "numCandidates": num_candidates,
        "limit": candidates,
    }
    if filter:
        vector_stage["filter"] = dict(filter)
    text_pipeline: list[dict[str, Any]] = [
        {"$search": {"index": text_index, "text": {"query": query_text, "path": list(paths)}}}
    ]
    if filter:
        text_pipeline.append({"$match": dict(filter)})
    text_pipeline.append({"$limit": candidates})
    pipelines = {"vector": [{"$vectorSearch": vector_stage}], "text": text_pipeline}
    pipelines = {k: v for k, v in pipelines.items() if weights.get(k, 1.0) > 0}
    pipeline: list[dict[str, Any]] = [
        {
            "$rankFusion": {
                "input": {"pipelines": pipelines},
                "combination": {"weights": {k: weights.get(k, 1.0) for k in pipelines}},
            }
        },
        {"$limit": limit},
        {"$set": {score_field: {"$meta": "score"}}},
    ]
    if projection is not None:
        pipeline.extend(_score_and_projection(None, score_field, projection))
    elif not include_vector:
        pipeline.append({"$project": {path: 0}})
    return pipeline


def _rank_fusion(
    collection: Any,
    query_text: str,
    query_vector: Any,
    *,
    limit: int,
    candidates: int,
    paths: Sequence[str],
    text_index: str | None,
    weights: Mapping[str, float],
    projection: Mapping[str, Any] | None,
    score_field: str,
    path: str | None,
    index: str | None,
    filter: Mapping[str, Any] | None,
    num_candidates: int | None,
    include_vector: bool,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    if index is None or text_index is None:
        raise QueryValidationError(
            "$rankFusion needs a vector index and a search index: declare a hybrid index in "
            "the manifest or pass index= and text_index="
        )

    engine = engine_of(collection)
    app = getattr(getattr(collection, "database", None), "app_slug", None)
    manifest = engine.get_app(app) if engine is not None and app else None
    vector = as_vector(query_vector)
    if num_candidates is None:
        num_candidates = min(max(candidates * 20, 100), MAX_NUM_CANDIDATES)
    pipeline = rank_fusion_pipeline(
        query_text,
        vector.tolist(),
        index=index,
        text_index=text_index,
        path=checked_path(_vector_path(manifest, collection, index, path)),
        paths=paths,
        limit=limit,
        candidates=candidates,
        num_candidates=num_candidates,
        filter=filter,
        weights=weights,
        projection=projection,
        include_vector=include_vector,
        score_field=score_field,
    )
    if "max_time_ms" in kwargs:
        kwargs["maxTimeMS"] = kwargs.pop("max_time_ms")
    return list(collection.aggregate(pipeline, **kwargs))


def _server_text_search(
    collection: Any,
    query_text: str,
    *,
    text_index: str,
    paths: Sequence[str],
    limit: int,
    filter: Mapping[str, Any] | None,
    projection: Mapping[str, Any] | None,
    vector_path: str | None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """The keyword side on Atlas Search (``$search``, scoped by the pipeline rewriter)."""
    pipeline: list[dict[str, Any]] = [
        {"$search": {"index": text_index, "text": {"query": query_text, "path": list(paths)}}}
    ]
    if filter:
        pipeline.append({"$match": dict(filter)})
    pipeline.append({"$limit": limit})
    pipeline.append({"$set": {SIDE_SCORE: {"$meta": "searchScore"}}})
    spec = _text_projection(projection, vector_path)
    if spec:
        if any(v not in (0, False) for k, v in spec.items() if k != "_id"):
            spec[SIDE_SCORE] = 1
        pipeline.append({"$project": spec})
    if "max_time_ms" in kwargs:
        kwargs["maxTimeMS"] = kwargs.pop("max_time_ms")
    return list(collection.aggregate(pipeline, **kwargs))
