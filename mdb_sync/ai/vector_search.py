"""Vector search on a scoped collection that works on every server.

Where the server has ``$vectorSearch`` (Atlas, or a deployment with a search node) and the
collection has a vector index, the search runs there, through the scoped collection's
``aggregate`` (the sandbox adds the ``app_id`` filter). Elsewhere — the embedded server, a
plain mongod — it runs an exact k-nearest-neighbour search: the candidates' vectors are
read through the scoped collection in one streaming pass (so another app's vectors are never read),
scored with numpy a page at a time keeping only the best ``limit``, and the winners are
fetched whole. Both paths return the same shape: the documents (without the vector unless
asked) with a ``score`` field, best first.

Scores follow Atlas's normalisation so thresholds carry over between the two paths:
cosine and dotProduct give ``(1 + similarity) / 2``, euclidean gives ``1 / (1 + distance)``.
The similarity and the expected number of dimensions come from the vector index declared in
the app's manifest (``managed_indexes.<collection>[].definition.fields[]``, type
``vectorSearch`` or ``vector``); a query vector of the wrong size is refused.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from bson import Binary
from pymongo.errors import PyMongoError

from ..context import live_engines
from ..exceptions import QueryValidationError
from ..scoping.limits import QueryLimits
from ..scoping.names import physical_name
from .blas import limit_blas_threads
from .server_stages import server_supports_stage

log = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "dotProduct", "euclidean")
VECTOR_INDEX_TYPES = ("vectorSearch", "vector")
#: Atlas's bound on ``numCandidates``.
MAX_NUM_CANDIDATES = 10_000
#: Documents read per page by the exact search.
PAGE_SIZE = 10_000
METHODS = ("auto", "exact", "vector_search")

_index_lock = threading.Lock()


@dataclass(frozen=True)
class VectorField:
    """A vector field of a declared vector index."""

    index: str | None
    path: str
    dimensions: int | None
    similarity: str


# --- declared indexes and server support ------------------------------------------------------


def engine_of(collection: Any) -> Any:
    """The engine behind a scoped collection (None for anything else): the live engine of
    this process that recognises the collection's database as its own (a scoped database
    itself hands out no path to its engine)."""

    database = getattr(collection, "database", None)
    if database is None:
        return None
    for engine in live_engines():
        if engine.owns(database):
            return engine
    return None


_engine_of = engine_of


def _limits_of(collection: Any) -> QueryLimits | None:
    """The resource limits of a scoped collection's database (None for anything else)."""
    limits = getattr(getattr(collection, "database", None), "limits", None)
    return limits if isinstance(limits, QueryLimits) else None


def declared_vector_fields(
    manifest: Mapping[str, Any] | None, collection: str
) -> list[VectorField]:
    """The vector fields of the vector indexes ``manifest`` declares on ``collection`` (a
    ``hybrid`` index's ``vector_index`` included)."""
    if not manifest:
        return []
    found = []
    for spec in (manifest.get("managed_indexes") or {}).get(collection) or []:
        if not isinstance(spec, Mapping):
            continue
        if spec.get("type") == "hybrid" and isinstance(spec.get("hybrid"), Mapping):
            spec = spec["hybrid"].get("vector_index") or {}
        elif spec.get("type") not in VECTOR_INDEX_TYPES:
            continue
        definition = spec.get("definition") or {}
        for field in definition.get("fields") or []:
            if isinstance(field, Mapping) and field.get("type", "vector") == "vector":
                similarity = field.get("similarity", "cosine")
                dims = field.get("numDimensions")
                found.append(
                    VectorField(
                        index=spec.get("name"),
                        path=str(field.get("path", "embedding")),
                        dimensions=int(dims) if isinstance(dims, int) else None,
                        similarity=similarity if similarity in SIMILARITIES else "cosine",
                    )
                )
    return found


def server_supports_vector_search(engine: Any) -> bool:
    """Whether ``engine``'s server runs ``$vectorSearch`` (probed once per engine; see
    :mod:`mdb_sync.ai.server_stages`)."""
    stage = {
        "index": "mdb_probe",
        "path": "v",
        "queryVector": [0.0],
        "numCandidates": 1,
        "limit": 1,
    }
    return server_supports_stage(engine, {"$vectorSearch": stage}, "exact search is used")


#: How long a missing or building search index is remembered before asking again.
INDEX_RECHECK_SECONDS = 30.0
#: Search-index states remembered per engine (least recently used dropped first): bounded
#: whatever collection and index names searches bring.
INDEX_STATE_CACHE_SIZE = 1024
_index_state: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, str], tuple[bool, float]]] = (
    weakref.WeakKeyDictionary()
)


def index_state_cache_info(engine: Any) -> dict[str, int]:
    """``{"size", "limit"}`` of the search-index states ``engine``'s process remembers."""
    with _index_lock:
        return {"size": len(_index_state.get(engine) or ()), "limit": INDEX_STATE_CACHE_SIZE}


def search_index_ready(engine: Any, collection: Any, index: str) -> bool:
    """Whether the search index ``index`` of ``collection`` exists and is queryable.

    ``$vectorSearch`` on a missing (or still building) index answers an empty result rather
    than an error; checking first lets the search fall back to the exact method instead of
    silently finding nothing. A ready index is remembered; a missing one is asked about
    again after :data:`INDEX_RECHECK_SECONDS`.
    """

    physical = physical_name(collection.database.write_scope, collection.name)
    key = (physical, index)
    with _index_lock:
        states = _index_state.setdefault(engine, OrderedDict())
        known = states.get(key)
        if known is not None:
            states.move_to_end(key)
    now = time.monotonic()
    if known is not None and (known[0] or now - known[1] < INDEX_RECHECK_SECONDS):
        return known[0]
    try:
        specs = list(engine.storage.collection(physical).list_search_indexes(index))
    except PyMongoError:
        specs = []
    ready = any(spec.get("queryable") or spec.get("status") == "READY" for spec in specs)
    if not ready:
        log.warning(
            "vector index %r on %s is %s: using the exact search",
            index,
            physical,
            "still building" if specs else "missing",
        )
    with _index_lock:
        states[key] = (ready, now)
        states.move_to_end(key)
        while len(states) > INDEX_STATE_CACHE_SIZE:
            states.popitem(last=False)
    return ready


# --- inputs ------------------------------------------------------------------------------------


def as_vector(value: Any, what: str = "query_vector") -> np.ndarray:
    """``value`` (a sequence of numbers, a numpy array or a BSON vector) as float64."""
    if isinstance(value, Binary) and value.subtype == 9:
        array = _decode_binary(value)
    elif isinstance(value, (str, bytes, Mapping)) or value is None:
        raise TypeError(f"{what} must be a sequence of numbers, not {type(value).__name__}")
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} must be a sequence of numbers") from exc
    if array is None or array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty one-dimensional sequence of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def _decode_binary(value: Binary) -> np.ndarray | None:
    data = bytes(value)
    if len(data) < 2:
        return None
    dtype, padding, payload = data[0], data[1], data[2:]
    if dtype == 0x27:  # float32
        return np.frombuffer(payload, dtype="<f4").astype(np.float64)
    if dtype == 0x03:  # int8
        return np.frombuffer(payload, dtype=np.int8).astype(np.float64)
    if dtype == 0x10:  # packed bits
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
        return bits[: len(bits) - padding].astype(np.float64)
    return None


def checked_path(path: Any) -> str:
    """``path`` if it is a plain field path (no ``$``, no empty component, no NUL)."""
    if not isinstance(path, str) or not path or path.startswith("$") or "\x00" in path:
        raise QueryValidationError(f"path must be a field name, got {path!r}")
    if any(not part for part in path.split(".")):
        raise QueryValidationError(f"path {path!r} has an empty component")
    return path


_checked_path = checked_path


def _get_path(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# --- scoring -----------------------------------------------------------------------------------


def normalized_scores(matrix: np.ndarray, query: np.ndarray, similarity: str) -> np.ndarray:
    """Scores of the rows of ``matrix`` against ``query``, normalised as Atlas does."""
    if similarity == "euclidean":
        distances = np.sqrt(np.maximum(((matrix - query) ** 2).sum(axis=1), 0.0))
        similarities: np.ndarray = 1.0 / (1.0 + distances)
        return similarities
    dots = matrix @ query
    if similarity == "cosine":
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        with np.errstate(divide="ignore", invalid="ignore"):
            dots = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    scores: np.ndarray = (1.0 + dots) / 2.0
    return scores


class _TopK:
    """The best ``k`` (score, item) pairs seen so far; ties keep the earlier-read item."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = np.zeros(0, dtype=np.float64)
        self.ids: list[Any] = []

    def add(self, scores: np.ndarray, ids: list[Any]) -> None:
        merged = np.concatenate([self.scores, scores])
        all_ids = self.ids + ids
        if merged.size > self.k:
            keep = np.argpartition(-merged, self.k - 1)[: self.k]
            keep.sort()  # back to reading order, so the stable sort below breaks ties by it
            merged = merged[keep]
            all_ids = [all_ids[i] for i in keep]
        order = np.argsort(-merged, kind="stable")
        self.scores = merged[order]
        self.ids = [all_ids[i] for i in order]


# --- the exact search --------------------------------------------------------------------------


def _pages(
    collection: Any,
    filter: Mapping[str, Any] | None,
    projection: dict[str, Any] | None,
    page: int,
    **find_kwargs: Any,
) -> Any:
    """The matching documents in lists of ``page``, in one streaming pass over the scoped
    collection's ``_scan`` cursor (scoped like any read; not bounded by ``max_result_docs``,
    since only ``page`` documents are held at a time)."""
    with collection.scan(filter, projection, batch_size=page, **find_kwargs) as cursor:
        docs: list[dict[str, Any]] = []
        for doc in cursor:
            docs.append(doc)
            if len(docs) == page:
                yield docs
                docs = []
        if docs:
            yield docs


def _scan_projection(projection: Mapping[str, Any] | None, path: str) -> dict[str, Any] | None:
    """The projection that reads what the results need plus the vector."""
    if projection is None:
        return None
    spec = dict(projection)
    if any(v not in (0, False) for k, v in spec.items() if k != "_id"):  # inclusion
        spec[path] = 1
    else:
        spec.pop(path, None)
    return spec or None


def _strip(doc: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def exact_search(
    collection: Any,
    query: np.ndarray,
    *,
    path: str,
    similarity: str,
    limit: int,
    filter: Mapping[str, Any] | None,
    projection: Mapping[str, Any] | None,
    include_vector: bool,
    score_field: str,
    page_size: int | None = None,
    find_kwargs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Exact k-NN over the documents of ``collection`` matching ``filter``.

    The documents are read once, a page at a time, and only the best ``limit`` are kept:
    one pass, no second round trip, and a consistent answer (no winner deleted between
    scoring and fetching). Documents without a vector of the query's size are skipped.
    """
    limits = _limits_of(collection)
    page = page_size or min(PAGE_SIZE, getattr(limits, "max_result_docs", PAGE_SIZE))
    best = _TopK(limit)
    dims = query.size
    skipped = 0
    scan = _scan_projection(projection, path)
    for docs in _pages(collection, filter, scan, page, **dict(find_kwargs or {})):
        rows: list[np.ndarray] = []
        kept: list[Any] = []
        for doc in docs:
            value = _get_path(doc, path)
            try:
                vector = as_vector(value, path) if value is not None else None
            except (TypeError, ValueError):
                vector = None
            if vector is None or vector.size != dims:
                skipped += 1
                continue
            rows.append(vector)
            kept.append(doc)
        if rows:
            with limit_blas_threads():
                scores = normalized_scores(np.vstack(rows), query, similarity)
            best.add(scores, kept)
    if skipped:
        log.debug("vector search skipped %d documents without a %d-d %r", skipped, dims, path)
    keep_vector = include_vector or (
        projection is not None and projection.get(path) not in (None, 0, False)
    )
    results = []
    for doc, score in zip(best.ids, best.scores.tolist(), strict=True):
        if not keep_vector:
            _strip(doc, path)
        doc[score_field] = score
        results.append(doc)
    return results


# --- the entry point ---------------------------------------------------------------------------


def vector_search(
    collection: Any,
    query_vector: Any = None,
    *,
    query_text: str | None = None,
    path: str | None = None,
    limit: int = 10,
    num_candidates: int | None = None,
    filter: Any = None,
    index: str | None = None,
    similarity: str | None = None,
    method: str = "auto",
    exact: bool = False,
    projection: Mapping[str, Any] | None = None,
    include_vector: bool = False,
    min_score: float | None = None,
    score_field: str = "score",
    embedding_service: Any = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """The ``limit`` documents of ``collection`` nearest to the query, best first.

    :param query_vector: the query (a sequence of numbers, numpy array or BSON vector).
    :param query_text: instead of a vector, a text embedded with the app's embedding service
        (or ``embedding_service``).
    :param path: the vector field (default: the declared index's, else ``embedding``).
    :param limit: how many documents to return (1 to 10,000).
    :param num_candidates: ``$vectorSearch``'s candidate pool (default ``20 * limit``, at
        most 10,000); the exact search considers every document anyway.
    :param filter: a query on the documents (scoped and guarded like any ``find`` filter).
        Chunks stored by ``process_and_store`` keep their metadata under ``metadata``: filter
        on ``{"metadata.lang": "en"}``. A filter that finds nothing because its field exists
        only as ``metadata.<field>`` raises :class:`QueryValidationError` naming it.
    :param index: the vector index name (default: the declared one).
    :param similarity: cosine, dotProduct or euclidean (default: the declared index's, else
        cosine).
    :param method: ``auto`` (``$vectorSearch`` where available, else exact), ``exact`` or
        ``vector_search`` (fail rather than fall back).
    :param exact: ask ``$vectorSearch`` for an exact (ENN) search.
    :param projection: fields of the results, as in ``find``.
    :param include_vector: keep the vector field in the results.
    :param min_score: drop results scoring below this.
    :param score_field: the name of the score field in the results.
    :param session: a session of the scoped database, forwarded.
    """
    unknown = set(kwargs) - {"session", "max_time_ms"}
    if unknown:
        raise TypeError(f"vector_search() got unexpected keyword argument(s): {sorted(unknown)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    limits = _limits_of(collection)
    max_docs = getattr(limits, "max_result_docs", MAX_NUM_CANDIDATES)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_docs:
        raise ValueError(f"limit must be an integer from 1 to {max_docs}, got {limit!r}")
    if num_candidates is None:
        num_candidates = min(max(limit * 20, 100), MAX_NUM_CANDIDATES)
    if (
        isinstance(num_candidates, bool)
        or not isinstance(num_candidates, int)
        or not limit <= num_candidates <= MAX_NUM_CANDIDATES
    ):
        raise ValueError(
            f"num_candidates must be an integer from limit ({limit}) to {MAX_NUM_CANDIDATES}, "
            f"got {num_candidates!r}"
        )
    if filter is not None and not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
    if projection is not None and not isinstance(projection, Mapping):
        raise TypeError(f"projection must be a mapping, not {type(projection).__name__}")
    if not isinstance(score_field, str) or not score_field or score_field.startswith("$"):
        raise ValueError(f"score_field must be a field name, got {score_field!r}")
    if min_score is not None and not isinstance(min_score, (int, float)):
        raise TypeError("min_score must be a number")

    engine = _engine_of(collection)
    app = getattr(getattr(collection, "database", None), "app_slug", None)
    manifest = engine.get_app(app) if engine is not None and app else None
    field = _choose_field(declared_vector_fields(manifest, collection.name), path, index)
    path = _checked_path(path or (field.path if field else "embedding"))
    index = index or (field.index if field else None)
    if similarity is None:
        similarity = field.similarity if field else "cosine"
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}")

    query = _query_vector(query_vector, query_text, engine, app, embedding_service)
    if field is not None and field.dimensions is not None and query.size != field.dimensions:
        raise QueryValidationError(
            f"the query vector has {query.size} dimensions but the vector index "
            f"{field.index or ''!s} on {collection.name}.{path} declares {field.dimensions}",
            context={"collection": collection.name, "path": path},
        )

    use_server = method == "vector_search" or (
        method == "auto"
        and index is not None
        and callable(getattr(type(collection), "aggregate", None))
        and server_supports_vector_search(engine)
        and search_index_ready(engine, collection, index)
    )
    if use_server:
        results = _server_search(
            collection,
            query,
            path=path,
            index=index,
            limit=limit,
            num_candidates=num_candidates,
            filter=filter,
            exact=exact,
            projection=projection,
            include_vector=include_vector,
            score_field=score_field,
            **kwargs,
        )
    else:
        results = exact_search(
            collection,
            query,
            path=path,
            similarity=similarity,
            limit=limit,
            filter=filter,
            projection=projection,
            include_vector=include_vector,
            score_field=score_field,
            find_kwargs=kwargs,
        )
    if not results and filter:
        check_filter_fields(collection, filter, kwargs.get("session"))
    if min_score is not None:
        results = [r for r in results if r.get(score_field, 0.0) >= min_score]
    return results


def _filter_fields(filter: Mapping[str, Any]) -> list[str]:
    """The field names a filter tests (top level and inside ``$and``/``$or``/``$nor``)."""
    fields: list[str] = []
    for key, value in filter.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, list):
            for clause in value:
                if isinstance(clause, Mapping):
                    fields.extend(_filter_fields(clause))
        elif isinstance(key, str) and not key.startswith("$"):
            fields.append(key)
    return list(dict.fromkeys(fields))


def check_filter_fields(collection: Any, filter: Mapping[str, Any], session: Any = None) -> None:
    """Refuse a filter that found nothing because it names a field the documents keep under
    ``metadata``: ``process_and_store`` stores a chunk's metadata as ``metadata.<key>``, so
    ``filter={"lang": "en"}`` matches no chunk and would silently return ``[]``.

    Runs only after a search found nothing (two cheap ``find_one`` per field, through the
    scoped collection). A field that exists nowhere is not an error — a filter on a field no
    document has *yet* is a legitimate query.
    """
    for field in _filter_fields(filter):
        if field.split(".")[0] in ("_id", "app_id", "metadata"):
            continue
        if collection.find_one({field: {"$exists": True}}, {"_id": 1}, session=session):
            continue
        nested = f"metadata.{field}"
        if collection.find_one({nested: {"$exists": True}}, {"_id": 1}, session=session):
            raise QueryValidationError(
                f"vector_search filter names {field!r}, which no document of "
                f"{collection.name!r} has; stored chunks keep their metadata under 'metadata': "
                f"filter on {nested!r} (e.g. filter={{{nested!r}: ...}})",
                context={"collection": collection.name, "field": field, "use": nested},
            )


def _choose_field(
    fields: list[VectorField], path: str | None, index: str | None
) -> VectorField | None:
    candidates = [
        f
        for f in fields
        if (path is None or f.path == path) and (index is None or f.index == index)
    ]
    return candidates[0] if candidates else None


def _query_vector(
    query_vector: Any, query_text: Any, engine: Any, app: str | None, embedder: Any
) -> np.ndarray:
    if query_vector is not None and query_text is not None:
        raise ValueError("give query_vector or query_text, not both")
    if query_vector is not None:
        return as_vector(query_vector)
    if query_text is None:
        raise ValueError("vector_search needs query_vector or query_text")
    if not isinstance(query_text, str) or not query_text.strip():
        raise ValueError("query_text must be a non-empty string")
    if embedder is None:
        if engine is None or app is None:
            raise ValueError("query_text needs embedding_service= outside an engine")
        embedder = engine.get_embedding_service(app)
    if hasattr(embedder, "embed_query"):
        return as_vector(embedder.embed_query(query_text))
    return as_vector(embedder.embed([query_text])[0])


def _server_search(
    collection: Any,
    query: np.ndarray,
    *,
    path: str,
    index: str | None,
    limit: int,
    num_candidates: int,
    filter: Mapping[str, Any] | None,
    exact: bool,
    projection: Mapping[str, Any] | None,
    include_vector: bool,
    score_field: str,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    if index is None:
        raise QueryValidationError(
            "$vectorSearch needs an index name: declare a vectorSearch index in the manifest "
            "or pass index="
        )
    stage: dict[str, Any] = {
        "index": index,
        "path": path,
        "queryVector": query.tolist(),
        "limit": limit,
    }
    if exact:
        stage["exact"] = True
    else:
        stage["numCandidates"] = num_candidates
    if filter:
        stage["filter"] = dict(filter)
    pipeline: list[dict[str, Any]] = [
        {"$vectorSearch": stage},
        {"$set": {score_field: {"$meta": "vectorSearchScore"}}},
    ]
    if projection is not None:
        spec = dict(projection)
        if any(v not in (0, False) for k, v in spec.items() if k != "_id"):
            spec[score_field] = 1
        pipeline.append({"$project": spec})
    elif not include_vector:
        pipeline.append({"$project": {path: 0}})
    if "max_time_ms" in kwargs:
        kwargs["maxTimeMS"] = kwargs.pop("max_time_ms")
    return list(collection.aggregate(pipeline, **kwargs))
