"""AI services: token-aware chunking, embeddings, chat (plain, streamed, structured) routed
by ``provider/model`` names, costs and monthly budgets, vector and hybrid search on every
server, and per-user memory — configured from an app's manifest.

Most apps reach them through the engine: ``engine.get_llm_service(slug)``,
``engine.get_embedding_service(slug)``, ``engine.get_memory_service(slug)``,
``db.<collection>.vector_search(...)`` and ``db.<collection>.hybrid_search(...)``. Importing
this package loads neither the ``openai`` client nor a model; both are loaded on first use.

The package is light: it imports the configuration, prices and retry policy (plain Python),
and the names that need the ``ai`` extra (numpy) — the services, chunking, token counts,
providers and search — from their modules when first read (PEP 562), so that
``mdb_sync.ai.config`` or ``mdb_sync.ai.routing`` import without it. ``from mdb_sync.ai
import LLMService`` works as before (and fails with numpy's ImportError when it is missing).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .config import EmbeddingConfig, LLMConfig, MemoryConfig
from .prices import Price, PriceTable
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .chunking import Chunk, TextChunker, chunk_text
    from .embeddings import EmbeddingService
    from .hybrid_search import hybrid_search, keyword_search
    from .llm import LLMService
    from .memory import MemoryService
    from .providers import ChatResult, LocalProvider, OpenAIProvider
    from .services import get_embedding_service
    from .tokens import count_tokens
    from .vector_search import vector_search

#: The names that need the ai extra, and the module of each (imported when first read).
_LAZY = {
    "Chunk": "chunking",
    "TextChunker": "chunking",
    "chunk_text": "chunking",
    "EmbeddingService": "embeddings",
    "hybrid_search": "hybrid_search",
    "keyword_search": "hybrid_search",
    "LLMService": "llm",
    "MemoryService": "memory",
    "ChatResult": "providers",
    "LocalProvider": "providers",
    "OpenAIProvider": "providers",
    "get_embedding_service": "services",
    "count_tokens": "tokens",
    "vector_search": "vector_search",
}

#: Functions named like their module: the package exports the function, whichever of the
#: two is imported first (see :class:`_Package`).
_SHADOWED = frozenset(name for name, module in _LAZY.items() if name == module)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """This package's module type. Loading a submodule binds it on the package
    (``mdb_sync.ai.vector_search = <module>``); for the functions named like their module,
    the package keeps the function instead, as it did when it imported them eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "ChatResult",
    "Chunk",
    "EmbeddingConfig",
    "EmbeddingService",
    "LLMConfig",
    "LLMService",
    "LocalProvider",
    "MemoryConfig",
    "MemoryService",
    "OpenAIProvider",
    "Price",
    "PriceTable",
    "RetryPolicy",
    "TextChunker",
    "chunk_text",
    "count_tokens",
    "get_embedding_service",
    "hybrid_search",
    "keyword_search",
    "vector_search",
]
