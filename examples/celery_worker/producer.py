"""Queue a few tasks for the worker of ``tasks.py`` and print their results.

Same environment as the worker (MDB_MONGO_URI, MDB_DB_NAME)::

    python producer.py
"""

from __future__ import annotations

from tasks import add_note, count_notes

from mdb_sync.observability import log_context


def main() -> None:
    with log_context(correlation_id=None) as context:  # carried to the worker's log records
        print(f"correlation id {context['correlation_id']}")
        results = [add_note.delay("notes_app", f"note {i}") for i in range(4)]
        for result in results:
            print("stored", result.get(timeout=60))
        print("notes in notes_app:", count_notes.delay("notes_app").get(timeout=60))


if __name__ == "__main__":
    main()
