"""The manifest key reference, generated from the marshmallow schemas at build time.

``.. manifest-reference:: SECTION`` renders every key under the top-level key ``SECTION`` of
:class:`mdb_sync.manifest.schema.ManifestSchema` (``.. manifest-reference::`` alone: the
identity keys, those that hold no object) as a definition list: the key's JSON path, its type,
whether it is required, its default, its allowed values or range, and the description from the
field's ``metadata["description"]``. Nothing is written by hand, so a key added to a schema
appears here at the next build (``tests/test_docs.py`` checks that every field does).

Paths read as validation errors print them: ``auth.users.two_factor.issuer_name``;
``<name>`` stands for a key you choose (a collection, an endpoint, a provider) and ``[]`` for
the items of an array.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from marshmallow import fields as ma_fields
from marshmallow import missing

from mdb_sync.manifest import fields as mf
from mdb_sync.manifest.schema import ManifestSchema


@dataclass
class Key:
    """One documented key."""

    path: str
    type: str
    required: bool = False
    default: Any = missing
    constraints: list[str] = field(default_factory=list)
    description: str = ""


#: How the key of a map entry is named in paths, by the map's own path.
MAP_KEY_NAMES = {
    "managed_indexes": "<collection>",
    "collection_settings": "<collection>",
    "initial_data": "<collection>",
    "websockets": "<endpoint>",
    "auth.related_apps": "<slug>",
    "auth.rate_limits": "<path>",
    "auth.oauth.providers": "<provider>",
    "token_management.security.rate_limiting": "<name>",
    "llm_config.providers": "<provider>",
    "llm_config.prices": "<model>",
}


def _schema_of(nested: Any) -> Any:
    return nested() if isinstance(nested, type) else nested


def _fmt_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _range(f: Any, *, exclusive: bool = False) -> list[str]:
    low, high = getattr(f, "minimum", None), getattr(f, "maximum", None)
    if low is None and high is None:
        return []
    if low is not None and high is not None:
        op = "<" if exclusive else "≤"
        return [f"{_fmt_number(low)} {op} value ≤ {_fmt_number(high)}"]
    if low is not None:
        return [f"{'>' if exclusive else '≥'} {_fmt_number(low)}"]
    return [f"≤ {_fmt_number(high)}"]


def _describe_scalar(f: Any) -> tuple[str, list[str]]:
    """The type name and constraints of a field that holds no object."""
    if isinstance(f, mf.Bool):
        return "boolean", []
    if isinstance(f, mf.Int):
        return "integer", _range(f)
    if isinstance(f, mf.Num):
        return "number", _range(f, exclusive=f.exclusive_minimum)
    if isinstance(f, mf.Str):
        if f.choices is not None:
            return "string", ["one of " + ", ".join(f"``{c}``" for c in f.choices)]
        constraints = []
        if f.pattern_help:
            constraints.append(f.pattern_help)
        elif f.pattern is not None:
            constraints.append(f"matches ``{f.pattern.pattern}``")
        if constraints:
            pass  # the pattern says what fits better than a length would
        elif f.min_len == 0:
            constraints.append(f"at most {f.max_len:,} characters (may be empty)")
        else:
            constraints.append(f"1-{f.max_len:,} characters")
        return "string", constraints
    if isinstance(f, mf.ListOf):
        return "array", []
    if isinstance(f, mf.AnyObj):
        return "object", ["any JSON object (checked where it is used)"]
    if type(f).__name__ == "_NeverInManifest":
        return "refused", ["never allowed in a manifest (a secret): the error says where it goes"]
    return "value", []


def _default(f: Any) -> Any:
    value = getattr(f, "load_default", missing)
    if callable(value):
        value = value()
    return value


def walk(schema: Any, prefix: str = "") -> Iterator[Key]:
    """Every key of ``schema`` (a marshmallow schema instance), depth first, in source order."""
    for name, f in schema.fields.items():
        key = f.data_key or name
        path = f"{prefix}.{key}" if prefix else key
        yield from _walk_field(f, path)


def _walk_field(f: Any, path: str, *, required: bool | None = None) -> Iterator[Key]:
    description = (f.metadata or {}).get("description", "")
    is_required = f.required if required is None else required
    if isinstance(f, mf.Obj):
        yield Key(path, "object", is_required, _default(f), [], description)
        yield from walk(_schema_of(f.nested), path)
    elif isinstance(f, mf.ListOf):
        inner = f.inner
        constraints = []
        if f.min_items:
            constraints.append(f"at least {f.min_items} item{'s' if f.min_items > 1 else ''}")
        if f.max_items is not None:
            constraints.append(f"at most {f.max_items:,} items")
        if f.unique:
            constraints.append("no duplicates")
        if isinstance(inner, mf.Obj):
            yield Key(path, "array of objects", is_required, _default(f), constraints, description)
            yield from walk(_schema_of(inner.nested), f"{path}[]")
        elif isinstance(inner, mf.OneOfTypes):
            kinds = " or ".join(_one_of_names(inner))
            yield Key(
                path, f"array of ({kinds})", is_required, _default(f), constraints, description
            )
        else:
            kind, inner_constraints = _describe_scalar(inner)
            constraints += [f"each item: {c}" for c in inner_constraints]
            yield Key(path, f"array of {kind}s", is_required, _default(f), constraints, description)
    elif isinstance(f, mf.MapOf):
        name = MAP_KEY_NAMES.get(_generic(path), "<key>")
        values = f.values
        constraints = []
        if f.max_items is not None:
            constraints.append(f"at most {f.max_items:,} entries")
        if isinstance(values, mf.Obj):
            yield Key(
                path,
                f"object of {name}: object",
                is_required,
                _default(f),
                constraints,
                description,
            )
            yield from walk(_schema_of(values.nested), f"{path}.{name}")
        elif isinstance(values, mf.ListOf) and isinstance(values.inner, mf.Obj):
            yield Key(
                path,
                f"object of {name}: array of objects",
                is_required,
                _default(f),
                constraints,
                description,
            )
            yield from walk(_schema_of(values.inner.nested), f"{path}.{name}[]")
        elif isinstance(values, mf.OneOfTypes):
            kinds = " or ".join(_one_of_names(values))
            yield Key(
                path,
                f"object of {name}: {kinds}",
                is_required,
                _default(f),
                constraints,
                description,
            )
            for _, choice in values.choices:
                if isinstance(choice, mf.Obj):
                    yield from walk(_schema_of(choice.nested), f"{path}.{name}")
        elif isinstance(values, mf.ListOf):
            kind, _ = _describe_scalar(values.inner)
            limit = f", at most {values.max_items:,} each" if values.max_items else ""
            yield Key(
                path,
                f"object of {name}: array of {kind}s{limit}",
                is_required,
                _default(f),
                constraints,
                description,
            )
        else:
            kind, value_constraints = _describe_scalar(values)
            constraints += [f"each value: {c}" for c in value_constraints]
            yield Key(
                path,
                f"object of {name}: {kind}",
                is_required,
                _default(f),
                constraints,
                description,
            )
    elif isinstance(f, mf.OneOfTypes):
        kinds = " or ".join(_one_of_names(f))
        constraints = []
        for _, choice in f.choices:
            if not isinstance(choice, mf.Obj):
                constraints += _describe_scalar(choice)[1]
        yield Key(path, kinds, is_required, _default(f), constraints, description)
        for _, choice in f.choices:
            if isinstance(choice, mf.Obj):
                yield from walk(_schema_of(choice.nested), path)
    elif isinstance(f, ma_fields.Field):
        kind, constraints = _describe_scalar(f)
        yield Key(path, kind, is_required, _default(f), constraints, description)


def _one_of_names(f: Any) -> list[str]:
    names = []
    for _, choice in f.choices:
        if isinstance(choice, mf.Obj):
            names.append("object")
        else:
            names.append(_describe_scalar(choice)[0])
    return names


def _generic(path: str) -> str:
    """``path`` without its ``<name>`` and ``[]`` parts, for :data:`MAP_KEY_NAMES`."""
    parts = [p for p in path.replace("[]", "").split(".") if not p.startswith("<")]
    return ".".join(parts)


def sections() -> list[str]:
    """The top-level keys that hold objects (one reference section each)."""
    schema = ManifestSchema()
    return [
        (f.data_key or name)
        for name, f in schema.fields.items()
        if not isinstance(f, (mf.Str, mf.Int, mf.Bool, mf.Num))
    ]


def keys(section: str | None = None) -> list[Key]:
    """The keys of one top-level ``section`` (``None``: the identity keys)."""
    everything = list(walk(ManifestSchema()))
    if section is None:
        top = set(sections())
        return [k for k in everything if k.path.split(".")[0].split("[")[0] not in top]
    return [k for k in everything if k.path == section or k.path.startswith(section + ".")]


def _plain(text: str) -> str:
    """``text`` (a description: plain text) escaped for reStructuredText."""
    text = re.sub(r"([\\*`|])", r"\\\1", text)
    return re.sub(r"_(?=\W|$)", r"\\_", text)


def render(section: str | None = None) -> str:
    """reStructuredText of one section's keys."""
    lines: list[str] = []
    for key in keys(section):
        lines.append(f"``{key.path}``")
        facts = [f"*{key.type}*"]
        if key.required:
            facts.append("**required**")
        if key.default is not missing:
            facts.append(f"default ``{json.dumps(key.default)}``")
        facts += key.constraints
        lines.append("   " + "; ".join(facts) + ".")
        if key.description:
            lines.append("")
            lines.append("   " + _plain(key.description))
        lines.append("")
    return "\n".join(lines)


def setup(app: Any) -> dict[str, Any]:
    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList
    from sphinx.util.nodes import nested_parse_with_titles

    class ManifestReference(Directive):
        optional_arguments = 1
        has_content = False

        def run(self) -> list[Any]:
            from docutils import nodes

            section = self.arguments[0] if self.arguments else None
            if section is not None and section not in sections():
                raise self.error(f"unknown manifest section {section!r}; known: {sections()}")
            text = render(section)
            container = nodes.container(classes=["manifest-reference"])
            nested_parse_with_titles(
                self.state, StringList(text.splitlines(), source="<manifest schema>"), container
            )
            return [container]

    app.add_directive("manifest-reference", ManifestReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
