"""Aggregation pipelines, rewritten so that no stage can read or write outside the app's scopes.

The rules, applied recursively (``$lookup`` and ``$unionWith`` sub-pipelines, ``$facet``
branches, ``$rankFusion`` inputs — at any nesting):

* The documents a pipeline starts from are the collection's scoped documents: a
  ``{"$match": {"app_id": ...}}`` goes first, or — where a stage must come first — the scope is
  injected into that stage (``$geoNear.query``, ``$vectorSearch.filter``, ``$search`` /
  ``$searchMeta`` operators). With several read scopes, each scope's physical collection is
  unioned in (``$unionWith`` with its own ``$match``), so the pipeline sees one collection.
* Every stage that names another collection (``$lookup``, ``$unionWith``, ``$graphLookup``)
  resolves the *logical* name to this app's (and its read scopes') physical collections, each
  filtered by its ``app_id``.
* ``$out`` and ``$merge`` write only into the app's own collections; every output document
  gets the write scope's ``app_id``; ``$merge`` never changes a matched document that belongs to
  another app.
* Stages that read server state or fabricate documents (``$documents``, ``$currentOp``,
  ``$changeStream``, ...) are refused; so is any stage we do not know (fail closed).
* The query guards (no server-side JavaScript, bounded depth and regexes) apply to every stage,
  and the total number of stages the caller wrote is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..exceptions import QueryValidationError, ScopeError
from .guards import PLAIN_TYPES, check_query
from .limits import QueryLimits
from .updates import scope_filter

APP_ID = "app_id"
# A variable name for converted $lookup joins (user variable names start with a lowercase letter).
_LOCAL_VAR = "mdbjoinlocal"

# Stages that read other collections or write: rewritten below.
_FOREIGN = {"$lookup", "$unionWith", "$graphLookup", "$out", "$merge", "$facet"}
# Stages that must be first and take the scope inside them.
_FIRST = {"$geoNear", "$vectorSearch", "$search", "$searchMeta"}
# Stages that describe the collection itself rather than its documents (first stage only).
_METADATA = {"$collStats", "$indexStats"}
_FUSION = {"$rankFusion", "$scoreFusion"}
# Stages with no foreign reference: checked by the guards only.
_PLAIN = {
    "$addFields", "$bucket", "$bucketAuto", "$count", "$densify", "$fill", "$group", "$limit",
    "$match", "$project", "$redact", "$replaceRoot", "$replaceWith", "$sample", "$set",
    "$setWindowFields", "$skip", "$sort", "$sortByCount", "$unset", "$unwind",
}  # fmt: skip
_REFUSED = {
    "$documents": "it fabricates documents outside any collection",
    "$changeStream": "use watch() instead",
    "$changeStreamSplitLargeEvent": "use watch() instead",
    "$currentOp": "it reads server state",
    "$listSessions": "it reads server state",
    "$listLocalSessions": "it reads server state",
    "$planCacheStats": "it reads server state",
    "$listSearchIndexes": "it reads server state",
    "$listSampledQueries": "it reads server state",
    "$shardedDataDistribution": "it reads server state",
    "$querySettings": "it reads server state",
    "$listCatalog": "it reads server state",
    "$listClusterCatalog": "it reads server state",
    "$queryStats": "it reads server state",
}
_SEARCH_OPTIONS = {
    "index", "highlight", "count", "returnStoredSource", "scoreDetails", "sort", "tracking",
    "concurrent", "searchAfter", "searchBefore", "returnScope",
}  # fmt: skip

#: (physical collection, app_id) pairs that make up one logical collection for the reader.
Sources = list[tuple[str, str]]


class PipelineScoper:
    """Rewrites pipelines for one scoped collection.

    :param resolve: logical collection name -> the sources a *read* of it covers (own first).
    :param own: logical collection name -> this app's physical collection (for writes).
    :param write_scope: the ``app_id`` written by ``$out``/``$merge``.
    """

    def __init__(
        self,
        resolve: Callable[[str], Sources],
        own: Callable[[str], str],
        write_scope: str,
        limits: QueryLimits,
        db_name: str,
    ) -> None:
        self._resolve = resolve
        self._own = own
        self._write_scope = write_scope
        self._db_name = db_name
        self._limits = limits
        self._stages = 0

    # --- entry points -------------------------------------------------------------------------

    def scope(self, pipeline: Any, sources: Sources) -> list[dict[str, Any]]:
        """The scoped version of ``pipeline`` run on a collection made of ``sources``."""
        self._stages = 0
        self.replaced: list[str] = []
        return self._source_pipeline(self._counted(pipeline, "pipeline"), sources, top=True)

    # --- helpers ------------------------------------------------------------------------------

    def _counted(self, pipeline: Any, where: str) -> list[Any]:
        """``pipeline`` as a list of (unchecked) stages, its length counted against the bound
        on stages — before any of it is rewritten, so nested pipelines count as they come. A
        copy: stages the caller's thread appends meanwhile are neither counted nor sent."""
        if type(pipeline) is not list and (
            isinstance(pipeline, Mapping) or not isinstance(pipeline, (list, tuple))
        ):
            raise QueryValidationError(f"{where} must be a list of stages")
        stages = list(pipeline)
        self._stages += len(stages)
        if self._stages > self._limits.max_pipeline_stages:
            raise QueryValidationError(
                f"pipeline has more than {self._limits.max_pipeline_stages} stages "
                "(counting nested pipelines)",
                context={"limit": self._limits.max_pipeline_stages},
            )
        return stages

    def _validate(self, pipeline: Any, where: str) -> list[tuple[str, Any]]:
        return [_split(stage, where) for stage in self._counted(pipeline, where)]

    def _sources_prefix(self, sources: Sources) -> list[dict[str, Any]]:
        """Stages that turn ``sources[0]``'s collection into the union of all scoped sources."""
        prefix: list[dict[str, Any]] = [{"$match": {APP_ID: sources[0][1]}}]
        for physical, scope in sources[1:]:
            prefix.append(
                {"$unionWith": {"coll": physical, "pipeline": [{"$match": {APP_ID: scope}}]}}
            )
        return prefix

    def _source_pipeline(
        self, stages: list[Any], sources: Sources, top: bool = False, where: str = "pipeline"
    ) -> list[dict[str, Any]]:
        """Scope a pipeline (its ``stages``, counted) that reads ``sources`` (a collection's
        aggregate, or the pipeline of a ``$lookup``/``$unionWith`` on ``sources``)."""
        if not stages:
            return self._sources_prefix(sources)
        first, body = _split(stages[0], where)
        if first in _FIRST or first in _FUSION:
            if len(sources) != 1:
                raise ScopeError(
                    f"{first} cannot run over several read scopes; query one app at a time"
                )
            head = self._first_stage(first, body, sources[0][1])
            return head + self._rewrite(stages[1:], where)
        if first in _METADATA:
            if not top:
                raise QueryValidationError(f"{first} is only allowed as the first stage")
            check_query(body, self._limits, first)
            return [{first: body}, *self._rewrite(stages[1:], where)]
        if (
            first == "$match"
            and len(sources) == 1
            and (type(body) is dict or isinstance(body, Mapping))
        ):
            # Fold the scope into the caller's first $match: one stage, index-friendly.
            check_query(body, self._limits, "$match")
            return [
                {"$match": scope_filter(body, sources[0][1])},
                *self._rewrite(stages[1:], where),
            ]
        return self._sources_prefix(sources) + self._rewrite(stages, where)

    def _rewrite(self, stages: list[Any], where: str) -> list[dict[str, Any]]:
        """Each of ``stages`` (counted, not yet checked) validated and rewritten, in one pass."""
        out: list[dict[str, Any]] = []
        limits = self._limits
        for stage in stages:
            if type(stage) is dict and len(stage) == 1:
                ((op, body),) = stage.items()
                if op in _PLAIN:  # the commonest stages, in few steps
                    if type(body) not in PLAIN_TYPES:  # {"$limit": 10} holds nothing to check
                        check_query(body, limits, op)
                    # A stage of our own, never the caller's dict: its operator is the one
                    # checked even if the caller's thread swaps it for a $lookup meanwhile.
                    out.append({op: body})
                    continue
            else:
                op, body = _split(stage, where)
            if op in _REFUSED:
                raise QueryValidationError(
                    f"{op} is not allowed in a scoped pipeline: {_REFUSED[op]}",
                    context={"stage": op},
                )
            if op in _PLAIN:  # a stage of a Mapping type
                check_query(body, limits, op)
                out.append({op: body})
            elif op == "$lookup":
                out.append({op: self._lookup(body)})
            elif op == "$unionWith":
                out.append({op: self._union_with(body)})
            elif op == "$graphLookup":
                out.extend(self._graph_lookup(body))
            elif op == "$facet":
                out.append({op: self._facet(body)})
            elif op == "$out":
                out.extend(self._out(body))
            elif op == "$merge":
                out.extend(self._merge(body))
            elif op in _FIRST or op in _FUSION or op in _METADATA:
                raise QueryValidationError(f"{op} is only allowed as the first stage")
            elif (type(op) is not str and not isinstance(op, str)) or op[:1] != "$":
                raise QueryValidationError(f"unknown {where} stage {op!r}")
            else:
                raise QueryValidationError(
                    f"unknown or unsupported pipeline stage {op}", context={"stage": op}
                )
        return out

    def _nested(self, pipeline: Any, where: str) -> list[Any]:
        return self._counted(pipeline if pipeline is not None else [], where)

    def _collection(self, body: Mapping[str, Any], key: str, stage: str) -> str:
        name = body.get(key)
        if not isinstance(name, str):
            raise QueryValidationError(
                f"{stage}.{key} must name a collection of this app (a string); other databases "
                "and collection-less forms are not available in a scoped pipeline",
                context={"stage": stage},
            )
        return name

    # --- stages that read other collections ---------------------------------------------------

    def _lookup(self, body: object) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise QueryValidationError("$lookup takes a document")
        body = dict(body)
        sources = self._resolve(self._collection(body, "from", "$lookup"))
        if "let" in body:
            check_query(body["let"], self._limits, "$lookup.let")
        user = self._nested(body.get("pipeline"), "$lookup.pipeline")
        body["from"] = sources[0][0]
        if len(sources) > 1 and ("localField" in body or "foreignField" in body):
            # The equality join of localField/foreignField applies only to the `from`
            # collection's documents, not to unioned ones: express it in the pipeline instead.
            local, foreign = body.pop("localField", None), body.pop("foreignField", None)
            if not isinstance(local, str) or not isinstance(foreign, str):
                raise QueryValidationError("$lookup needs both localField and foreignField")
            let = dict(body.get("let") or {})
            if _LOCAL_VAR in let:
                raise QueryValidationError(f"$lookup.let may not define {_LOCAL_VAR!r}")
            let[_LOCAL_VAR] = f"${local}"
            body["let"] = let
            join = {"$match": {"$expr": _set_overlap(f"$${_LOCAL_VAR}", f"${foreign}")}}
            body["pipeline"] = [
                *self._sources_prefix(sources),
                join,
                *self._rewrite(user, "$lookup.pipeline"),
            ]
        else:
            body["pipeline"] = self._source_pipeline(user, sources, where="$lookup.pipeline")
        return body

    def _union_with(self, body: object) -> dict[str, Any]:
        if isinstance(body, str):
            body = {"coll": body}
        if not isinstance(body, Mapping):
            raise QueryValidationError("$unionWith takes a collection name or a document")
        body = dict(body)
        sources = self._resolve(self._collection(body, "coll", "$unionWith"))
        user = self._nested(body.get("pipeline"), "$unionWith.pipeline")
        body["coll"] = sources[0][0]
        body["pipeline"] = self._source_pipeline(user, sources, where="$unionWith.pipeline")
        return body

    def _graph_lookup(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, Mapping):
            raise QueryValidationError("$graphLookup takes a document")
        body = dict(body)
        sources = self._resolve(self._collection(body, "from", "$graphLookup"))
        if len(sources) != 1:
            raise ScopeError("$graphLookup cannot traverse several read scopes at once")
        check_query({k: v for k, v in body.items() if k != "from"}, self._limits, "$graphLookup")
        physical, scope = sources[0]
        body["from"] = physical
        restrict = body.get("restrictSearchWithMatch")
        body["restrictSearchWithMatch"] = (
            scope_filter(restrict, scope) if restrict else {APP_ID: scope}
        )
        # Not every server honours restrictSearchWithMatch (the embedded one ignores it):
        # filter the result array by scope as well, so other apps' documents never come out.
        found = body.get("as")
        if not isinstance(found, str) or not found or found.startswith("$"):
            raise QueryValidationError("$graphLookup.as must be a field name")
        keep = {"$filter": {"input": "$" + found, "cond": {"$eq": ["$$this." + APP_ID, scope]}}}
        return [{"$graphLookup": body}, {"$set": {found: keep}}]

    def _facet(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise QueryValidationError("$facet takes a document of sub-pipelines")
        return {
            name: self._rewrite(self._nested(branch, f"$facet.{name}"), f"$facet.{name}")
            for name, branch in body.items()
        }

    # --- stages that write --------------------------------------------------------------------

    def _tag_output(self) -> dict[str, Any]:
        return {"$set": {APP_ID: self._write_scope}}

    def _out(self, body: Any) -> list[dict[str, Any]]:
        if isinstance(body, str):
            target: dict[str, Any] = {"coll": body}
        elif isinstance(body, Mapping):
            target = dict(body)
            if set(target) - {"coll", "db", "timeseries"}:
                raise QueryValidationError("$out accepts coll, db and timeseries")
        else:
            raise QueryValidationError("$out takes a collection name or a document")
        self._same_database(target, "$out")
        physical = self._own(self._collection(target, "coll", "$out"))
        self.replaced.append(physical)
        if "timeseries" in target:
            check_query(target["timeseries"], self._limits, "$out.timeseries")
            out_body: Any = {
                "db": self._db_name,
                "coll": physical,
                "timeseries": target["timeseries"],
            }
        else:
            out_body = physical
        return [self._tag_output(), {"$out": out_body}]

    def _merge(self, body: Any) -> list[dict[str, Any]]:
        if isinstance(body, str):
            body = {"into": body}
        if not isinstance(body, Mapping):
            raise QueryValidationError("$merge takes a collection name or a document")
        body = dict(body)
        into = body.get("into")
        if isinstance(into, Mapping):
            self._same_database(into, "$merge.into")
            into = self._collection(into, "coll", "$merge.into")
        if not isinstance(into, str):
            raise QueryValidationError("$merge.into must name a collection of this app")
        body["into"] = self._own(into)
        for key in ("on", "let"):
            if key in body:
                check_query(body[key], self._limits, f"$merge.{key}")
        body["whenMatched"] = self._when_matched(body.get("whenMatched", "merge"))
        if body.get("whenNotMatched", "insert") not in ("insert", "discard", "fail"):
            raise QueryValidationError("$merge.whenNotMatched must be insert, discard or fail")
        return [self._tag_output(), {"$merge": body}]

    def _when_matched(self, mode: Any) -> Any:
        """A ``whenMatched`` that leaves documents of other apps exactly as they are."""
        scope = self._write_scope
        owned = {"$eq": ["$" + APP_ID, scope]}
        if mode in ("keepExisting", "fail"):
            return mode
        if mode == "replace":
            new_doc: Any = {"$mergeObjects": ["$$new", {APP_ID: scope}]}
        elif mode == "merge":
            new_doc = {"$mergeObjects": ["$$ROOT", "$$new", {APP_ID: scope}]}
        elif isinstance(mode, (list, tuple)):
            user = self._validate(mode, "$merge.whenMatched")
            for op, stage_body in user:
                if op not in (
                    "$addFields",
                    "$set",
                    "$project",
                    "$unset",
                    "$replaceRoot",
                    "$replaceWith",
                ):
                    raise QueryValidationError(f"{op} is not allowed in $merge.whenMatched")
                check_query(stage_body, self._limits, "$merge.whenMatched")
            # Remember whether the matched document is ours before the user's stages run, and
            # restore it untouched afterwards if it is not (a missing marker fails the merge).
            return [
                {"$set": {"mdb_scope_owned": owned, "mdb_scope_root": "$$ROOT"}},
                *[{op: b} for op, b in user],
                {
                    "$replaceWith": {
                        "$cond": [
                            {"$eq": ["$mdb_scope_owned", True]},
                            {"$mergeObjects": ["$$ROOT", {APP_ID: scope}]},
                            "$mdb_scope_root",
                        ]
                    }
                },
                {"$unset": ["mdb_scope_owned", "mdb_scope_root"]},
            ]
        else:
            raise QueryValidationError(
                "$merge.whenMatched must be replace, merge, keepExisting, fail or a pipeline"
            )
        return [{"$replaceWith": {"$cond": [owned, new_doc, "$$ROOT"]}}]

    def _same_database(self, target: Mapping[str, Any], stage: str) -> None:
        if "db" in target:
            raise ScopeError(
                f"{stage} cannot name a database: a scoped pipeline writes only to this app's "
                "collections",
                context={"stage": stage},
            )

    # --- stages that must come first ------------------------------------------------------------

    def _first_stage(self, op: str, body: Any, scope: str) -> list[dict[str, Any]]:
        if not isinstance(body, Mapping):
            raise QueryValidationError(f"{op} takes a document")
        body = dict(body)
        if op == "$geoNear":
            check_query(body, self._limits, op)
            query = body.get("query")
            body["query"] = scope_filter(query, scope) if query else {APP_ID: scope}
            return [{op: body}]
        if op == "$vectorSearch":
            check_query(body.get("filter") or {}, self._limits, op)
            user_filter = body.get("filter")
            clause = {APP_ID: {"$eq": scope}}
            body["filter"] = {"$and": [user_filter, clause]} if user_filter else clause
            return [{op: body}]
        if op in ("$search", "$searchMeta"):
            check_query(body, self._limits, op)
            scoped = _scope_search(body, scope)
            stages: list[dict[str, Any]] = [{op: scoped}]
            if op == "$search":
                stages.append({"$match": {APP_ID: scope}})
            return stages
        # $rankFusion / $scoreFusion: each input pipeline reads the same scoped collection.
        inputs = body.get("input")
        if not isinstance(inputs, Mapping) or not isinstance(inputs.get("pipelines"), Mapping):
            raise QueryValidationError(f"{op}.input.pipelines must be a document of pipelines")
        check_query({k: v for k, v in body.items() if k != "input"}, self._limits, op)
        pipelines = {
            name: self._source_pipeline(
                self._nested(p, f"{op}.input.pipelines.{name}"),
                [("", scope)],
                where=f"{op}.input.pipelines.{name}",
            )
            for name, p in inputs["pipelines"].items()
        }
        body["input"] = {**inputs, "pipelines": pipelines}
        return [{op: body}]


def _split(stage: Any, where: str) -> tuple[str, Any]:
    """A stage's operator and body; anything but a document of one ``$``-key is refused."""
    if (type(stage) is not dict and not isinstance(stage, Mapping)) or len(stage) != 1:
        raise QueryValidationError(
            f"each {where} stage must be a document with exactly one $-operator"
        )
    ((op, body),) = stage.items()
    if (type(op) is not str and not isinstance(op, str)) or op[:1] != "$":
        raise QueryValidationError(f"unknown {where} stage {op!r}")
    return op, body


def _scope_search(body: dict[str, Any], scope: str) -> dict[str, Any]:
    """Wrap an Atlas Search operator in a compound query that filters on ``app_id``."""
    scope_clause = {"equals": {"path": APP_ID, "value": scope}}
    operators = [k for k in body if k not in _SEARCH_OPTIONS]
    if operators == ["facet"] and isinstance(body["facet"], Mapping):
        facet = dict(body["facet"])
        inner = facet.get("operator")
        facet["operator"] = (
            {"compound": {"must": [inner], "filter": [scope_clause]}}
            if inner
            else {"compound": {"filter": [scope_clause]}}
        )
        return {**body, "facet": facet}
    if len(operators) != 1:
        raise QueryValidationError(
            "a scoped $search/$searchMeta takes exactly one operator (use compound to combine)"
        )
    (op,) = operators
    scoped = {k: v for k, v in body.items() if k != op}
    scoped["compound"] = {"must": [{op: body[op]}], "filter": [scope_clause]}
    return scoped


def _set_overlap(local: str, foreign: str) -> dict[str, Any]:
    """``$lookup``'s equality join as an expression: some value of ``local`` equals some value of
    ``foreign`` (arrays match element-wise; missing matches null, as in ``$lookup``)."""

    def as_array(expr: str) -> dict[str, Any]:
        return {"$cond": [{"$isArray": expr}, expr, [{"$ifNull": [expr, None]}]]}

    return {"$gt": [{"$size": {"$setIntersection": [as_array(local), as_array(foreign)]}}, 0]}
