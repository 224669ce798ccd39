"""What to use instead: the scoped replacement of each pymongo name a scoped object refuses.

Code written for pymongo (or Flask-PyMongo) reaches for ``db.client``, ``db.tasks.count``,
``find_raw_batches``... A scoped object has none of them on purpose (they are unscoped, or
gone from pymongo 4), and an ``AttributeError`` alone leaves the reader guessing. These tables
turn that error into the name of the method that does the job inside the sandbox.
"""

from __future__ import annotations

#: pymongo ``Database`` names -> what a scoped database offers instead.
DATABASE_ALTERNATIVES: dict[str, str] = {
    "client": "the engine's methods (engine.get_health_status(), engine.get_metrics(); the "
    "client is engine-internal) or this scoped database's",
    "cursor_command": "db.command(...) for ping/hello/buildInfo/count/distinct/collStats, or "
    "the collection methods (db.<collection>.find(...), .aggregate(...))",
    "aggregate": "db.<collection>.aggregate(pipeline) (database-level aggregations such as "
    "$currentOp or $documents are not scoped)",
    "dereference": "db[ref.collection].find_one({'_id': ref.id})",
    "validate_collection": "db.<collection>.count_documents({}) / db.command('collStats', name)",
    "list_collection_names": "db.list_collection_names()",
    "create_collection": "db.create_collection(name, ...)",
    "drop_database": "db.drop_collection(name) for each collection (a scoped database is never "
    "dropped whole)",
}

#: pymongo ``Collection`` names (including pymongo 3 ones) -> the scoped replacement.
COLLECTION_ALTERNATIVES: dict[str, str] = {
    "find_raw_batches": "find(...) (documents one by one), or find_arrow_all / find_pandas_all "
    "/ find_polars_all for columnar reads (the 'arrow' extra)",
    "aggregate_raw_batches": "aggregate(...), or aggregate_arrow_all / aggregate_pandas_all / "
    "aggregate_polars_all for columnar reads (the 'arrow' extra)",
    "count": "count_documents(filter)",
    "insert": "insert_one(document) / insert_many(documents)",
    "save": "replace_one({'_id': doc['_id']}, doc, upsert=True) or insert_one(doc)",
    "update": "update_one(filter, update) / update_many(filter, update)",
    "remove": "delete_one(filter) / delete_many(filter)",
    "find_and_modify": "find_one_and_update / find_one_and_replace / find_one_and_delete",
    "ensure_index": "create_index(keys)",
    "map_reduce": "aggregate(pipeline)",
    "inline_map_reduce": "aggregate(pipeline)",
    "group": "aggregate([{'$group': ...}])",
    "initialize_ordered_bulk_op": "bulk_write(requests, ordered=True)",
    "initialize_unordered_bulk_op": "bulk_write(requests, ordered=False)",
    "parallel_scan": "find(...)",
    "list_search_indexes": "the manifest's managed_indexes (vectorSearch / search) and "
    "vector_search(...)",
    "create_search_index": "the manifest's managed_indexes (vectorSearch / search)",
    "create_search_indexes": "the manifest's managed_indexes (vectorSearch / search)",
    "update_search_index": "the manifest's managed_indexes, then `mdb indexes sync --replace`",
    "drop_search_index": "the manifest's managed_indexes, then `mdb indexes sync --replace`",
    "find_one_or_404": "flask_mdb.find_one_or_404(db.<collection>, filter) in a Flask view",
}


def instead(table: dict[str, str], name: str) -> str:
    """`` Use ... instead.`` for ``name``, or an empty string when the table has none."""
    alternative = table.get(name)
    return f" Use {alternative} instead." if alternative else ""
