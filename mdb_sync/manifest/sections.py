"""One section of a manifest, validated and typed by the manifest's own schema.

:func:`load_section` is how every subsystem reads its part of a manifest: the section's
field of :class:`~mdb_sync.manifest.schema.ManifestSchema` validates the value (types,
ranges, unknown keys), fills its defaults and types it as the frozen dataclass its schema
names (:mod:`mdb_sync.manifest.fields`). A path reaches into a section
(``"auth.oauth.providers.google"``, ``"llm_config.prices"``), so configuration given outside
a manifest — a mapping passed to ``LLMService(config=...)``, the ``MDB_LLM_PRICES`` file — is
checked by the same rules as a manifest. An absent value (None) reads as the section's
absent value: None for a section whose absence means "off", the defaults for one whose
absence means "as usual".

Rules across sections (a write scope that must be the slug, model names that must name a
configured provider) are checked when a whole manifest is validated
(:func:`~mdb_sync.manifest.validate_manifest`), not here.

Typed sections are immutable, so they are cached by content (a SHA-256 of the section's JSON,
:data:`CACHE_SIZE` of them, least recently used dropped first): reading the same section
again — a stored record read by every process, a manifest dict handed to a reader — costs a
hash, not a schema load. A section holding values JSON cannot represent (BSON types in a seed
document) is loaded every time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar, cast

from marshmallow import ValidationError, fields

from ..exceptions import ConfigurationError
from .fields import LENIENT, MapOf, Obj, describe_errors, flatten_errors, typed_absent, typed_value
from .schema import ManifestSchema

#: Typed sections kept in the content cache.
CACHE_SIZE = 1024

_local = threading.local()
_cache: OrderedDict[tuple[str, bool, str], Any] = OrderedDict()
_cache_lock = threading.Lock()


def _root() -> ManifestSchema:
    # Schemas hold per-load state; one per thread keeps them thread-safe and cheap.
    schema = getattr(_local, "schema", None)
    if schema is None:
        schema = _local.schema = ManifestSchema()
    return schema


def section_field(path: str) -> fields.Field[Any]:
    """The (bound) field that validates the manifest path ``path`` (``"cors"``,
    ``"auth.oauth"``; a key of an object of user-chosen keys is any name:
    ``"llm_config.providers.acme"``)."""
    parts = path.split(".")
    field: fields.Field[Any] | None = _root().fields.get(parts[0])
    for part in parts[1:]:
        if isinstance(field, Obj):
            field = field.schema.fields.get(part)
        elif isinstance(field, MapOf):
            field = field.values
        else:
            field = None
        if field is None:
            break
    if field is None:
        raise KeyError(f"no manifest section {path!r}")
    return field


def load_section(
    path: str,
    value: Any,
    *,
    slug: str | None = None,
    lenient: bool = True,
    label: str | None = None,
) -> Any:
    """``value`` validated and typed as the manifest's ``path``; None: the absent value.

    Raises :class:`~mdb_sync.exceptions.ConfigurationError` naming each bad path (``label``
    replaces ``path`` in them: where the value came from) and the app ``slug``; its
    ``context["errors"]`` maps the paths to their messages. ``lenient`` (the default, for
    documents that were validated as a whole) keeps unknown keys; ``lenient=False`` refuses
    them, for configuration that comes from nowhere else.
    """
    field = section_field(path)
    if value is None:
        return typed_absent(field)
    key = _content_key(path, lenient, value)
    if key is not None:
        with _cache_lock:
            hit = _cache.get(key, _MISS)
            if hit is not _MISS:
                _cache.move_to_end(key)
                return hit
    token = LENIENT.set(lenient)
    try:
        loaded = field.deserialize(value)
    except ValidationError as exc:
        raise section_error(flatten_errors(exc.messages, label or path), slug) from None
    finally:
        LENIENT.reset(token)
    typed = typed_value(field, loaded)
    if key is not None:
        with _cache_lock:
            _cache[key] = typed
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return typed


_MISS = object()

T = TypeVar("T")


def typed_section(path: str, section: object, kind: type[T], *, slug: str | None = None) -> T:
    """``section`` as the typed manifest ``path``: unchanged when it already is a ``kind``
    (``manifest.memory_config``), else a mapping shaped like one — configuration given
    outside a manifest, loaded strictly (:func:`load_section` with ``lenient=False``: an
    unknown key is refused, a :class:`~mdb_sync.exceptions.ConfigurationError` names each
    bad path and the app ``slug``). None reads as the section's absent value."""
    if isinstance(section, kind):
        return section
    return cast(T, load_section(path, section, slug=slug, lenient=False))


def from_typed(target: Callable[..., T], section: object, **values: Any) -> T:
    """``target(**values)`` — a dataclass a subsystem builds from a typed section — with
    each of its other fields read from ``section``'s attribute of the same name (a field the
    section lacks keeps its default), so a field added to both is carried without a new
    line at every reader."""
    for item in dataclasses.fields(cast(Any, target)):
        if item.init and item.name not in values and hasattr(section, item.name):
            values[item.name] = getattr(section, item.name)
    return target(**values)


def _content_key(path: str, lenient: bool, value: Any) -> tuple[str, bool, str] | None:
    try:
        # Plain JSON only: no default= that could give two different values one text.
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, OverflowError):
        return None  # not plain JSON: loaded without caching
    return path, lenient, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def clear_cache() -> None:
    """Forget the typed sections read so far."""
    with _cache_lock:
        _cache.clear()


def cache_info() -> dict[str, int]:
    """``{"size": typed sections cached, "limit": CACHE_SIZE}``."""
    return {"size": len(_cache), "limit": CACHE_SIZE}


def _after_fork_in_child() -> None:
    # A lock held by another thread at the fork would never be released in the child; the
    # cached sections (immutable) stay valid.
    global _cache_lock
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def section_error(errors: dict[str, list[str]], slug: str | None) -> ConfigurationError:
    """The error of a section with ``errors`` (``{path: [messages]}``): the first path, the
    app, what is wrong — ``llm_config.temperature of app 'x': must be between 0 and 2``."""
    (first, messages), *others = errors.items()
    where = f" of app {slug!r}" if slug else ""
    message = f"{first}{where}: {', '.join(messages)}"
    if others:
        message += "; " + describe_errors(dict(others))
    return ConfigurationError(message, context={"path": first, "app": slug, "errors": errors})


__all__ = [
    "CACHE_SIZE",
    "cache_info",
    "clear_cache",
    "from_typed",
    "load_section",
    "section_error",
    "section_field",
    "typed_section",
]
