"""AI services: token-aware chunking, embeddings, chat (plain, streamed, structured) routed
by ``provider/model`` names, costs and monthly budgets, vector and hybrid search on every
server, and per-user memory — configured from an app's manifest.

Most apps reach them through the engine: ``engine.get_llm_service(slug)``,
``engine.get_embedding_service(slug)``, ``engine.get_memory_service(slug)``,
``db.<collection>.vector_search(...)`` and ``db.<collection>.hybrid_search(...)``. Importing
this package loads neither the ``openai`` client nor a model; both are loaded on first use.
"""

from .chunking import Chunk, TextChunker, chunk_text
from .config import EmbeddingConfig, LLMConfig, MemoryConfig
from .embeddings import EmbeddingService
from .hybrid_search import hybrid_search, keyword_search
from .llm import LLMService
from .memory import MemoryService
from .prices import Price, PriceTable
from .providers import ChatResult, LocalProvider, OpenAIProvider
from .retry import RetryPolicy
from .services import get_embedding_service
from .tokens import count_tokens
from .vector_search import vector_search

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
