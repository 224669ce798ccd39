"""MemoryService: what an app remembers about each of its users.

Memories live in a scoped collection of the app (``memory_config.collection_name``, default
``memories``), each tagged with its ``user_id``; every read and change names the user and
filters by it (``get``, ``update``, ``delete`` and ``history`` of one memory too: only an
administrator's tool passes ``all_users=True`` instead), so one user's memories never appear
in another's results, and the sandbox keeps other apps out entirely.
Every change is recorded in ``<collection>_history`` (``ADD``, ``UPDATE``, ``DELETE`` with the
old and new text), which outlives the memory itself.

``add(messages, user_id, infer=True)`` works like mem0: the chat model extracts standalone
facts from the conversation, then decides per fact, against the user's most similar existing
memories, whether to add it, update one, delete one (a contradiction) or do nothing. The
model only ever sees (and can only name) the user's own memories, under short aliases, so a
reply cannot touch anything else. With ``infer=False`` the messages are stored as they are.
With ``memory_config.async_mode`` an ``add`` is queued on a small background pool and
returns at once (``flush()`` waits for the queue). With ``memory_config.enable_graph`` an
inferring ``add`` also keeps the conversation's entities and relations
(:mod:`mdb_sync.ai.graph_memory`): ``search_relations`` and ``get_relations`` read them.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from ..exceptions import AIServiceError
from .config import MemoryConfig
from .embeddings import EmbeddingService
from .graph_memory import RelationGraph
from .llm import LLMService

log = logging.getLogger(__name__)

EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")
#: Existing memories shown to the model per new fact.
NEIGHBOURS_PER_FACT = 5
MAX_USER_ID_LENGTH = 256

FACT_PROMPT = """You extract durable facts about the user from a conversation, for a \
personal memory. Keep preferences, personal details, plans, relationships, opinions and \
anything the user may want remembered; skip greetings, small talk and what the assistant \
said unless the user confirmed it. Each fact is one short, standalone sentence in the \
conversation's language. Reply as JSON: {"facts": ["...", ...]} (an empty list if none)."""

DECISION_PROMPT = """You maintain a user's memory. You get the user's existing memories \
(each with an id) and new facts. For every new fact decide one event:
- ADD: new information; give the fact as text (use a new id such as "new1").
- UPDATE: it refines or changes an existing memory; give that memory's id and the merged text.
- DELETE: it contradicts an existing memory, which should go; give that memory's id.
- NONE: already known; give the existing id.
Use only ids from the existing memories for UPDATE, DELETE and NONE. Reply as JSON:
{"memory": [{"id": "...", "text": "...", "event": "ADD|UPDATE|DELETE|NONE"}]}"""

FACTS_SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
}
DECISIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "memory": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": ["string", "integer"]},
                    "text": {"type": "string"},
                    "event": {"type": "string", "enum": list(EVENTS)},
                },
                "required": ["event"],
            },
        }
    },
    "required": ["memory"],
}


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_user(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError("user_id must be a non-empty string")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise ValueError(f"user_id is longer than {MAX_USER_ID_LENGTH} characters")
    return user_id


def _owned(memory_id: Any, user_id: Any, all_users: bool) -> dict[str, Any]:
    """The filter of one memory of ``user_id`` (of anyone's with ``all_users``): naming the
    user is required, so forgetting it can never reach another user's memories."""
    spec: dict[str, Any] = {"_id": _object_id(memory_id)}
    if all_users:
        if user_id is not None:
            raise ValueError("pass user_id or all_users=True, not both")
        return spec
    if user_id is None:
        raise ValueError(
            "user_id is required (the memory's owner); an administrator's tool that reads "
            "any user's memories passes all_users=True"
        )
    spec["user_id"] = _check_user(user_id)
    return spec


def _object_id(memory_id: Any) -> ObjectId:
    if isinstance(memory_id, ObjectId):
        return memory_id
    try:
        return ObjectId(memory_id)
    except (InvalidId, TypeError):
        raise ValueError(f"invalid memory id {memory_id!r}") from None


def _messages_text(messages: Any) -> list[dict[str, str]]:
    """``messages`` (a string, one message dict, or a list) as role/content pairs."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a string or a non-empty list of message dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict")
        content = message.get("content")
        if not isinstance(content, str):
            raise TypeError(f"messages[{i}].content must be a string")
        role = message.get("role", "user")
        if role == "system" or not content.strip():
            continue
        out.append({"role": str(role), "content": content.strip()})
    return out


class MemoryService:
    """Per-user memories of one app (see the module docstring).

    :param collection: the scoped collection holding the memories.
    :param history_collection: the scoped collection of change events.
    :param llm: the :class:`LLMService` used to extract facts and decide updates.
    :param embeddings: the :class:`EmbeddingService` that embeds memories and queries.
    :param config: a :class:`~mdb_sync.ai.config.MemoryConfig`.
    :param graph_collection: the scoped collection of relations (``enable_graph``).
    """

    def __init__(
        self,
        collection: Any,
        *,
        history_collection: Any,
        llm: LLMService,
        embeddings: EmbeddingService,
        config: MemoryConfig | None = None,
        graph_collection: Any = None,
    ) -> None:
        self.collection = collection
        self.history_collection = history_collection
        self.llm = llm
        self.embeddings = embeddings
        self.config = config or MemoryConfig()
        self.graph: RelationGraph | None = None
        if self.config.enable_graph:
            if graph_collection is None:
                raise ValueError("memory_config.enable_graph needs a graph_collection")
            self.graph = RelationGraph(
                graph_collection, llm=llm, embeddings=embeddings, config=self.config
            )
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"MemoryService(collection={self.collection!r})"

    # --- helpers ------------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self.embeddings.embed(texts, model=self.config.embedding_model)

    def _public(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        out = {
            "id": str(doc["_id"]),
            "memory": doc.get("memory"),
            "user_id": doc.get("user_id"),
            "metadata": doc.get("metadata") or {},
            "created_at": doc.get("created_at"),
            "updated_at": doc.get("updated_at"),
        }
        if "score" in doc:
            out["score"] = doc["score"]
        return out

    def _record(
        self,
        memory_id: ObjectId,
        user_id: str,
        event: str,
        old: str | None,
        new: str | None,
        now: _dt.datetime,
    ) -> None:
        self.history_collection.insert_one(
            {
                "memory_id": memory_id,
                "user_id": user_id,
                "event": event,
                "old_memory": old,
                "new_memory": new,
                "created_at": now,
            }
        )

    def _insert(
        self, user_id: str, text: str, vector: list[float], metadata: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        now = _now()
        doc: dict[str, Any] = {
            "user_id": user_id,
            "memory": text,
            "hash": _digest(text),
            "embedding": vector,
            "metadata": dict(metadata or {}),
            "created_at": now,
            "updated_at": now,
        }
        self.collection.insert_one(doc)
        self._record(doc["_id"], user_id, "ADD", None, text, now)
        return {"id": str(doc["_id"]), "memory": text, "event": "ADD"}

    def _replace_text(
        self, doc: Mapping[str, Any], text: str, vector: list[float], metadata: Any = None
    ) -> None:
        now = _now()
        changes: dict[str, Any] = {
            "memory": text,
            "hash": _digest(text),
            "embedding": vector,
            "updated_at": now,
        }
        if metadata is not None:
            changes["metadata"] = dict(metadata)
        self.collection.update_one(
            {"_id": doc["_id"], "user_id": doc["user_id"]}, {"$set": changes}
        )
        self._record(doc["_id"], doc["user_id"], "UPDATE", doc.get("memory"), text, now)

    # --- adding -------------------------------------------------------------------------------

    def add(
        self,
        messages: Any,
        user_id: str,
        metadata: Mapping[str, Any] | None = None,
        infer: bool | None = None,
    ) -> dict[str, Any]:
        """Remember what ``messages`` say about ``user_id``.

        Returns ``{"results": [{"id", "memory", "event"}, ...]}`` with one entry per memory
        added, updated or deleted — and with graph memory and ``infer``, ``"relations":
        {"added": [...], "deleted": [...]}`` — or in ``async_mode`` ``{"results": [],
        "status": "queued"}``.
        """
        user_id = _check_user(user_id)
        turns = _messages_text(messages)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError("metadata must be a mapping")
        infer = self.config.infer if infer is None else bool(infer)
        if self.config.async_mode:
            self._submit(self._add, turns, user_id, metadata, infer)
            return {"results": [], "status": "queued"}
        return self._add(turns, user_id, metadata, infer)

    def _add(
        self,
        turns: list[dict[str, str]],
        user_id: str,
        metadata: Mapping[str, Any] | None,
        infer: bool,
    ) -> dict[str, Any]:
        with self.llm.telemetry.operation("memory.add"):
            if not turns:
                return {"results": []}
            if not infer:
                texts = [t["content"] for t in turns]
                vectors = self._embed(texts)
                return {
                    "results": [
                        self._insert(user_id, text, vector, {**(metadata or {}), "role": t["role"]})
                        for t, text, vector in zip(turns, texts, vectors, strict=True)
                    ]
                }
            facts = self._extract_facts(turns)
            result: dict[str, Any] = {"results": []}
            if facts:
                result["results"] = self._apply(self._decide(facts, user_id), user_id, metadata)
            if self.graph is not None:
                result["relations"] = self.graph.add(turns, user_id)
            return result

    def _extract_facts(self, turns: list[dict[str, str]]) -> list[str]:
        conversation = "\n".join(f"{t['role']}: {t['content']}" for t in turns)
        reply = self.llm.ask_structured(
            FACT_PROMPT,
            conversation,
            FACTS_SCHEMA,
            model=self.config.chat_model,
            temperature=self.config.temperature,
        )
        seen: set[str] = set()
        facts = []
        for fact in reply["facts"]:
            fact = fact.strip()
            if fact and fact.lower() not in seen:
                seen.add(fact.lower())
                facts.append(fact)
        return facts

    def _decide(
        self, facts: list[str], user_id: str
    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """The model's events for ``facts`` and the aliases of the memories it was shown."""
        vectors = self._embed(facts)
        existing: dict[Any, dict[str, Any]] = {}
        for vector in vectors:
            for doc in self.collection.vector_search(
                vector,
                path="embedding",
                filter={"user_id": user_id},
                limit=NEIGHBOURS_PER_FACT,
                projection={"embedding": 0},
            ):
                existing.setdefault(doc["_id"], doc)
        aliases = {str(i): doc for i, doc in enumerate(existing.values())}
        prompt = {
            "existing_memories": [{"id": k, "text": d["memory"]} for k, d in aliases.items()],
            "new_facts": facts,
        }
        reply = self.llm.ask_structured(
            DECISION_PROMPT,
            prompt,
            DECISIONS_SCHEMA,
            model=self.config.chat_model,
            temperature=self.config.temperature,
        )
        return reply["memory"], aliases

    def _apply(
        self,
        decision: tuple[list[dict[str, Any]], dict[str, dict[str, Any]]],
        user_id: str,
        metadata: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        events, aliases = decision
        touched: set[str] = set()
        to_embed: list[tuple[str, dict[str, Any] | None]] = []  # (text, existing doc)
        deletions: list[dict[str, Any]] = []
        for event in events:
            kind = event.get("event")
            text = (event.get("text") or "").strip()
            target = aliases.get(str(event.get("id")))
            if target is not None and str(event.get("id")) in touched:
                continue  # one event per existing memory
            if kind == "ADD" or (kind == "UPDATE" and target is None):
                if text:
                    to_embed.append((text, None))
            elif kind == "UPDATE" and target is not None and text and text != target["memory"]:
                touched.add(str(event.get("id")))
                to_embed.append((text, target))
            elif kind == "DELETE" and target is not None:
                touched.add(str(event.get("id")))
                deletions.append(target)
        results = []
        fresh: list[tuple[str, dict[str, Any] | None]] = []
        for text, target in to_embed:
            if target is None and self.collection.find_one(
                {"user_id": user_id, "hash": _digest(text)}, {"_id": 1}
            ):
                continue  # already remembered word for word
            if all(text != t for t, _ in fresh):
                fresh.append((text, target))
        vectors = self._embed([t for t, _ in fresh]) if fresh else []
        for (text, target), vector in zip(fresh, vectors, strict=True):
            if target is None:
                results.append(self._insert(user_id, text, vector, metadata))
            else:
                self._replace_text(target, text, vector)
                results.append(
                    {
                        "id": str(target["_id"]),
                        "memory": text,
                        "event": "UPDATE",
                        "previous_memory": target["memory"],
                    }
                )
        for target in deletions:
            self._delete_doc(target)
            results.append(
                {"id": str(target["_id"]), "memory": target["memory"], "event": "DELETE"}
            )
        return results

    # --- async mode ---------------------------------------------------------------------------

    def _submit(self, fn: Any, *args: Any) -> None:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="mdb-memory"
                )
                self._pool_pid = os.getpid()
                self._pending = set()
            future = self._pool.submit(fn, *args)
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
        exc = future.exception()
        if exc is not None:
            log.error("queued memory add failed: %s", exc, exc_info=exc)
            self.llm.telemetry.count("memory.async_errors", 1)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for queued adds (``async_mode``); True if none is left."""
        with self._lock:
            pending = list(self._pending)
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        return not not_done

    def close(self) -> None:
        """Finish queued adds and stop the background pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=True)

    # --- reading ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        user_id: str,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """The user's memories most similar to ``query``, best first, each with a ``score``.

        ``filters`` match metadata (``{"topic": "food"}`` is ``metadata.topic == "food"``);
        ``threshold`` (default ``memory_config.similarity_threshold``) drops weaker matches.
        """
        user_id = _check_user(user_id)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        spec: dict[str, Any] = {"user_id": user_id}
        for key, value in (filters or {}).items():
            if not isinstance(key, str) or key.startswith("$"):
                raise ValueError(f"invalid filter key {key!r}")
            spec[f"metadata.{key}"] = value
        threshold = self.config.similarity_threshold if threshold is None else threshold
        with self.llm.telemetry.operation("memory.search"):
            vector = self.embeddings.embed_query(query, model=self.config.embedding_model)
            docs = self.collection.vector_search(
                vector, path="embedding", filter=spec, limit=limit, min_score=threshold
            )
        return [self._public(doc) for doc in docs]

    def search_relations(
        self, query: str, user_id: str, limit: int = 10, depth: int = 1
    ) -> list[dict[str, Any]]:
        """Graph memory: the user's relations (``{"source", "relationship",
        "destination"}``) most similar to ``query``, each with a ``score``, then those up to
        ``depth`` hops from their entities — at most ``limit``."""
        graph = self._require_graph()
        user_id = _check_user(user_id)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if not isinstance(depth, int) or not 0 <= depth <= 3:
            raise ValueError("depth must be an integer from 0 to 3")
        with self.llm.telemetry.operation("memory.search_relations"):
            return graph.search(query, user_id, limit, depth)

    def get_relations(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Graph memory: the user's relations, newest first."""
        return self._require_graph().get_all(_check_user(user_id), limit)

    def _require_graph(self) -> RelationGraph:
        if self.graph is None:
            raise AIServiceError("graph memory is off (memory_config.enable_graph)")
        return self.graph

    def get(
        self, memory_id: Any, user_id: str | None = None, *, all_users: bool = False
    ) -> dict[str, Any] | None:
        """One memory of ``user_id``, or None (also when it belongs to another user).
        ``all_users=True`` instead of a user: any user's (an administrator's tool)."""
        spec = _owned(memory_id, user_id, all_users)
        doc = self.collection.find_one(spec, {"embedding": 0})
        return self._public(doc) if doc else None

    def get_all(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's memories, newest first."""
        user_id = _check_user(user_id)
        cursor = self.collection.find({"user_id": user_id}, {"embedding": 0})
        return [
            self._public(d) for d in cursor.sort([("created_at", -1), ("_id", -1)]).limit(limit)
        ]

    def history(
        self, memory_id: Any, user_id: str | None = None, *, all_users: bool = False
    ) -> list[dict[str, Any]]:
        """The events of one memory of ``user_id``, oldest first (kept after the memory is
        deleted); empty for another user's memory. ``all_users=True`` instead of a user:
        any user's (an administrator's tool)."""
        spec = _owned(memory_id, user_id, all_users)
        memory = spec.pop("_id")
        cursor = self.history_collection.find({"memory_id": memory, **spec})
        return [
            {
                "id": str(event["_id"]),
                "memory_id": str(event["memory_id"]),
                "user_id": event.get("user_id"),
                "event": event["event"],
                "old_memory": event.get("old_memory"),
                "new_memory": event.get("new_memory"),
                "created_at": event.get("created_at"),
            }
            for event in cursor.sort([("created_at", 1), ("_id", 1)]).limit(10_000)
        ]

    # --- changing -----------------------------------------------------------------------------

    def update(
        self,
        memory_id: Any,
        memory: Any = None,
        user_id: str | None = None,
        *,
        data: Any = None,
        metadata: Mapping[str, Any] | None = None,
        all_users: bool = False,
    ) -> dict[str, Any]:
        """Replace a memory of ``user_id``'s text (``memory`` is the new text, or a dict
        with ``content``, ``memory`` or ``text``, and optionally ``metadata``); it is
        re-embedded. Another user's memory is "not found"; ``all_users=True`` instead of a
        user: any user's (an administrator's tool)."""
        value = memory if memory is not None else data
        if isinstance(value, Mapping):
            metadata = value.get("metadata", metadata)
            value = value.get("content", value.get("memory", value.get("text")))
        if not isinstance(value, str) or not value.strip():
            raise ValueError("the new memory must be a non-empty string")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError("metadata must be a mapping")
        spec = _owned(memory_id, user_id, all_users)
        doc = self.collection.find_one(spec, {"embedding": 0})
        if doc is None:
            raise AIServiceError(f"memory {memory_id!s} not found", context={"id": str(memory_id)})
        text = value.strip()
        self._replace_text(doc, text, self._embed([text])[0], metadata)
        updated = self.get(doc["_id"], doc["user_id"])
        assert updated is not None
        return updated

    def _delete_doc(self, doc: Mapping[str, Any]) -> bool:
        result = self.collection.delete_one({"_id": doc["_id"], "user_id": doc["user_id"]})
        if result.deleted_count:
            self._record(doc["_id"], doc["user_id"], "DELETE", doc.get("memory"), None, _now())
        return bool(result.deleted_count)

    def delete(
        self, memory_id: Any, user_id: str | None = None, *, all_users: bool = False
    ) -> bool:
        """Delete one memory of ``user_id``; True if it existed and was theirs.
        ``all_users=True`` instead of a user: any user's (an administrator's tool)."""
        spec = _owned(memory_id, user_id, all_users)
        doc = self.collection.find_one(spec, {"memory": 1, "user_id": 1})
        return self._delete_doc(doc) if doc else False

    def delete_all(self, user_id: str) -> int:
        """Delete every memory of ``user_id`` (and their relations, with graph memory);
        return how many memories there were."""
        user_id = _check_user(user_id)
        if self.graph is not None:
            self.graph.delete_all(user_id)
        deleted = 0
        while True:
            docs = list(
                self.collection.find({"user_id": user_id}, {"memory": 1, "user_id": 1}).limit(1000)
            )
            if not docs:
                return deleted
            deleted += sum(self._delete_doc(doc) for doc in docs)
