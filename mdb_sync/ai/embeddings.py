"""EmbeddingService: chunk documents, embed the chunks, store them for vector search.

``process_and_store(text, source_id, collection)`` is idempotent per ``source_id``:
re-ingesting a source replaces its chunks. The new chunks are embedded first (a provider
failure changes nothing), inserted tagged with a fresh ``ingest_id``, and only then are the
source's older chunks deleted — so a failed ingest leaves the previous version intact, and
two concurrent ingests of one source converge on the newer one instead of mixing. (Readers
may see both versions for the moment between the insert and the delete.)
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bson import ObjectId
from bson.binary import Binary, BinaryVectorDtype

from ..exceptions import ConfigurationError
from .chunking import Chunk, TextChunker
from .config import EmbeddingConfig, LLMConfig
from .llm import LLMService
from .local_model import MAX_SEQ_LENGTH
from .providers import LocalProvider
from .routing import split_model

log = logging.getLogger(__name__)

#: Chunks inserted per ``insert_many`` call.
INSERT_BATCH = 500


def to_bson_vector(vector: Sequence[float]) -> Any:
    """``vector`` as a BSON float32 vector (binary subtype 9): a quarter of the size of an
    array of doubles, read by Atlas Vector Search and by the exact search alike."""
    return Binary.from_vector([float(x) for x in vector], BinaryVectorDtype.FLOAT32)


class EmbeddingService:
    """Chunking plus embeddings for one app (or standalone).

    :param max_tokens_per_chunk: chunk limit (``embedding_config.max_tokens_per_chunk``).
    :param tokenizer_model: the model whose tiktoken encoding measures chunks.
    :param default_embedding_model: the embedding model (else ``llm_config``'s).
    :param chunk_overlap_tokens: tokens repeated between consecutive chunks.
    :param llm: the :class:`LLMService` that computes embeddings (built from ``llm_config``
        when not given).

    With the local provider, chunks are measured with the local model's own tokenizer and
    capped at 254 tokens: all-MiniLM-L6-v2 reads 256 tokens ([CLS] and [SEP] included) and
    would silently ignore the rest.
    """

    def __init__(
        self,
        max_tokens_per_chunk: int | None = None,
        tokenizer_model: str | None = None,
        default_embedding_model: str | None = None,
        *,
        chunk_overlap_tokens: int | None = None,
        config: EmbeddingConfig | Mapping[str, Any] | None = None,
        llm: LLMService | None = None,
        llm_config: LLMConfig | Mapping[str, Any] | None = None,
        metrics: Any = None,
        app: str | None = None,
    ) -> None:
        if not isinstance(config, EmbeddingConfig):
            config = EmbeddingConfig.from_section(config, slug=app)
        overrides = {
            "max_tokens_per_chunk": max_tokens_per_chunk,
            "tokenizer_model": tokenizer_model,
            "chunk_overlap_tokens": chunk_overlap_tokens,
            "default_embedding_model": default_embedding_model,
        }
        if any(v is not None for v in overrides.values()):
            # Checked as a whole (an overlap against the chunk size) by the manifest's schema.
            merged = {k: v for k, v in asdict(config).items() if v is not None}
            merged.update({k: v for k, v in overrides.items() if v is not None})
            config = EmbeddingConfig.from_section(merged, slug=app)
        self.config = config
        self.app = app
        self.llm = llm or LLMService(llm_config, metrics=metrics, app=app)
        self.default_model = (
            config.default_embedding_model or self.llm.config.default_embedding_model
        )
        self._chunkers: dict[int, TextChunker] = {}

    def __repr__(self) -> str:
        return (
            f"EmbeddingService(app={self.app!r}, model={self.default_model!r}, "
            f"max_tokens_per_chunk={self.config.max_tokens_per_chunk})"
        )

    # --- chunking -----------------------------------------------------------------------------

    def chunker(self, max_tokens: int | None = None) -> TextChunker:
        """The chunker for ``max_tokens`` (default: the configured limit)."""
        limit = max_tokens or self.config.max_tokens_per_chunk
        chunker = self._chunkers.get(limit)
        if chunker is None:
            overlap = self.config.chunk_overlap_tokens
            if self._local_model():
                capped = min(limit, MAX_SEQ_LENGTH - 2)
                if capped < limit:
                    log.info("local model: chunks capped at %d tokens (asked %d)", capped, limit)
                counter = self.llm.route(self.default_model).provider.encoder.tokenizer
                chunker = TextChunker(capped, min(overlap, capped // 2), counter=counter)
            else:
                if overlap >= limit:
                    raise ConfigurationError(
                        f"max_tokens_per_chunk ({limit}) must exceed chunk_overlap_tokens "
                        f"({overlap})"
                    )
                chunker = TextChunker(limit, overlap, self.config.tokenizer_model)
            self._chunkers[limit] = chunker
        return chunker

    def _local_model(self) -> bool:
        """Whether the default embedding model is the local one (``local/...``, or a bare
        name with the local provider as the default)."""
        prefix, _ = split_model(self.default_model)
        if prefix is None:
            return isinstance(self.llm.provider, LocalProvider)
        spec = self.llm.router.specs.get(prefix)
        return spec is not None and spec.type == "local"

    def split(
        self,
        text: str,
        *,
        source_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_tokens_per_chunk: int | None = None,
    ) -> list[Chunk]:
        """Chunks of ``text`` (no embeddings)."""
        return self.chunker(max_tokens_per_chunk).split(
            text, source_id=source_id, metadata=metadata
        )

    # --- embeddings ---------------------------------------------------------------------------

    def embed(self, texts: str | Sequence[str], model: str | None = None) -> list[list[float]]:
        """One vector per text, in order (batched to the provider's limits)."""
        return self.llm.embed(texts, model=model or self.default_model)

    def embed_query(self, text: str, model: str | None = None) -> list[float]:
        """The vector of one query text."""
        return self.embed([text], model=model)[0]

    def split_and_embed(
        self,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        source_id: str | None = None,
        max_tokens_per_chunk: int | None = None,
        model: str | None = None,
    ) -> list[Chunk]:
        """Chunks of ``text``, each with its ``embedding``; every chunk is guaranteed to be at
        most ``max_tokens_per_chunk`` tokens."""
        chunks = self.split(
            text,
            source_id=source_id,
            metadata=metadata,
            max_tokens_per_chunk=max_tokens_per_chunk,
        )
        if chunks:
            vectors = self.embed([c.text for c in chunks], model=model)
            for chunk, vector in zip(chunks, vectors, strict=True):
                chunk.embedding = vector
        return chunks

    def process_and_store(
        self,
        text_content: str,
        source_id: str,
        collection: Any,
        *,
        max_tokens_per_chunk: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
        embedding_field: str = "embedding",
        bson_vectors: bool = False,
    ) -> dict[str, Any]:
        """Chunk, embed and store ``text_content`` as the chunks of ``source_id`` in
        ``collection`` (a scoped collection), replacing that source's earlier chunks.

        Each stored chunk: ``source_id``, ``chunk_index``, ``text``, ``start``, ``end``,
        ``token_count``, ``metadata``, the vector under ``embedding_field``,
        ``embedding_model``, ``ingest_id`` and ``created_at``. ``bson_vectors=True`` stores
        vectors as BSON float32 vectors instead of arrays of doubles (smaller; Atlas Vector
        Search reads both). Returns ``{"source_id", "chunks", "replaced", "ingest_id"}``.
        """
        if not isinstance(source_id, str) or not source_id:
            raise ValueError("source_id must be a non-empty string")
        if not isinstance(embedding_field, str) or not embedding_field or "$" in embedding_field:
            raise ValueError("embedding_field must be a field name without '$'")
        for method in ("insert_many", "delete_many", "find_one"):
            if not callable(getattr(collection, method, None)):
                raise TypeError(
                    "collection must be a (scoped) collection, e.g. engine.get_scoped_db(app).docs"
                )
        model = model or self.default_model
        chunks = self.split_and_embed(
            text_content,
            metadata=metadata,
            source_id=source_id,
            max_tokens_per_chunk=max_tokens_per_chunk,
            model=model,
        )
        ingest_id = ObjectId()
        now = _dt.datetime.now(_dt.timezone.utc)
        documents = []
        for chunk in chunks:
            doc = chunk.to_dict()
            vector = chunk.embedding or []
            doc[embedding_field] = to_bson_vector(vector) if bson_vectors else vector
            doc.update(embedding_model=model, ingest_id=ingest_id, created_at=now)
            documents.append(doc)
        try:
            for start in range(0, len(documents), INSERT_BATCH):
                collection.insert_many(documents[start : start + INSERT_BATCH])
        except BaseException:
            collection.delete_many({"source_id": source_id, "ingest_id": ingest_id})
            raise
        replaced = collection.delete_many(
            {"source_id": source_id, "ingest_id": {"$lt": ingest_id}}
        ).deleted_count
        newer = collection.find_one(
            {"source_id": source_id, "ingest_id": {"$gt": ingest_id}}, {"_id": 1}
        )
        if newer is not None:
            # A concurrent ingest of the same source started later: it wins.
            collection.delete_many({"source_id": source_id, "ingest_id": ingest_id})
        return {
            "source_id": source_id,
            "chunks": len(documents),
            "replaced": replaced,
            "ingest_id": ingest_id,
        }
