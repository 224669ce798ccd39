"""How the engine, scoped databases, collections and cursors show in a notebook or a REPL.

A notebook calls ``_repr_html_`` for the last value of a cell, a REPL calls ``__repr__``:
both must be short and must never touch the server (a slow or stopped server would hang the
kernel on a mere display). So they show what the objects already know — the server address
without credentials, the database, the app and its scopes, a cursor's query — and for a
cursor's *results*, the way to get them (``to_list()``), never a silent iteration that would
consume the cursor.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

#: Longest rendering of one value (a filter, a sort) before it is cut.
MAX_VALUE_CHARS = 200


def short(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_VALUE_CHARS`."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def call_repr(name: str, fields: Iterable[tuple[str, Any]]) -> str:
    """``Name(key=value, ...)`` with each value through :func:`short`."""
    return f"{name}({', '.join(f'{key}={short(value)}' for key, value in fields)})"


def html_card(title: str, fields: Iterable[tuple[str, Any]], note: str | None = None) -> str:
    """A small HTML table: the title, one row per field (escaped), an optional note."""
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(key)}</th>"
        f"<td style='text-align:left'><code>{html.escape(short(value))}</code></td></tr>"
        for key, value in fields
    )
    tail = f"<div style='color:#666'>{html.escape(note)}</div>" if note else ""
    return f"<div><strong>{html.escape(title)}</strong><table>{rows}</table>{tail}</div>"


# --- the objects ------------------------------------------------------------------------------


def engine_fields(engine: Any) -> list[tuple[str, Any]]:
    fields = [
        ("server", engine.describe_server() or "(not started)"),
        ("database", engine.db_name),
        ("embedded", engine.uses_embedded_server),
        ("initialized", engine.is_initialized),
    ]
    if engine.is_initialized:
        fields.append(("apps", engine.registry.slugs()))
    return fields


def engine_repr(engine: Any) -> str:
    return call_repr("MongoDBEngine", engine_fields(engine))


def engine_html(engine: Any) -> str:
    return html_card(
        "MongoDBEngine",
        engine_fields(engine),
        "engine.get_scoped_db(slug) gives an app's sandboxed database",
    )


def database_fields(db: Any) -> list[tuple[str, Any]]:
    return [
        ("app", db.app_slug),
        ("read_scopes", list(db.read_scopes)),
        ("write_scope", db.write_scope),
    ]


def database_html(db: Any) -> str:
    return html_card(
        "ScopedDatabase",
        database_fields(db),
        "db.<collection> is a scoped collection; db.list_collection_names() lists them",
    )


def collection_html(collection: Any) -> str:
    return html_card(
        "ScopedCollection",
        [("app", collection.database.app_slug), ("name", collection.name)],
        "find(...).to_list(), or find_pandas_all(...) for a data frame",
    )


def cursor_fields(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The fields of what a :class:`~mdb_sync.scoping.ScopedCursor` was asked for, ``spec``
    (the caller's filter, not the scoped one: the app is shown separately), that are set.
    The cursor passes its own spec: no display reads a cursor's state."""
    return [(key, value) for key, value in spec.items() if value not in (None, 0, {}, [])]


def cursor_html(spec: Mapping[str, Any]) -> str:
    return html_card(
        "ScopedCursor",
        cursor_fields(spec),
        "not run by this display: .to_list() returns the documents (a list, shown as usual)",
    )
