"""Index management: indexes declared in manifests and query-driven auto-indexing."""

from .declared import ensure_declared_indexes

__all__ = ["ensure_declared_indexes"]
