"""Hypothesis strategies for the sandbox tests: random filters, updates, replacements, bulk
writes and aggregation pipelines (with every stage that names a collection, nested), and the
operations that use them. ``hostile=True`` mixes in attempts on ``app_id``."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

SAFE_FIELDS = ["n", "tag", "arr", "sub.x", "m"]
HOSTILE_FIELDS = [*SAFE_FIELDS, "app_id", "app_id.x", "secret"]
COLLECTIONS = ["items", "other", "app_b_items", "app_b", "missing"]
SCALARS = st.one_of(
    st.integers(-3, 12),
    st.sampled_from(["a", "b", "x", "app_a", "app_b", "app_c", "B"]),
    st.booleans(),
    st.none(),
)


def _fields(hostile: bool) -> st.SearchStrategy[str]:
    return st.sampled_from(HOSTILE_FIELDS if hostile else SAFE_FIELDS)


def _condition() -> st.SearchStrategy[Any]:
    return st.one_of(
        SCALARS,
        st.builds(lambda v: {"$gt": v}, st.integers(-3, 12)),
        st.builds(lambda v: {"$lte": v}, st.integers(-3, 12)),
        st.builds(lambda v: {"$ne": v}, SCALARS),
        st.builds(lambda v: {"$in": v}, st.lists(SCALARS, max_size=3)),
        st.builds(lambda v: {"$nin": v}, st.lists(SCALARS, max_size=3)),
        st.builds(lambda v: {"$exists": v}, st.booleans()),
        st.builds(lambda v: {"$regex": v}, st.sampled_from(["^a", "b", "app", "^app_[bc]$"])),
        st.builds(lambda v: {"$elemMatch": {"$gt": v}}, st.integers(0, 5)),
        st.builds(lambda v: {"$size": v}, st.integers(0, 3)),
    )


def filters(hostile: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.dictionaries(_fields(hostile), _condition(), max_size=2)
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.builds(lambda fs: {"$or": fs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda fs: {"$and": fs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda fs: {"$nor": fs}, st.lists(children, min_size=1, max_size=2)),
            st.builds(lambda f, v: {"$expr": {"$eq": ["$" + f, v]}}, _fields(hostile), SCALARS),
        ),
        max_leaves=5,
    )


def operator_updates(hostile: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    fields = _fields(hostile)
    targets = st.sampled_from(["n", "m", "tag", "z"] + (["app_id"] if hostile else []))
    ops = st.one_of(
        st.builds(lambda d: {"$set": d}, st.dictionaries(fields, SCALARS, min_size=1, max_size=2)),
        st.builds(
            lambda d: {"$inc": d},
            st.dictionaries(fields, st.integers(-2, 2), min_size=1, max_size=2),
        ),
        st.builds(
            lambda d: {"$unset": d}, st.dictionaries(fields, st.just(""), min_size=1, max_size=2)
        ),
        st.builds(
            lambda f, t: (
                {"$rename": {f: t}}
                if f != t and not t.startswith(f + ".") and not f.startswith(t + ".")
                else {"$set": {"z": 1}}
            ),
            fields,
            targets,
        ),
        st.builds(lambda v: {"$push": {"arr": v}}, st.integers(0, 5)),
        st.builds(lambda v: {"$addToSet": {"arr": v}}, st.integers(0, 5)),
        st.builds(
            lambda d: {"$setOnInsert": d}, st.dictionaries(fields, SCALARS, min_size=1, max_size=1)
        ),
        # $currentDate only as an attempt on app_id: server time makes nModified vary.
        *([st.just({"$currentDate": {"app_id": True}})] if hostile else []),
        st.builds(lambda v: {"$max": {"n": v}}, st.integers(-3, 12)),
    )
    return ops


def pipeline_updates(hostile: bool = False) -> st.SearchStrategy[list[dict[str, Any]]]:
    fields = _fields(hostile)
    stage = st.one_of(
        st.builds(lambda f, v: {"$set": {f.replace(".", "_"): v}}, fields, SCALARS),
        st.builds(lambda f: {"$unset": f}, fields),
        st.builds(lambda v: {"$replaceWith": {"$mergeObjects": ["$$ROOT", {"tag": v}]}}, SCALARS),
        st.builds(lambda v: {"$replaceWith": {"n": v}}, st.integers(0, 5)),
        st.just({"$project": {"n": 1}}),
        *(
            [st.just({"$set": {"app_id": "app_b"}}), st.just({"$replaceWith": {"app_id": "app_c"}})]
            if hostile
            else []
        ),
    )
    return st.lists(stage, min_size=1, max_size=3)


def updates(hostile: bool = False) -> st.SearchStrategy[Any]:
    return st.one_of(operator_updates(hostile), pipeline_updates(hostile))


def documents(hostile: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    doc = st.fixed_dictionaries(
        {"n": st.integers(-3, 12), "tag": st.sampled_from(["a", "b", "x"])},
        optional={"arr": st.lists(st.integers(0, 5), max_size=3), "m": SCALARS},
    )
    if hostile:
        doc = st.one_of(
            doc,
            st.builds(lambda d, a: {**d, "app_id": a}, doc, st.sampled_from(["app_a", "app_b"])),
        )
    return doc


def _simple_stages(hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields = _fields(hostile)
    return st.one_of(
        st.builds(lambda f: {"$match": f}, filters(hostile)),
        st.builds(lambda f, v: {"$project": {f: v}}, fields, st.sampled_from([0, 1])),
        st.builds(lambda f, v: {"$set": {f.replace(".", "_"): v}}, fields, SCALARS),
        st.builds(lambda f: {"$unset": f}, fields),
        st.builds(
            lambda f, d: {"$sort": {f: d, "_id": 1}},
            st.sampled_from(["n", "tag"]),
            st.sampled_from([1, -1]),
        ),
        st.builds(lambda n: {"$limit": n}, st.integers(1, 5)),
        st.builds(lambda n: {"$skip": n}, st.integers(0, 3)),
        st.builds(lambda f: {"$group": {"_id": "$" + f, "c": {"$sum": 1}}}, fields),
        st.just({"$unwind": {"path": "$arr", "preserveNullAndEmptyArrays": True}}),
        st.just({"$replaceWith": "$$ROOT"}),
        st.just({"$sortByCount": "$tag"}),
    )


def pipelines(
    hostile: bool = False, writes: bool = True
) -> st.SearchStrategy[list[dict[str, Any]]]:
    simple = _simple_stages(hostile)
    collections = st.sampled_from(COLLECTIONS)
    field = st.sampled_from(["n", "tag", "arr"])

    def extend(
        children: st.SearchStrategy[list[dict[str, Any]]],
    ) -> st.SearchStrategy[list[dict[str, Any]]]:
        stage = st.one_of(
            simple,
            st.builds(
                lambda c, lf, ff: {
                    "$lookup": {"from": c, "localField": lf, "foreignField": ff, "as": "j"}
                },
                collections,
                field,
                field,
            ),
            st.builds(
                lambda c, p: {"$lookup": {"from": c, "let": {"v": "$n"}, "pipeline": p, "as": "j"}},
                collections,
                children,
            ),
            st.builds(
                lambda c, p: {"$unionWith": {"coll": c, "pipeline": p}}, collections, children
            ),
            st.builds(lambda c: {"$unionWith": c}, collections),
            st.builds(
                lambda c: {
                    "$graphLookup": {
                        "from": c,
                        "startWith": "$n",
                        "connectFromField": "n",
                        "connectToField": "n",
                        "as": "g",
                        "maxDepth": 1,
                    }
                },
                collections,
            ),
            st.builds(lambda p, q: {"$facet": {"x": p, "y": q}}, children, children),
        )
        return st.lists(stage, max_size=3)

    body = st.recursive(st.lists(simple, max_size=3), extend, max_leaves=6)
    if not writes:
        return body
    terminal = st.one_of(
        st.just([]),
        st.just([{"$out": "results"}]),
        st.builds(
            lambda mode: [{"$merge": {"into": "results", "whenMatched": mode}}],
            st.sampled_from(["replace", "merge", "keepExisting", [{"$set": {"merged": True}}]]),
        ),
    )
    return st.builds(lambda b, t: b + t, body, terminal)


def bulk_requests(hostile: bool = False) -> st.SearchStrategy[list[Any]]:
    request = st.one_of(
        st.builds(lambda d: InsertOne(d), documents(hostile)),
        st.builds(
            lambda f, u, up: UpdateOne(f, u, upsert=up),
            filters(hostile),
            updates(hostile),
            st.booleans(),
        ),
        st.builds(lambda f, u: UpdateMany(f, u), filters(hostile), updates(hostile)),
        st.builds(
            lambda f, d, up: ReplaceOne(f, d, upsert=up),
            filters(hostile),
            documents(hostile),
            st.booleans(),
        ),
        st.builds(lambda f: DeleteOne(f), filters(hostile)),
        st.builds(lambda f: DeleteMany(f), filters(hostile)),
    )
    return st.lists(request, min_size=1, max_size=4)


def operations(
    hostile: bool = False,
) -> st.SearchStrategy[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """(method name, args, kwargs) on a scoped collection."""
    f = filters(hostile)
    return st.one_of(
        st.tuples(
            st.just("find"),
            st.tuples(f),
            st.fixed_dictionaries({"sort": st.just([("n", 1), ("_id", 1)])}),
        ),
        st.tuples(st.just("find_one"), st.tuples(f), st.just({})),
        st.tuples(st.just("count_documents"), st.tuples(f), st.just({})),
        st.tuples(
            st.just("distinct"),
            st.tuples(
                st.sampled_from(["tag", "n", "app_id", "secret"] if hostile else ["tag", "n"]), f
            ),
            st.just({}),
        ),
        st.tuples(st.just("aggregate"), st.tuples(pipelines(hostile)), st.just({})),
        st.tuples(
            st.sampled_from(["update_one", "update_many"]),
            st.tuples(f, updates(hostile)),
            st.fixed_dictionaries({"upsert": st.booleans()}),
        ),
        st.tuples(
            st.just("replace_one"),
            st.tuples(f, documents(hostile)),
            st.fixed_dictionaries({"upsert": st.booleans()}),
        ),
        st.tuples(st.sampled_from(["delete_one", "delete_many"]), st.tuples(f), st.just({})),
        st.tuples(
            st.just("find_one_and_update"),
            st.tuples(f, updates(hostile)),
            st.fixed_dictionaries({"upsert": st.booleans(), "sort": st.just([("_id", 1)])}),
        ),
        st.tuples(
            st.just("find_one_and_replace"),
            st.tuples(f, documents(hostile)),
            st.fixed_dictionaries({"sort": st.just([("_id", 1)])}),
        ),
        st.tuples(
            st.just("find_one_and_delete"),
            st.tuples(f),
            st.fixed_dictionaries({"sort": st.just([("_id", 1)])}),
        ),
        st.tuples(
            st.just("bulk_write"),
            st.tuples(bulk_requests(hostile)),
            st.fixed_dictionaries({"ordered": st.booleans()}),
        ),
        st.tuples(st.just("insert_one"), st.tuples(documents(hostile)), st.just({})),
        st.tuples(
            st.just("insert_many"),
            st.tuples(st.lists(documents(hostile), min_size=1, max_size=3)),
            st.just({}),
        ),
    )
