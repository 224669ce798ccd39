"""Index management: indexes declared in manifests, Atlas Search indexes, and query-driven
auto-indexing.

- :func:`ensure_declared_indexes` reconciles a manifest's ``managed_indexes`` with the
  server (:mod:`.declared`); :func:`plan_indexes` says what each definition builds
  (:mod:`.spec`).
- :class:`AutoIndexManager` (:mod:`.auto`) builds the indexes frequent queries need.
- :mod:`.tools` backs ``mdb indexes list|sync|suggest`` and the health check.
"""

from .auto import AutoIndexManager, query_shape, shape_keys
from .declared import (
    PROBLEM_STATUSES,
    ensure_declared_indexes,
    run_index_creation_for_collection,
    wait_for_search_indexes,
)
from .spec import IndexSpec, SearchIndexSpec, plan_indexes

__all__ = [
    "PROBLEM_STATUSES",
    "AutoIndexManager",
    "IndexSpec",
    "SearchIndexSpec",
    "ensure_declared_indexes",
    "plan_indexes",
    "query_shape",
    "run_index_creation_for_collection",
    "shape_keys",
    "wait_for_search_indexes",
]
