"""Per-app services: ONE cache for everything an engine derives from an app's manifest.

An app's auth service, its AI services (LLM, embeddings, memory), its metrics settings and
what the Flask extension derives (CORS policy, websocket endpoints) are each built once per
*state of the app* — the registry record's ``(slug, incarnation, version, revision)``
(:attr:`~mdb_sync.catalog.AppRecord.key`) — and reused until that changes. One rule
invalidates them all, right across processes: every write of a record bumps its version
(:mod:`mdb_sync.catalog`), and this process sees the new version as soon as its catalog
reads the record again — within ``registry_refresh_seconds``, or at once after
``engine.reload_apps()`` or a registration made here. Scripts, Celery tasks and Flask
requests of one engine share the entries: one app gets one ``AuthService``.

An entry is ``(slug, kind, extra)`` -> ``(record key, value)``; ``extra`` separates variants
of one kind (the auth options, the environment an AI service reads). A lookup whose record
key differs from the entry's builds the value again and replaces the entry, so an app never
has more than one entry per kind and variant. The cache holds at most ``limit`` entries
(least recently used dropped first; :meth:`MongoDBEngine.cache_info` reports it as
``app_services``), is emptied by ``shutdown()`` and in a forked child (whose services must
build their own HTTP clients).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar, cast

from .catalog import AppCatalog, AppRecord
from .manifest.model import as_manifest

T = TypeVar("T")

#: Entries kept at most (a few per app: auth, AI services, metrics, CORS, websockets).
APP_SERVICES_CACHE_SIZE = 4096

#: What ``metrics_enabled`` answers for an app this process has not read yet.
_DEFAULT_METRICS = True

RecordKey = tuple[str, str, int, int]


def operations_enabled(manifest: Mapping[str, Any] | None) -> bool:
    """Whether an app's database operations are recorded, from its manifest's
    ``observability.metrics`` (``enabled`` / ``collect_operation_metrics``, default true)."""
    return as_manifest(manifest).observability.operation_metrics


class AppServices:
    """The per-app cache of one engine (thread-safe, bounded)."""

    def __init__(self, catalog: AppCatalog, limit: int = APP_SERVICES_CACHE_SIZE) -> None:
        if limit < 1:
            raise ValueError("the app services cache needs a limit of at least 1")
        self._catalog = catalog
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, Hashable], tuple[RecordKey, Any]] = OrderedDict()
        #: ``slug -> (key, options)``: the ``AuthService`` options used when
        #: ``get_auth_service`` is given none (the Flask extension sets its config's, so a
        #: script on its engine gets the very service its requests use).
        self.auth_defaults: Callable[[str], tuple[Hashable, dict[str, Any]]] | None = None
        #: ``slug -> (record, answer)``: :meth:`metrics_enabled`'s last answer for an app and
        #: the catalog record object it came from. It is asked on every scoped operation; while
        #: the catalog holds that same record, an identity check answers (the cache entry stays
        #: the source: this spares each operation the cache's lock, nothing else).
        self._metrics_answers: dict[str, tuple[AppRecord, bool]] = {}

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._entries = OrderedDict()
        self._metrics_answers = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._metrics_answers.clear()

    def cache_info(self) -> dict[str, dict[str, int]]:
        return {"app_services": {"size": len(self._entries), "limit": self.limit}}

    # --- the cache ----------------------------------------------------------------------------

    def get(
        self,
        record: AppRecord | RecordKey,
        kind: str,
        build: Callable[[], T],
        extra: Hashable = (),
    ) -> T:
        """The ``kind`` service of the app state ``record`` (an :class:`AppRecord` or its
        ``key``), built with ``build()`` on the first call for that state.

        The entries hold values of every kind (``Any``); a ``(slug, kind, extra)`` entry
        only ever holds what that kind's ``build`` returns, so it is read back as ``T``."""
        key = record.key if isinstance(record, AppRecord) else record
        entry_key = (key[0], kind, extra)
        entry = self._entries.get(entry_key)
        if entry is not None and entry[0] == key:
            if len(self._entries) > self.limit // 2:
                # Recency matters only when an eviction may come: below half the limit a
                # hit takes no lock (it is on every request's path).
                with self._lock:
                    if entry_key in self._entries:
                        self._entries.move_to_end(entry_key)
            return cast(T, entry[1])
        value = build()
        with self._lock:
            current = self._entries.get(entry_key)
            if current is not None and current[0] == key:
                return cast(T, current[1])  # another thread built it
            self._entries[entry_key] = (key, value)
            self._entries.move_to_end(entry_key)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
        return value

    def forget(self, slug: str) -> None:
        """Drop every entry of ``slug`` (unregistered here)."""
        with self._lock:
            for entry_key in [k for k in self._entries if k[0] == slug]:
                del self._entries[entry_key]
            self._metrics_answers.pop(slug, None)

    # --- typed getters ------------------------------------------------------------------------

    def metrics_enabled(self, slug: str, *, cached_only: bool = False) -> bool:
        """Whether ``slug``'s operations are recorded (its manifest's
        ``observability.metrics``). With ``cached_only`` — inside a pymongo listener — never
        a query: an app not in the catalog's cache counts as enabled."""
        record = self._catalog.cached(slug) if cached_only else self._catalog.get(slug)
        if record is None:
            return _DEFAULT_METRICS
        answer = self._metrics_answers.get(slug)
        if answer is not None and answer[0] is record:
            return answer[1]
        manifest = record.manifest
        enabled = self.get(record, "metrics", lambda: operations_enabled(manifest))
        answers = self._metrics_answers
        if len(answers) >= self.limit:  # bounded like the cache (apps, not operations)
            answers.clear()
        answers[slug] = (record, enabled)
        return enabled

    def metrics_check(self, slug: str) -> Callable[[], bool]:
        """``metrics_enabled(slug, cached_only=True)`` as a call of no arguments, for every
        scoped operation: while the catalog holds the record the last answer came from, one
        dictionary read and an identity check answer it (no frame of ``metrics_enabled``)."""
        cached = self._catalog.cached

        def enabled() -> bool:
            record = cached(slug)
            answer = self._metrics_answers.get(slug)
            if answer is not None and answer[0] is record:
                return answer[1]
            return self.metrics_enabled(slug, cached_only=True)

        return enabled

    def auth_service(self, record: AppRecord, build: Callable[[], T], options: Any = ()) -> T:
        """The auth service of app state ``record`` for ``options`` (hashable: see
        :func:`mdb_sync.auth.service.options_key`), built by ``build`` once."""
        return self.get(record, "auth", build, options)
