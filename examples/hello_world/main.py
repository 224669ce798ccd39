"""Hello world: register an app from its manifest, then insert, query and update its data.

Runs on the embedded database by default (no MongoDB needed); set MDB_MONGO_URI to use a
real server. Run it from anywhere:

    python examples/hello_world/main.py
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mdb_sync import MongoDBEngine

HERE = Path(__file__).resolve().parent


def main() -> None:
    with MongoDBEngine(db_name="hello_world") as engine:
        where = "the embedded database" if engine.uses_embedded_server else "MongoDB"
        print(f"✅ Connected to {where} at {engine.describe_server()}")

        manifest = engine.load_manifest(HERE / "manifest.json")
        result = engine.register_app(manifest, create_indexes=True)
        print(f"✅ App registered successfully! ({len(result['indexes'])} index(es) ensured)")

        db = engine.get_scoped_db("hello_world")
        inserted = db.tasks.insert_one(
            {
                "title": "Learn mdb-sync",
                "description": "Read the docs and build something",
                "status": "todo",
                "created_at": dt.datetime.now(dt.timezone.utc),
            }
        )
        print(f"✅ Created task with ID: {inserted.inserted_id}")

        tasks = db.tasks.find({"status": "todo"}).sort("created_at", -1).to_list(10)
        print(f"✅ Found {len(tasks)} todo task(s)")

        db.tasks.update_one({"_id": inserted.inserted_id}, {"$set": {"status": "in_progress"}})
        task = db.tasks.find_one({"_id": inserted.inserted_id})
        print(
            f"✅ Updated task status to {task['status']!r} (stored with app_id={task['app_id']!r})"
        )

        health = engine.get_health_status()
        print(f"✅ Engine health: {health['status']}")
    print("✅ Shut down cleanly")


if __name__ == "__main__":
    main()
