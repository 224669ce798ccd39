"""Declared indexes: make the server's indexes match a manifest's ``managed_indexes``.

Reconciliation, per collection: list the existing indexes (one ``listIndexes``), compare
each declared index with the one of the same name (keys and the options that matter),
create what is missing in one ``createIndexes`` command, and report the rest. An index of
the same name with other keys or options is a **conflict**: reported, never a crashed
registration, and replaced only when asked (``replace=True``; hidden/TTL changes are made
in place with ``collMod``). A re-registration that changes nothing sends no index-creation
command at all. An index type the server cannot build (text or hashed on the embedded
server, Atlas Search anywhere but Atlas) is reported ``not_supported`` and logged.

Each index yields one outcome ``{"collection", "name", "type", "status", "error"?}``, with
status ``created``, ``exists``, ``replaced``, ``pending`` (Atlas index still building, or
a background build not done yet: :mod:`.background`),
``conflict``, ``not_supported``, ``failed``, or ``exact_fallback``: a ``vectorSearch`` index
on a server without Atlas Search, which ``vector_search()`` serves with its exact search (and
the text half of a ``hybrid`` index, which ``hybrid_search()`` serves with its keyword
fallback) — one INFO line, and the app stays healthy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo.errors import OperationFailure, PyMongoError

from ..context import current_engine
from ..deprecation import renamed_parameters
from ..exceptions import ScopeError
from ..scoping.names import physical_name
from ..signals import index_created, index_failed
from .spec import IndexSpec, SearchIndexSpec, plan_indexes

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

CREATED, EXISTS, REPLACED, PENDING = "created", "exists", "replaced", "pending"
CONFLICT, NOT_SUPPORTED, FAILED = "conflict", "not_supported", "failed"
#: A vector index on a server without Atlas Search: ``vector_search()`` serves it with its
#: exact k-NN search, so the app is fully served (healthy), only not by an index.
EXACT_FALLBACK = "exact_fallback"
KEYWORD_FALLBACK_NOTE = (
    "this server has no Atlas Search; hybrid_search() scores keywords with its exact BM25 "
    "fallback (computed by the server over the app's documents; use MongoDB Atlas for "
    "full-text search at scale)"
)
EXACT_FALLBACK_NOTE = (
    "this server has no Atlas Vector Search; vector_search() answers with its exact k-NN "
    "search (every matching document is scored: fine for thousands of vectors, use MongoDB "
    "Atlas for millions)"
)
#: Outcomes that make an app's health ``degraded``.
PROBLEM_STATUSES = frozenset({CONFLICT, NOT_SUPPORTED, FAILED})
#: How long registration waits for a new Atlas Search index to become queryable.
DEFAULT_SEARCH_TIMEOUT = 60.0
_POLL_INTERVAL = 2.0

_CONFLICT_CODES = {85, 86}  # IndexOptionsConflict, IndexKeySpecsConflict
_UNSUPPORTED_CODES = {115, 31082, 6047401}  # CommandNotSupported, SearchNotEnabled, ...
_UNSUPPORTED_WORDS = ("not supported", "unsupported", "not available", "requires additional")


def error_message(exc: BaseException) -> str:
    if isinstance(exc, OperationFailure):
        return str((exc.details or {}).get("errmsg") or exc)
    return str(exc)


def classify(exc: BaseException) -> str:
    """The outcome status for a server error: ``conflict``, ``not_supported`` or ``failed``."""
    code = getattr(exc, "code", None)
    if code in _CONFLICT_CODES:
        return CONFLICT
    text = error_message(exc).lower()
    if code in _UNSUPPORTED_CODES or any(word in text for word in _UNSUPPORTED_WORDS):
        return NOT_SUPPORTED
    return FAILED


# --- comparing a declared index with an existing one -------------------------------------------


def plain(value: Any) -> Any:
    """``value`` with SON/dicts as plain dicts and numbers comparable (1 == 1.0)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def server_keys(keys: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``keys`` as ``listIndexes`` reports them: text fields become ``_fts``/``_ftsx``."""
    out: list[tuple[str, Any]] = []
    for name, direction in keys:
        if direction == "text":
            if ("_fts", "text") not in out:
                out += [("_fts", "text"), ("_ftsx", 1)]
            continue
        out.append((name, direction))
    return [(k, plain(v)) for k, v in out]


def subset(wanted: Any, actual: Any) -> bool:
    """Every key of ``wanted`` has the same value in ``actual`` (servers add defaults)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and subset(v, actual[k]) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(wanted) == len(actual)
            and all(subset(w, a) for w, a in zip(wanted, actual, strict=True))
        )
    return bool(plain(wanted) == plain(actual))


def differences(spec: IndexSpec, info: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What differs between ``spec`` and an existing index: ``{what: (declared, existing)}``."""
    diff: dict[str, tuple[Any, Any]] = {}
    wanted_keys = server_keys(spec.keys)
    actual_keys = [(k, plain(v)) for k, v in info.get("key", [])]
    if wanted_keys != actual_keys:
        diff["keys"] = (spec.keys, list(info.get("key", [])))
    options = spec.options
    for flag in ("unique", "sparse", "hidden"):
        if bool(options.get(flag, False)) != bool(info.get(flag, False)):
            diff[flag] = (options.get(flag, False), info.get(flag, False))
    for exact in ("expireAfterSeconds", "partialFilterExpression", "wildcardProjection"):
        if plain(options.get(exact)) != plain(info.get(exact)):
            diff[exact] = (options.get(exact), info.get(exact))
    if "collation" in options or "collation" in info:
        wanted = options.get("collation")
        actual = info.get("collation")
        if wanted is None or actual is None or not subset(wanted, actual):
            diff["collation"] = (wanted, actual)
    for optional in (
        "default_language",
        "language_override",
        "textIndexVersion",
        "2dsphereIndexVersion",
        "bits",
        "min",
        "max",
    ):
        if optional in options and plain(options[optional]) != plain(info.get(optional)):
            diff[optional] = (options[optional], info.get(optional))
    if spec.type == "text" and "weights" in info:
        weights = {k: options.get("weights", {}).get(k, 1) for k, v in spec.keys if v == "text"}
        if plain(weights) != plain(info["weights"]):
            diff["weights"] = (weights, info["weights"])
    return diff


def _describe_diff(diff: Mapping[str, tuple[Any, Any]]) -> str:
    parts = [f"{what}: declared {d!r}, existing {e!r}" for what, (d, e) in diff.items()]
    return "an index with this name exists with different " + "; ".join(parts)


# --- reconciliation ------------------------------------------------------------------------------


def _outcome(spec: Any, status: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
    outcome: dict[str, Any] = spec.describe()
    if isinstance(spec, IndexSpec):
        outcome["keys"] = [[k, v] for k, v in spec.keys]
    outcome["status"] = status
    if error:
        outcome["error"] = error
    outcome.update(extra)
    return outcome


class _Reporter:
    """Sends the signals and logs of one reconciliation."""

    def __init__(self, engine: MongoDBEngine, slug: str) -> None:
        self.engine = engine
        self.slug = slug

    def report(self, outcome: dict[str, Any]) -> dict[str, Any]:
        status = outcome["status"]
        where = f"{self.slug}.{outcome['collection']}"
        if status in (CREATED, REPLACED):
            log.info("index %r %s on %s", outcome["name"], status, where)
            index_created.send(
                self.engine,
                slug=self.slug,
                collection=outcome["collection"],
                name=outcome["name"],
                keys=outcome.get("keys"),
                auto=False,
            )
            self.engine.metrics.increment("index.created", slug=self.slug)
        elif status == EXACT_FALLBACK:
            keyword = outcome.get("served_by") == "keyword"
            log.info(
                "%s index %r on %s is served by the %s (no Atlas Search on this server)",
                "text" if keyword else "vector",
                outcome["name"],
                where,
                "keyword fallback of hybrid_search()" if keyword else "exact search",
            )
            self.engine.metrics.increment("index.exact_fallback", slug=self.slug)
        elif status in PROBLEM_STATUSES:
            label = "IndexNotSupported" if status == NOT_SUPPORTED else f"index {status}"
            log.warning(
                "%s: %s index %r on %s: %s",
                label,
                outcome["type"],
                outcome["name"],
                where,
                outcome.get("error"),
            )
            index_failed.send(
                self.engine,
                slug=self.slug,
                collection=outcome["collection"],
                name=outcome["name"],
                error=outcome.get("error"),
                status=status,
            )
            self.engine.metrics.increment(f"index.{status}", slug=self.slug)
        return outcome


def ensure_declared_indexes(
    engine: MongoDBEngine,
    slug: str,
    managed: Mapping[str, list[Mapping[str, Any]]],
    *,
    replace: bool = False,
    search_timeout: float | None = DEFAULT_SEARCH_TIMEOUT,
    previous: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Reconcile the declared indexes of ``slug`` (normalized ``managed_indexes``) with the
    server; return one outcome per index. Never raises for an index the server refuses.

    ``previous`` are the outcomes of the last registration: a regular index this server
    reported ``not_supported`` with the same keys is not sent again (``mdb indexes sync``,
    which passes none, retries it).
    """
    reporter = _Reporter(engine, slug)
    unsupported = {
        (o.get("collection"), o.get("name"), repr(o.get("keys")))
        for o in previous or []
        if o.get("status") == NOT_SUPPORTED and o.get("keys") is not None
    }
    outcomes: list[dict[str, Any]] = []
    for collection, definitions in managed.items():
        raw = engine.storage.collection(physical_name(slug, collection))
        specs = [spec for d in definitions for spec in plan_indexes(collection, d)]
        done: list[dict[str, Any]] = []
        keyed = []
        for spec in specs:
            if not isinstance(spec, IndexSpec):
                continue
            known = (collection, spec.name, repr([[k, v] for k, v in spec.keys]))
            if known in unsupported:
                done.append(_outcome(spec, NOT_SUPPORTED, _previous_error(previous, spec)))
            else:
                keyed.append(spec)
        search = [s for s in specs if isinstance(s, SearchIndexSpec)]
        if keyed:
            done += reconcile_keyed(raw, keyed, replace=replace, reporter=reporter)
        if search:
            done += reconcile_search(
                raw, search, replace=replace, timeout=search_timeout, reporter=reporter
            )
        order = {spec.name: i for i, spec in enumerate(specs)}
        outcomes += sorted(done, key=lambda o: order[o["name"]])
    return outcomes


def pending_outcomes(managed: Mapping[str, list[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The outcomes of ``managed`` (normalized ``managed_indexes``) while a background build
    has not reconciled them yet: every index ``pending``, in the order
    :func:`ensure_declared_indexes` reports them."""
    return [
        _outcome(spec, PENDING)
        for collection, definitions in managed.items()
        for definition in definitions
        for spec in plan_indexes(collection, definition)
    ]


def _previous_error(previous: Any, spec: IndexSpec) -> str | None:
    for o in previous or []:
        if o.get("collection") == spec.collection and o.get("name") == spec.name:
            error = o.get("error")
            return error if isinstance(error, str) else None
    return None


def reconcile_keyed(
    raw: Collection[Any], specs: list[IndexSpec], *, replace: bool, reporter: _Reporter
) -> list[dict[str, Any]]:
    """Reconcile regular indexes on one physical collection."""
    try:
        existing = raw.index_information()
    except PyMongoError as exc:
        return [reporter.report(_outcome(s, FAILED, error_message(exc))) for s in specs]
    by_keys = {repr([(k, plain(v)) for k, v in i.get("key", [])]): n for n, i in existing.items()}
    results: dict[int, dict[str, Any]] = {}
    to_create: list[int] = []
    for i, spec in enumerate(specs):
        info = existing.get(spec.name)
        if info is None:
            other = by_keys.get(repr(server_keys(spec.keys)))
            if other is not None and not differences(spec, existing[other]):
                # The same index under another name (created by hand, or renamed in the
                # manifest): the server would refuse a second copy, so it is served.
                results[i] = _outcome(spec, EXISTS, existing_name=other)
            else:
                to_create.append(i)
            continue
        diff = differences(spec, info)
        if not diff:
            results[i] = _outcome(spec, EXISTS)
        elif replace:
            results[i] = _replace(raw, spec, info, diff)
        else:
            results[i] = _outcome(spec, CONFLICT, _describe_diff(diff))
    if to_create:
        batch = [specs[i] for i in to_create]
        try:
            raw.create_indexes([s.model() for s in batch])
            for i in to_create:
                results[i] = _outcome(specs[i], CREATED)
        except PyMongoError:
            # One bad spec fails the whole command (or, on some servers, keeps the earlier
            # ones): build them one at a time to attribute each error to its index.
            for i in to_create:
                results[i] = _create_one(raw, specs[i], replace)
    return [reporter.report(results[i]) for i in range(len(specs))]


def _create_one(raw: Collection[Any], spec: IndexSpec, replace: bool) -> dict[str, Any]:
    try:
        raw.create_indexes([spec.model()])
        return _outcome(spec, CREATED)
    except PyMongoError as exc:
        status = classify(exc)
        if status == CONFLICT:
            same = _same_keys(raw, spec)
            if same is not None and not differences(spec, same[1]):
                return _outcome(spec, EXISTS, existing_name=same[0])
            if replace and same is not None:
                return _replace(raw, spec, same[1], differences(spec, same[1]), same[0])
        return _outcome(spec, status, error_message(exc))


def _same_keys(raw: Collection[Any], spec: IndexSpec) -> tuple[str, dict[str, Any]] | None:
    wanted = server_keys(spec.keys)
    for name, info in raw.index_information().items():
        if [(k, plain(v)) for k, v in info.get("key", [])] == wanted:
            return name, info
    return None


def _replace(
    raw: Collection[Any],
    spec: IndexSpec,
    info: Mapping[str, Any],
    diff: Mapping[str, Any],
    existing_name: str | None = None,
) -> dict[str, Any]:
    name = existing_name or spec.name
    if name == spec.name and set(diff) <= {"hidden", "expireAfterSeconds"}:
        change: dict[str, Any] = {"name": name}
        for key in diff:
            change[key] = spec.options.get(key, False if key == "hidden" else None)
        if change.get("expireAfterSeconds") is None and "expireAfterSeconds" in diff:
            return _outcome(spec, CONFLICT, "cannot remove TTL in place: " + _describe_diff(diff))
        try:
            raw.database.command("collMod", raw.name, index=change)
            return _outcome(spec, REPLACED, how="collMod")
        except PyMongoError as exc:
            return _outcome(spec, classify(exc), error_message(exc))
    try:
        raw.drop_index(name)
    except PyMongoError as exc:
        return _outcome(spec, FAILED, f"could not drop the conflicting index: {error_message(exc)}")
    try:
        raw.create_indexes([spec.model()])
        return _outcome(spec, REPLACED, how="rebuilt")
    except PyMongoError as exc:
        _restore(raw, name, info)
        return _outcome(spec, classify(exc), error_message(exc))


def _restore(raw: Collection[Any], name: str, info: Mapping[str, Any]) -> None:
    """Best effort: put back an index dropped for a replacement that then failed."""
    options = {k: v for k, v in info.items() if k not in ("key", "v", "ns")}
    try:
        raw.create_index(list(info["key"]), name=name, **options)
    except PyMongoError:
        log.error("index %r on %s was dropped and could not be restored", name, raw.name)


# --- Atlas Search and Vector Search --------------------------------------------------------------


def reconcile_search(
    raw: Collection[Any],
    specs: list[SearchIndexSpec],
    *,
    replace: bool,
    timeout: float | None,
    reporter: _Reporter,
) -> list[dict[str, Any]]:
    """Reconcile Atlas Search / Vector Search indexes on one physical collection, waiting up
    to ``timeout`` seconds for new ones to become queryable."""
    try:
        existing = {d["name"]: d for d in raw.list_search_indexes()}
    except PyMongoError as exc:
        status = classify(exc)
        message = error_message(exc)
        if status == NOT_SUPPORTED:
            message = f"this server has no Atlas Search (use MongoDB Atlas): {message}"
        return [reporter.report(_unbuilt(s, status, message)) for s in specs]
    results: dict[str, dict[str, Any]] = {}
    waiting: list[SearchIndexSpec] = []
    for spec in specs:
        current = existing.get(spec.name)
        if current is None:
            try:
                raw.create_search_index(spec.model())
                waiting.append(spec)
            except PyMongoError as exc:
                results[spec.name] = _unbuilt(spec, classify(exc), error_message(exc))
            continue
        definition = current.get("latestDefinition") or current.get("definition") or {}
        same = current.get("type", "search") == spec.kind and subset(spec.definition, definition)
        if same:
            ready = current.get("queryable", False)
            results[spec.name] = _outcome(spec, EXISTS if ready else PENDING)
        elif replace:
            try:
                raw.update_search_index(spec.name, spec.definition)
                waiting.append(spec)
            except PyMongoError as exc:
                results[spec.name] = _outcome(spec, classify(exc), error_message(exc))
        else:
            results[spec.name] = _outcome(
                spec, CONFLICT, "a search index with this name has a different definition"
            )
    if waiting:
        states = wait_for_search_indexes(raw, [s.name for s in waiting], timeout or 0)
        for spec in waiting:
            state = states.get(spec.name, {})
            done = REPLACED if spec.name in existing else CREATED
            if state.get("status") == "FAILED":
                results[spec.name] = _outcome(spec, FAILED, state.get("message") or "build failed")
            else:
                results[spec.name] = _outcome(spec, done if state.get("queryable") else PENDING)
    return [reporter.report(results[s.name]) for s in specs]


def _unbuilt(spec: SearchIndexSpec, status: str, message: str) -> dict[str, Any]:
    """The outcome of a search index the server could not build: a vector index the server
    cannot build at all is served by the exact search (``exact_fallback``, not a problem);
    a full-text search index has no fallback (``not_supported``)."""
    if status == NOT_SUPPORTED and spec.kind == "vectorSearch":
        return _outcome(spec, EXACT_FALLBACK, served_by="exact", note=EXACT_FALLBACK_NOTE)
    if status == NOT_SUPPORTED and spec.type == "hybrid":
        return _outcome(spec, EXACT_FALLBACK, served_by="keyword", note=KEYWORD_FALLBACK_NOTE)
    return _outcome(spec, status, message)


def wait_for_search_indexes(
    raw: Collection[Any], names: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Poll ``list_search_indexes`` until every index in ``names`` is queryable (or failed),
    for at most ``timeout`` seconds; return the last state seen of each."""
    deadline = time.monotonic() + max(0.0, timeout)
    states: dict[str, dict[str, Any]] = {}
    while True:
        try:
            states = {d["name"]: dict(d) for d in raw.list_search_indexes() if d["name"] in names}
        except PyMongoError as exc:
            log.warning("polling search indexes of %s failed: %s", raw.name, exc)
            return states
        pending = [
            n
            for n in names
            if not states.get(n, {}).get("queryable")
            and states.get(n, {}).get("status") != "FAILED"
        ]
        if not pending or time.monotonic() >= deadline:
            return states
        time.sleep(min(_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


@renamed_parameters(app_slug="slug")
def run_index_creation_for_collection(
    collection: Any,
    indexes: list[Mapping[str, Any]],
    slug: str | None = None,
    *,
    engine: MongoDBEngine | None = None,
) -> list[dict[str, Any]]:
    """Create ``indexes`` (``managed_indexes`` definitions, validated as in a manifest) on
    the scoped ``collection`` now, and return one outcome per index — the predecessor's manual
    path; registering a manifest does this for its declared indexes. ``slug`` must be the
    collection's own app; ``engine`` defaults to the process's engine. Validating the
    definitions is the manifest's business, hence the registration workflow's
    (:meth:`~mdb_sync.registration.Registration.create_collection_indexes`)."""
    database = getattr(collection, "database", None)
    owner = getattr(database, "app_slug", None)
    if owner is None:
        raise TypeError("collection must be a scoped collection (engine.get_scoped_db(...).name)")
    if slug is not None and slug != owner:
        raise ScopeError(
            f"collection {collection.full_name!r} belongs to app {owner!r}, not {slug!r}",
            context={"app": slug},
        )
    engine = engine if engine is not None else current_engine(owner)
    return engine.registration.create_collection_indexes(owner, collection.name, indexes)
