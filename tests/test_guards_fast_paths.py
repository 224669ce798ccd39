"""The hot path's shortcuts keep every check (issue 18, item 2).

The guards skip plain values by their exact type and take dicts by exact type before asking
``isinstance``; these tests hand them what the shortcuts do not cover — mapping and string
subclasses, tuples, compiled patterns, SON — through the scoped API against a real server,
and check each is still refused (and nothing reaches the server). The one-pass checks (a flat
filter, a plain path-operator update) are compared with the full ones on generated input."""

from __future__ import annotations

import re
from collections import UserDict
from collections.abc import Mapping

import pytest
import strategies
from bson import SON, ObjectId
from bson.regex import Regex
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import InsertOne, UpdateOne

from mdb_sync.exceptions import QueryValidationError, ScopeError
from mdb_sync.scoping import QueryLimits, guards, updates


class Text(str):
    """A str subclass: not a "plain" type for the guards' shortcut."""


CATASTROPHIC = "(a+)+$"


def _nested_lists(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def items(engine):
    coll = engine.get_scoped_db("fast").items
    coll.insert_one({"n": 1})
    return coll


@pytest.mark.parametrize(
    "bad_filter",
    [
        SON([("$where", "true")]),
        UserDict({"$where": "true"}),
        {"$or": (SON([("n", 1)]), {"$where": "true"})},
        {"$and": [{"n": {"$in": [1, {"$where": "x"}]}}]},
        {"name": {"$regex": Text(CATASTROPHIC)}},
        {"name": re.compile(CATASTROPHIC)},
        {"name": {"$in": (Regex(CATASTROPHIC),)}},
        {"name": {"$regex": "x" * 2000}},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}},
        {"a": _nested_lists(45)},
    ],
)
def test_reads_refuse_what_the_shortcuts_do_not_cover(items, recorder, bad_filter):
    recorder.clear()
    with pytest.raises(QueryValidationError):
        items.find_one(bad_filter)
    assert recorder.commands("find") == []


@pytest.mark.parametrize(
    "bad_update",
    [
        {"$set": {Text("app_id"): "other"}},
        {"$set": {Text("app_id.x"): 1}},
        SON([("$set", SON([("app_id", "other")]))]),
        {"$rename": {"n": Text("app_id")}},
        {"$set": {"n": {"$function": {"body": "x"}}}},
    ],
)
def test_updates_refuse_what_the_shortcuts_do_not_cover(items, recorder, bad_update):
    recorder.clear()
    with pytest.raises((ScopeError, QueryValidationError)):
        items.update_one({"n": 1}, bad_update)
    with pytest.raises((ScopeError, QueryValidationError)):
        items.bulk_write([InsertOne({"n": 2}), UpdateOne({"n": 1}, bad_update)])
    assert recorder.commands("update", "insert") == []
    assert items.count_documents({}) == 1


def test_inserts_of_mapping_subclasses_are_tagged_and_checked(items, raw_db):
    items.insert_one(SON([("n", 3)]))
    items.bulk_write([InsertOne(UserDict({"n": 4}))])
    stored = list(raw_db["fast_items"].find({"n": {"$in": [3, 4]}}, {"_id": 0}))
    assert sorted(d["n"] for d in stored) == [3, 4]
    assert {d["app_id"] for d in stored} == {"fast"}
    with pytest.raises(ScopeError):
        items.insert_one(SON([("n", 5), ("app_id", "other")]))
    with pytest.raises(ScopeError):
        items.bulk_write([InsertOne(UserDict({"n": 6, "app_id": "other"}))])
    assert raw_db["fast_items"].count_documents({"n": {"$in": [5, 6]}}) == 0


def test_pipelines_in_tuples_and_son_are_scoped_and_checked(items):
    assert items.aggregate((SON([("$match", {"n": 1})]),)).to_list()[0]["n"] == 1
    with pytest.raises(QueryValidationError):
        items.aggregate((SON([("$match", {"$where": "true"})]),))


# --- the one-pass checks agree with the full ones ----------------------------------------------

_ODD_VALUES = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.uuids(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False),
    st.just(Regex("(a+)+")),
    st.just(Text("x")),
    st.dictionaries(
        st.sampled_from(["a", "$where", "$regex", "app_id"]), st.integers(), max_size=2
    ),
    st.lists(st.integers(), max_size=3),
)
_PATHS = st.one_of(
    st.sampled_from(["n", "app_id", "app_id.x", "app_idx", "$where", "$regex", "a.b", ""]),
    st.text(max_size=12),
    st.just(Text("app_id")),
    st.integers(0, 3),
)
_PLAIN_VALUES = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.uuids(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.datetimes(),
    st.builds(ObjectId),
)
#: Updates the one pass takes whole: path operators over plain values (some on app_id).
_PLAIN_UPDATES = st.dictionaries(
    st.sampled_from(["$set", "$inc", "$push", "$rename", "$unset", "$setOnInsert"]),
    st.dictionaries(
        st.one_of(
            st.text(min_size=1, max_size=20),
            st.sampled_from(["app_id", "app_id.x", "app_idx", "$where", "$regex", "$x", "a$"]),
        ),
        _PLAIN_VALUES,
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=3,
)
_ODD_UPDATES = st.dictionaries(
    st.sampled_from(["$set", "$inc", "$rename", "$unset", "$where", "$bogus", "set", "$push"]),
    st.one_of(st.dictionaries(_PATHS, _ODD_VALUES, max_size=3), _ODD_VALUES),
    max_size=3,
)


def _outcome(check, *args):
    try:
        return ("ok", check(*args))
    except (QueryValidationError, ScopeError, ValueError, TypeError) as exc:
        return (type(exc), str(exc))


@settings(max_examples=600, deadline=None)
@given(update=st.one_of(strategies.operator_updates(hostile=True), _PLAIN_UPDATES, _ODD_UPDATES))
def test_the_one_pass_update_check_agrees_with_the_full_checks(update):
    """scoped_update's one pass for plain path-operator updates accepts and refuses exactly
    what the full checks do (the same error)."""
    for limits in (QueryLimits(), QueryLimits(max_query_depth=1)):
        fused = _outcome(updates.scoped_update, update, "app_a", limits)
        assert fused == _outcome(updates._checked_update, update, "app_a", limits)


@settings(max_examples=600, deadline=None)
@given(
    query=st.one_of(
        strategies.filters(hostile=True),
        st.dictionaries(_PATHS.filter(lambda p: isinstance(p, str)), _ODD_VALUES, max_size=4),
        # operator documents one level down ({"n": {"$gte": 0}}), odd values inside them
        st.dictionaries(
            _PATHS.filter(lambda p: isinstance(p, str)),
            st.one_of(
                _ODD_VALUES,
                st.dictionaries(
                    st.sampled_from(["$gte", "$in", "$where", "$regex", "$function", "a"]),
                    st.one_of(_ODD_VALUES, _PLAIN_VALUES),
                    max_size=3,
                ),
            ),
            max_size=4,
        ),
    )
)
def test_the_two_level_shortcut_agrees_with_the_walk(query):
    """check_query's shortcut (plain values, or operator documents of plain values) accepts
    and refuses exactly what the full walk does, whatever the depth limit."""
    for depth in (1, 2, 3):
        limits = QueryLimits(max_query_depth=depth)
        assert _outcome(guards.check_query, query, limits) == _outcome(
            guards._walk, query, limits, "filter", 0, 0
        )


class _SwapsTheStage(UserDict):
    """A stage body whose reading by the guards swaps its stage for another: what a second
    thread of the caller could do between the check and the send."""

    def __init__(self, stage: dict, swap_to: dict) -> None:
        super().__init__({"n": {"$gte": 0}})
        self.stage, self.swap_to = stage, swap_to

    def items(self):
        self.stage.clear()
        self.stage.update(self.swap_to)
        return super().items()


def test_a_stage_swapped_during_its_check_is_not_sent(engine):
    """The pipeline's one pass sends stages of its own: a caller's stage dict whose operator
    changes after it was checked (here, into a $lookup of another app's raw collection)
    reaches the server as the stage that was checked."""
    engine.get_scoped_db("rival").secrets.insert_one({"secret": "s3"})
    mine = engine.get_scoped_db("fast").items
    mine.insert_one({"n": 1})
    stage: dict = {}
    escape = {"$lookup": {"from": "rival_secrets", "pipeline": [], "as": "leak"}}
    stage["$match"] = _SwapsTheStage(stage, escape)
    docs = mine.aggregate([{"$match": {"n": {"$gte": 0}}}, stage]).to_list()
    assert docs and all("leak" not in doc for doc in docs)
    assert stage == escape  # the swap did happen


class _ChangesAfterItsFirstRead(Mapping):
    """An operator document that reads as ``{"n": 2}`` once, then as a ``$set`` of another
    app's ``app_id``: what the caller's second thread could make of its own dict between the
    check and the send."""

    def __init__(self) -> None:
        self.data: dict = {"n": 2}
        self.reads = 0

    def __iter__(self):
        self.reads += 1
        if self.reads > 1:
            self.data = {"app_id": "rival"}
        return iter(list(self.data))

    def __getitem__(self, key):
        return self.data[key]

    def __len__(self) -> int:
        return len(self.data)


@pytest.mark.parametrize("how", ["update_one", "find_one_and_update", "bulk_write"])
def test_an_update_changed_after_its_check_is_not_sent(items, how):
    """An update is checked and sent as one copy: an operator document that turns into a
    ``$set`` of ``app_id`` after it was read cannot re-tag the app's document."""
    doc_id = items.insert_one({"n": 1}).inserted_id
    update = {"$set": _ChangesAfterItsFirstRead()}
    if how == "update_one":
        items.update_one({"_id": doc_id}, update)
    elif how == "find_one_and_update":
        items.find_one_and_update({"_id": doc_id}, update)
    else:
        items.bulk_write([UpdateOne({"_id": doc_id}, update)])
    assert items.find_one({"_id": doc_id}) == {"_id": doc_id, "n": 2, "app_id": "fast"}
