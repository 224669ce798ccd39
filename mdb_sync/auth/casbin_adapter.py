"""A pycasbin adapter that keeps an app's policy rules in its own scoped collection.

Rules are documents ``{"ptype": "p", "v0": ..., "v1": ..., ...}`` in the app's policy
collection (``casbin_policies`` by default), written and read through the app's
:class:`~mdb_sync.scoping.ScopedCollection` — so on the engine's one client (no second
``MongoClient``, unlike casbin-pymongo-adapter), tagged with ``app_id`` and never mixed
with another app's rules. It supports auto-save (incremental add/remove, batches, updates)
and filtered loading. Every change bumps the app's policy version (``mdb_auth_policy_versions``)
so enforcers in other processes know to reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from casbin import persist
from casbin.persist.adapters.update_adapter import UpdateAdapter

from . import store

if TYPE_CHECKING:
    from ..engine import MongoDBEngine
    from ..scoping import ScopedCollection

FIELDS = ("v0", "v1", "v2", "v3", "v4", "v5")


def rule_document(ptype: str, rule: Iterable[Any]) -> dict[str, Any]:
    values = [str(v) for v in rule]
    if len(values) > len(FIELDS):
        raise ValueError(f"a casbin rule has at most {len(FIELDS)} values")
    return {"ptype": ptype, **dict(zip(FIELDS, values, strict=False))}


def _rule_filter(ptype: str, rule: Iterable[Any]) -> dict[str, Any]:
    doc = rule_document(ptype, rule)
    for field in FIELDS[len(doc) - 1 :]:
        doc[field] = {"$exists": False}
    return doc


class MongoPolicyAdapter(persist.FilteredAdapter, persist.BatchAdapter, UpdateAdapter):
    """Casbin adapter over one app's scoped policy collection."""

    def __init__(self, engine: MongoDBEngine, slug: str, collection: str) -> None:
        self.engine = engine
        self.slug = slug
        self.collection = collection
        self._filtered = False

    @property
    def coll(self) -> ScopedCollection:
        # Looked up on each use: after an engine restart or a fork, the engine's new client.
        return self.engine.get_scoped_db(self.slug, auto_index=False)[self.collection]

    # --- versions (cross-process reload) ------------------------------------------------------

    def version(self) -> int:
        doc = store.collection(self.engine, store.POLICY_VERSIONS).find_one({"_id": self.slug})
        return int((doc or {}).get("version", 0))

    def bump(self) -> None:
        store.collection(self.engine, store.POLICY_VERSIONS).update_one(
            {"_id": self.slug},
            {"$inc": {"version": 1}, "$setOnInsert": {"app_id": self.slug}},
            upsert=True,
        )

    # --- loading --------------------------------------------------------------------------------

    def _load(self, model: Any, query: Mapping[str, Any]) -> None:
        for doc in self.coll.find(dict(query), {"_id": 0, "app_id": 0}):
            ptype = doc.get("ptype")
            values = [doc[f] for f in FIELDS if f in doc]
            if isinstance(ptype, str) and values:
                persist.load_policy_line(", ".join([ptype, *values]), model)

    def load_policy(self, model: Any) -> None:
        self._filtered = False
        self._load(model, {})

    def is_filtered(self) -> bool:
        return self._filtered

    def load_filtered_policy(self, model: Any, filter: Any) -> None:
        """``filter``: a query on the rule fields (``{"ptype": "p", "v0": "alice"}``), or
        casbin's ``Filter`` (``P``/``G`` lists of values by position, ``""`` for any)."""
        if isinstance(filter, Mapping):
            query = {k: v for k, v in filter.items() if k in ("ptype", *FIELDS)}
            if len(query) != len(filter):
                raise ValueError("policy filters may only use ptype and v0..v5")
        else:
            branches = []
            for sec in ("p", "g"):
                branch: dict[str, Any] = {"ptype": {"$regex": f"^{sec}"}}
                for i, value in enumerate(getattr(filter, sec.upper(), None) or ()):
                    if value != "" and i < len(FIELDS):
                        branch[FIELDS[i]] = str(value)
                branches.append(branch)
            query = {"$or": branches}
        self._load(model, query)
        self._filtered = True

    # --- writing (auto-save) ------------------------------------------------------------------

    def save_policy(self, model: Any) -> bool:
        docs = [
            rule_document(ptype, rule)
            for sec in ("p", "g")
            for ptype, assertion in model.model.get(sec, {}).items()
            for rule in assertion.policy
        ]
        self.coll.delete_many({})
        if docs:
            self.coll.insert_many(docs)
        self.bump()
        return True

    def add_policy(self, sec: str, ptype: str, rule: list[str]) -> bool:
        doc = rule_document(ptype, rule)
        self.coll.update_one(_rule_filter(ptype, rule), {"$setOnInsert": doc}, upsert=True)
        self.bump()
        return True

    def add_policies(self, sec: str, ptype: str, rules: list[list[str]]) -> bool:
        for rule in rules:
            doc = rule_document(ptype, rule)
            self.coll.update_one(_rule_filter(ptype, rule), {"$setOnInsert": doc}, upsert=True)
        self.bump()
        return True

    def remove_policy(self, sec: str, ptype: str, rule: list[str]) -> bool:
        deleted = self.coll.delete_many(_rule_filter(ptype, rule)).deleted_count
        self.bump()
        return deleted > 0

    def remove_policies(self, sec: str, ptype: str, rules: list[list[str]]) -> bool:
        for rule in rules:
            self.coll.delete_many(_rule_filter(ptype, rule))
        self.bump()
        return True

    def remove_filtered_policy(
        self, sec: str, ptype: str, field_index: int, *field_values: str
    ) -> bool:
        query: dict[str, Any] = {"ptype": ptype}
        for offset, value in enumerate(field_values):
            if value != "":
                query[FIELDS[field_index + offset]] = str(value)
        deleted = self.coll.delete_many(query).deleted_count
        self.bump()
        return deleted > 0

    def update_policy(
        self, sec: str, ptype: str, old_rule: list[str], new_policy: list[str]
    ) -> bool:
        self.coll.replace_one(_rule_filter(ptype, old_rule), rule_document(ptype, new_policy))
        self.bump()
        return True

    def update_policies(
        self, sec: str, ptype: str, old_rules: list[list[str]], new_rules: list[list[str]]
    ) -> bool:
        for old, new in zip(old_rules, new_rules, strict=True):
            self.coll.replace_one(_rule_filter(ptype, old), rule_document(ptype, new))
        self.bump()
        return True
