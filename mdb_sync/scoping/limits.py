"""Resource limits of scoped operations, configurable per engine.

Defaults follow the seed documents: a query may nest 10 levels, a pipeline may have 50
stages, a regex 1000 characters; operations get ``maxTimeMS`` 30 s unless they ask for
more (capped at 5 min); a result holds at most 10,000 documents and a batch 1,000; a
document is at most 16 MiB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError

SERVER_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class QueryLimits:
    """Limits applied to every operation of a scoped database."""

    max_query_depth: int = 10
    max_pipeline_stages: int = 50
    max_regex_length: int = 1000
    default_max_time_ms: int = 30_000
    max_time_ms: int = 300_000
    max_result_docs: int = 10_000
    max_batch_size: int = 1_000
    max_document_bytes: int = SERVER_MAX_DOCUMENT_BYTES

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(
                    f"QueryLimits.{f.name} must be a positive integer, got {value!r}",
                    context={"option": f.name},
                )
        if self.default_max_time_ms > self.max_time_ms:
            raise ConfigurationError(
                "QueryLimits.default_max_time_ms cannot exceed max_time_ms",
                context={"option": "default_max_time_ms"},
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> QueryLimits:
        """Build limits from a mapping (e.g. Flask config), naming any unknown key."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown query limit(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                context={"option": unknown[0]},
            )
        return cls(**values)

    def cap_time(self, max_time_ms: int | None) -> int:
        """The ``maxTimeMS`` to send: the default when unset, never above the cap."""
        if max_time_ms is None:
            return self.default_max_time_ms
        return max(1, min(int(max_time_ms), self.max_time_ms))

    def cap_batch(self, batch_size: int | None) -> int:
        if not batch_size:
            return self.max_batch_size
        return max(1, min(int(batch_size), self.max_batch_size))
