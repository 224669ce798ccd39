"""Graph memory (``memory_config.enable_graph``): what a user said, as entities and the
relations between them — "user lives_in lyon", "lyon is_in france" — next to the memories.

Relations live in a scoped collection of the app (``<collection_name>_graph``), one document
per ``(user_id, source, relationship, destination)``, each embedded so a question finds the
relevant ones; a search then follows the graph from the entities it found, hop by hop, with
every step filtered by the user (never through another user's relations). On ``add`` the chat
model extracts the conversation's relations, and — shown only the user's own relations that
share an entity with the new ones, under short aliases — names those the new ones make
obsolete ("user lives_in paris" once the user moved), which are removed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Mapping
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from .config import MemoryConfig
from .embeddings import EmbeddingService
from .llm import LLMService

log = logging.getLogger(__name__)

#: What the model calls the user, and what relations store for them.
USER_NODE = "user"
MAX_NAME_LENGTH = 120
#: Existing relations shown to the model when it decides which ones are obsolete.
MAX_SHOWN = 50

RELATIONS_PROMPT = """You build a knowledge graph of what the user tells you. Extract the \
entities in the conversation and the relationships between them as triples. Call the user \
"user". Use short lowercase names for entities and snake_case verbs for relationships, e.g. \
{"source": "user", "relationship": "works_at", "destination": "acme"}. Skip small talk and what \
the assistant said unless the user confirmed it. Reply as JSON: {"relations": [{"source": \
"...", "relationship": "...", "destination": "..."}]} (an empty list if none)."""

OBSOLETE_PROMPT = """You maintain a user's knowledge graph. You get existing relations (each \
with an id) and new relations. List the ids of the existing relations that the new ones \
contradict or make outdated (e.g. "user lives_in paris" when the user now lives in lyon); keep \
everything still true. Reply as JSON: {"obsolete": ["id", ...]} (an empty list if none)."""

RELATIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "relations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "source": {"type": "string"},
                    "relationship": {"type": "string"},
                    "destination": {"type": "string"},
                },
                "required": ["source", "relationship", "destination"],
            },
        }
    },
    "required": ["relations"],
}
OBSOLETE_SCHEMA = {
    "type": "object",
    "properties": {"obsolete": {"type": "array", "items": {"type": ["string", "integer"]}}},
    "required": ["obsolete"],
}

_SPACES = re.compile(r"[\s_]+")


def normalize(name: Any) -> str | None:
    """An entity or relationship name as stored: trimmed, lowercase, words joined by ``_``;
    None when empty or longer than :data:`MAX_NAME_LENGTH`."""
    if not isinstance(name, str):
        return None
    text = _SPACES.sub("_", name.strip().lower()).strip("_")
    return text if text and len(text) <= MAX_NAME_LENGTH else None


def _triple(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        "source": doc["source"],
        "relationship": doc["relationship"],
        "destination": doc["destination"],
    }
    if "score" in doc:
        out["score"] = doc["score"]
    return out


class RelationGraph:
    """The relations of one app's users (see the module docstring)."""

    def __init__(
        self,
        collection: Any,
        *,
        llm: LLMService,
        embeddings: EmbeddingService,
        config: MemoryConfig,
    ) -> None:
        self.collection = collection
        self.llm = llm
        self.embeddings = embeddings
        self.config = config
        self._indexed = False

    def _ensure_index(self) -> None:
        if self._indexed:
            return
        try:
            self.collection.create_index(
                [("user_id", 1), ("source", 1), ("relationship", 1), ("destination", 1)],
                name="relation_unique",
                unique=True,
            )
        except PyMongoError:
            log.warning("graph memory: could not create its unique index", exc_info=True)
        self._indexed = True

    # --- adding -------------------------------------------------------------------------------

    def add(self, turns: list[dict[str, str]], user_id: str) -> dict[str, list[dict[str, Any]]]:
        """Extract the conversation's relations; store the new ones and remove those they
        make obsolete. Returns ``{"added": [...], "deleted": [...]}`` (triples)."""
        new = self._extract(turns)
        if not new:
            return {"added": [], "deleted": []}
        self._ensure_index()
        deleted = self._remove_obsolete(new, user_id)
        added = []
        texts = [f"{r['source']} {r['relationship']} {r['destination']}" for r in new]
        vectors = self.embeddings.embed(texts, model=self.config.embedding_model)
        now = _dt.datetime.now(_dt.timezone.utc)
        for relation, text, vector in zip(new, texts, vectors, strict=True):
            key = {"user_id": user_id, **relation}
            try:
                result = self.collection.update_one(
                    key,
                    {
                        "$set": {"text": text, "embedding": vector, "updated_at": now},
                        "$setOnInsert": {"created_at": now},
                    },
                    upsert=True,
                )
            except DuplicateKeyError:  # a concurrent add stored it first
                continue
            if result.upserted_id is not None:
                added.append(dict(relation))
        return {"added": added, "deleted": deleted}

    def _extract(self, turns: list[dict[str, str]]) -> list[dict[str, str]]:
        conversation = "\n".join(f"{t['role']}: {t['content']}" for t in turns)
        reply = self.llm.ask_structured(
            RELATIONS_PROMPT,
            conversation,
            RELATIONS_SCHEMA,
            model=self.config.chat_model,
            temperature=self.config.temperature,
        )
        relations: list[dict[str, str]] = []
        for item in reply["relations"]:
            names = {k: normalize(item.get(k)) for k in ("source", "relationship", "destination")}
            triple = {k: v for k, v in names.items() if v is not None}
            if len(triple) == len(names) and triple not in relations:
                relations.append(triple)
        return relations

    def _remove_obsolete(self, new: list[dict[str, str]], user_id: str) -> list[dict[str, Any]]:
        """Ask the model which of the user's relations sharing an entity with ``new`` are
        obsolete; delete those (it can only name relations it was shown)."""
        names = sorted({r["source"] for r in new} | {r["destination"] for r in new})
        spec = {
            "user_id": user_id,
            "$or": [{"source": {"$in": names}}, {"destination": {"$in": names}}],
        }
        existing = list(self.collection.find(spec, {"embedding": 0}).limit(MAX_SHOWN))
        fresh = [e for e in existing if _triple(e) not in new]
        if not fresh:
            return []
        aliases = {str(i): doc for i, doc in enumerate(fresh)}
        prompt = {
            "existing_relations": [{"id": k, **_triple(d)} for k, d in aliases.items()],
            "new_relations": new,
        }
        reply = self.llm.ask_structured(
            OBSOLETE_PROMPT,
            prompt,
            OBSOLETE_SCHEMA,
            model=self.config.chat_model,
            temperature=self.config.temperature,
        )
        deleted = []
        for alias in dict.fromkeys(str(a) for a in reply["obsolete"]):
            doc = aliases.get(alias)
            if doc is not None:
                result = self.collection.delete_one({"_id": doc["_id"], "user_id": user_id})
                if result.deleted_count:
                    deleted.append(_triple(doc))
        return deleted

    # --- reading ------------------------------------------------------------------------------

    def search(
        self, query: str, user_id: str, limit: int = 10, depth: int = 1
    ) -> list[dict[str, Any]]:
        """The user's relations most similar to ``query`` (with a ``score``), then those up to
        ``depth`` hops away from their entities (without one), at most ``limit`` in all."""
        vector = self.embeddings.embed_query(query, model=self.config.embedding_model)
        found = list(
            self.collection.vector_search(
                vector,
                path="embedding",
                filter={"user_id": user_id},
                limit=limit,
                projection={"embedding": 0},
            )
        )
        seen = {doc["_id"] for doc in found}
        frontier = {doc["source"] for doc in found} | {doc["destination"] for doc in found}
        visited: set[str] = set()
        for _ in range(max(depth, 0)):
            names = sorted(frontier - visited)
            if not names or len(found) >= limit:
                break
            visited |= frontier
            spec = {
                "user_id": user_id,
                "_id": {"$nin": list(seen)},
                "$or": [{"source": {"$in": names}}, {"destination": {"$in": names}}],
            }
            hop = list(
                self.collection.find(spec, {"embedding": 0})
                .sort("updated_at", -1)
                .limit(limit - len(found))
            )
            found.extend(hop)
            seen.update(doc["_id"] for doc in hop)
            frontier = {doc["source"] for doc in hop} | {doc["destination"] for doc in hop}
        return [_triple(doc) for doc in found]

    def get_all(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's relations, newest first."""
        cursor = self.collection.find({"user_id": user_id}, {"embedding": 0})
        return [_triple(d) for d in cursor.sort([("updated_at", -1), ("_id", -1)]).limit(limit)]

    def delete_all(self, user_id: str) -> int:
        return int(self.collection.delete_many({"user_id": user_id}).deleted_count)
