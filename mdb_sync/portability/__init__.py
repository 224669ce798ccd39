"""The graduation path: export one app in mongodump's layout, import it elsewhere.

::

    engine.export_app("my_app", "./export")              # ./export/my_app/tasks.bson ...
    other.import_app("my_app", "./export")               # same slug, another database
    other.import_app("my_app", "./export", target_slug="my_app_v2")
    standalone.import_app("my_app", "./export", drop_app_id=True)   # no app_id, plain names

``mongorestore ./export`` restores the same directory into a database named after the app.
See :mod:`.layout` for the files, :mod:`.exporter` and :mod:`.importer` for the guarantees.
"""

from .exporter import app_collections, count_app_documents, export_app
from .importer import find_app_dir, import_app
from .layout import SUMMARY_FILE

__all__ = [
    "SUMMARY_FILE",
    "app_collections",
    "count_app_documents",
    "export_app",
    "find_app_dir",
    "import_app",
]
