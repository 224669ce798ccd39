"""The retrieval-augmented answers of the interactive RAG example, shared by its command line
(``main.py``) and its web app (``app.py``).

Documents are chunked, embedded and stored by the app's embedding service
(``process_and_store``: re-ingesting a source replaces its chunks); a question retrieves the
nearest chunks (``vector_search``: ``$vectorSearch`` on Atlas, an exact search elsewhere) and
the chat model answers from them, citing them as [1], [2]... Without a chat model — the local
provider only embeds — the passages themselves are the answer.
"""

from __future__ import annotations

from typing import Any

from mdb_sync import MongoDBEngine
from mdb_sync.exceptions import AIProviderError, AIServiceError

SLUG = "interactive_rag"
KNOWLEDGE_BASE = "knowledge_base"
#: Keep the passages about as relevant as the best one, not the merely least unrelated.
RELEVANCE_MARGIN = 0.15
SYSTEM_PROMPT = (
    "Answer the question using only the numbered passages. Cite the passages you use as "
    "[1], [2]... If the passages do not contain the answer, say so."
)


def title_of(text: str, fallback: str) -> str:
    """A document's title: its first line without Markdown's ``#``, else ``fallback``."""
    lines = text.strip().splitlines()
    title = lines[0].lstrip("# ").strip() if lines else ""
    return title[:200] or fallback


def ingest(engine: MongoDBEngine, source: str, text: str) -> dict[str, Any]:
    """Chunk, embed and store ``text`` as the chunks of ``source`` (replacing earlier ones):
    ``{"source_id", "chunks", "replaced", "title"}``."""
    service = engine.get_embedding_service(SLUG)
    kb = engine.get_scoped_db(SLUG)[KNOWLEDGE_BASE]
    title = title_of(text, source)
    result = service.process_and_store(text, source, kb, metadata={"title": title})
    return {
        "source_id": source,
        "chunks": result["chunks"],
        "replaced": result["replaced"],
        "title": title,
    }


def sources(engine: MongoDBEngine) -> list[dict[str, Any]]:
    """The ingested sources: ``{"source_id", "title", "chunks"}``, by source id."""
    kb = engine.get_scoped_db(SLUG)[KNOWLEDGE_BASE]
    pipeline = [
        {"$sort": {"source_id": 1, "chunk_index": 1}},
        {
            "$group": {
                "_id": "$source_id",
                "title": {"$first": "$metadata.title"},
                "chunks": {"$sum": 1},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    return [
        {"source_id": row["_id"], "title": row.get("title") or "", "chunks": row["chunks"]}
        for row in kb.aggregate(pipeline)
    ]


def forget(engine: MongoDBEngine, source: str) -> int:
    """Delete the chunks of ``source``; how many there were."""
    kb = engine.get_scoped_db(SLUG)[KNOWLEDGE_BASE]
    return kb.delete_many({"source_id": source}).deleted_count


def answer(engine: MongoDBEngine, question: str, limit: int = 3) -> dict[str, Any]:
    """Retrieve the passages nearest to ``question`` and answer from them.

    ``{"question", "answer", "model", "error", "passages"}``: ``answer`` is the chat model's
    (None without one, or when it failed: ``error`` says why, and the passages are the
    answer); ``passages``: ``{"n", "source_id", "title", "chunk_index", "score", "text"}``.
    """
    kb = engine.get_scoped_db(SLUG)[KNOWLEDGE_BASE]
    found = kb.vector_search(query_text=question, limit=limit)
    if found:
        found = [p for p in found if p["score"] >= found[0]["score"] - RELEVANCE_MARGIN]
    passages = [
        {
            "n": n,
            "source_id": p["source_id"],
            "title": (p.get("metadata") or {}).get("title", ""),
            "chunk_index": p["chunk_index"],
            "score": round(float(p["score"]), 4),
            "text": p["text"],
        }
        for n, p in enumerate(found, 1)
    ]
    result: dict[str, Any] = {
        "question": question,
        "answer": None,
        "model": False,
        "error": None,
        "passages": passages,
    }
    if not passages:
        return result
    context = "\n\n".join(f"[{p['n']}] {p['text']}" for p in passages)
    try:
        result["answer"] = (
            engine.get_llm_service(SLUG)
            .chat(
                [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": f"{context}\n\nQuestion: {question}"},
                ]
            )
            .strip()
        )
        result["model"] = True
    except AIProviderError as exc:
        result["error"] = f"the chat model failed: {exc}"
    except AIServiceError as exc:  # no chat model: the local provider embeds only
        result["error"] = str(exc)
    return result
