"""Strict marshmallow fields and the base schema of every manifest section.

Manifests are JSON written by hand, so validation is strict where marshmallow is lenient by
default: ``"true"`` is not a boolean, ``1.5`` or ``true`` is not an integer, ``null`` is
not a value, and an unknown key is an error naming its path (with a suggestion for a likely
misspelling). Keys starting with ``x-`` or ``x_`` are extension keys, always kept as written;
in lenient mode (see :mod:`mdb_sync.manifest.validator`) other unknown keys are kept too.

The schemas are also the one model of a manifest's *types*: a schema names the frozen
dataclass its objects become (:attr:`BaseSchema.typed_as`) and :meth:`BaseSchema.typed` turns
validated data into it, field by field — a nested object into its schema's model, an array
into a tuple, an object of user-chosen keys into a read-only mapping. A key the data does
not hold takes its field's ``load_default``, else the empty value of its kind (None, ``()``,
an empty mapping), or for an object whose schema sets :attr:`BaseSchema.defaults_when_absent`
that schema's defaults. Defaults are thus written once, on the fields, and every subsystem
reads them from the typed sections (:mod:`mdb_sync.manifest.sections`).
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    missing,
    post_load,
    validates_schema,
)

from .._marshmallow_seam import ContainerField
from .frozen import freeze

if TYPE_CHECKING:
    # The bases of this module's fields: marshmallow 4's fields are generic for the type
    # checker, 3.x's (which setup.cfg still allows) cannot be subscripted at run time.
    BaseField = fields.Field[Any]
    BaseList = fields.List[Any]
else:
    BaseField = fields.Field
    BaseList = fields.List

#: True while a manifest is validated in lenient mode (unknown keys are kept, not refused).
LENIENT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mdb_manifest_lenient", default=False
)

#: Messages used throughout, so every error reads the same way.
REQUIRED = "required"
NOT_NULL = "must not be null"

_BASE_MESSAGES = {"required": REQUIRED, "null": NOT_NULL, "validator_failed": "invalid value"}

#: The metadata key of a field its section's typed model leaves out (an alias read as another
#: key); inert fields (:mod:`mdb_sync.manifest.inert`) and :class:`Refused` ones are left out
#: too.
UNMODELLED = "unmodelled"


def is_extension_key(key: Any) -> bool:
    """``x-...``/``x_...`` keys belong to the manifest's author and are never validated."""
    return isinstance(key, str) and (key.startswith("x-") or key.startswith("x_"))


class BaseSchema(Schema):
    """Base of every manifest schema: strict about unknown keys, keeps extension keys, and
    types what it loaded (:meth:`typed`)."""

    class Meta:
        unknown = EXCLUDE  # reported by ``_refuse_unknown`` with a path and a suggestion

    error_messages = {"type": "must be an object"}

    #: The frozen dataclass (keyword arguments: the modelled fields) an object of this schema
    #: is typed as; None: a read-only mapping of what was loaded.
    typed_as: ClassVar[Callable[..., Any] | None] = None
    #: An absent object of this schema is typed as one holding every default (never None):
    #: for objects whose absence means "the defaults", not "off".
    defaults_when_absent: ClassVar[bool] = False

    def typed(self, data: Mapping[str, Any]) -> Any:
        """``data`` (what this schema loaded) as :attr:`typed_as`: every modelled field
        passed, typed; a field ``data`` lacks takes its absent value (:func:`typed_absent`)."""
        if self.typed_as is None:
            return freeze(data)
        values: dict[str, Any] = {}
        for name, field in self.load_fields.items():
            if not modelled(field):
                continue
            key = field.attribute or name
            values[key] = typed_value(field, data[key]) if key in data else typed_absent(field)
        return self.typed_as(**values)

    def _known_keys(self) -> list[str]:
        return [f.data_key or name for name, f in self.load_fields.items()]

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _refuse_unknown(self, data: Any, original_data: Any, **kwargs: Any) -> None:
        if LENIENT.get() or not isinstance(original_data, Mapping):
            return
        known = self._known_keys()
        errors: dict[str, list[str]] = {}
        for key in original_data:
            if key in known or is_extension_key(key):
                continue
            message = "unknown key"
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            elif known:
                message += f" (allowed: {', '.join(sorted(known))})"
            errors[str(key)] = [message]
        if errors:
            raise ValidationError(errors)

    @post_load(pass_original=True)
    def _keep_extra_keys(self, data: dict[str, Any], original_data: Any, **kwargs: Any) -> Any:
        if isinstance(original_data, Mapping):
            known = self._known_keys()
            lenient = LENIENT.get()
            for key, value in original_data.items():
                if key not in known and (lenient or is_extension_key(key)):
                    data[key] = value
        return data


class Obj(fields.Nested):
    """A nested manifest object (typed as its schema's model)."""

    default_error_messages = {**_BASE_MESSAGES, "type": "must be an object"}

    def typed(self, value: Any) -> Any:
        schema = self.schema
        return schema.typed(value) if isinstance(schema, BaseSchema) else freeze(value)

    def typed_absent(self) -> Any:
        schema = self.schema
        if isinstance(schema, BaseSchema) and schema.defaults_when_absent:
            return typed_defaults(type(schema))
        return None


class ListOf(BaseList):
    """A JSON array of ``inner`` values; ``unique`` refuses duplicates, ``max_items`` caps it."""

    default_error_messages = {**_BASE_MESSAGES, "invalid": "must be an array"}

    def __init__(
        self,
        inner: fields.Field[Any],
        *,
        unique: bool = False,
        min_items: int = 0,
        max_items: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, **kwargs)
        self.unique = unique
        self.min_items = min_items
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise ValidationError("must be an array")
        if len(value) < self.min_items:
            raise ValidationError(
                "must not be empty"
                if self.min_items == 1
                else f"must have at least {self.min_items} items"
            )
        if self.max_items is not None and len(value) > self.max_items:
            raise ValidationError(f"must have at most {self.max_items} items")
        result = super()._deserialize(value, attr, data, **kwargs)
        if self.unique:
            seen: list[Any] = []
            errors: dict[int, list[str]] = {}
            for i, item in enumerate(result):
                if item in seen:
                    errors[i] = [f"duplicate value {item!r}"]
                seen.append(item)
            if errors:
                raise ValidationError(errors)
        return result

    def typed(self, value: Any) -> tuple[Any, ...]:
        return tuple(typed_value(self.inner, item) for item in value)

    def typed_absent(self) -> tuple[Any, ...]:
        return ()


class MapOf(ContainerField):
    """A JSON object of user-chosen keys (collection names, endpoint names, paths) whose
    values are all ``values``; errors are reported under the key itself."""

    default_error_messages = {**_BASE_MESSAGES, "invalid": "must be an object"}

    def __init__(
        self,
        values: fields.Field[Any],
        *,
        key: Callable[[str], str | None] | None = None,
        max_items: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.values = values
        self.key_check = key
        self.max_items = max_items

    def inner_fields(self) -> Iterable[fields.Field[Any]]:
        return (self.values,)

    def replace_inner_fields(self, inner: Sequence[fields.Field[Any]]) -> None:
        (self.values,) = inner

    def typed(self, value: Any) -> Mapping[str, Any]:
        return MappingProxyType(
            {key: typed_value(self.values, item) for key, item in value.items()}
        )

    def typed_absent(self) -> Mapping[str, Any]:
        return MappingProxyType({})

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        result, errors = self.deserialize_items(value, **kwargs)
        errors.update(self.check_items(result))
        if errors:
            raise ValidationError(errors)
        return result

    def check_items(self, items: dict[str, Any]) -> dict[str, Any]:
        """Errors across the valid entries (subclasses: duplicates between entries...)."""
        return {}

    def deserialize_items(self, value: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The valid entries and the errors (by key) of the others."""
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object")
        if self.max_items is not None and len(value) > self.max_items:
            raise ValidationError(f"must have at most {self.max_items} entries")
        result: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                errors[str(key)] = ["keys must be strings"]
                continue
            problem = self.key_check(key) if self.key_check else None
            if problem:
                errors[key] = [problem]
                continue
            try:
                result[key] = self.values.deserialize(item, key, value, **kwargs)
            except ValidationError as exc:
                errors[key] = exc.messages
        return result, errors


class Bool(BaseField):
    """``true`` or ``false`` and nothing else."""

    default_error_messages = {**_BASE_MESSAGES}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class Int(BaseField):
    """An integer (not a boolean, not a float, not a string) within ``[minimum, maximum]``."""

    default_error_messages = {**_BASE_MESSAGES}

    def __init__(
        self, *, minimum: int | None = None, maximum: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValidationError("must be an integer")
        _check_range(int(value), self.minimum, self.maximum)
        return int(value)


class Num(BaseField):
    """A number within a range; ``exclusive_minimum`` refuses the bound itself (``> 0``)."""

    default_error_messages = {**_BASE_MESSAGES}

    def __init__(
        self,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum
        self.maximum = maximum
        self.exclusive_minimum = exclusive_minimum

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numbers.Real)):
            raise ValidationError("must be a number")
        if value != value:  # NaN
            raise ValidationError("must be a number")
        if self.exclusive_minimum and self.minimum is not None and value <= self.minimum:
            raise ValidationError(f"must be greater than {_fmt(self.minimum)}")
        number = int(value) if isinstance(value, numbers.Integral) else float(value)
        _check_range(number, None if self.exclusive_minimum else self.minimum, self.maximum)
        return number


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _check_range(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ValidationError(f"must be between {_fmt(minimum)} and {_fmt(maximum)}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"must be at least {_fmt(minimum)}")
    if maximum is not None and value > maximum:
        raise ValidationError(f"must be at most {_fmt(maximum)}")


class Str(BaseField):
    """A string, optionally non-empty, bounded, matching ``pattern`` or one of ``choices``."""

    default_error_messages = {**_BASE_MESSAGES}

    def __init__(
        self,
        *,
        min_len: int = 1,
        max_len: int = 1024,
        pattern: str | None = None,
        pattern_help: str | None = None,
        choices: Iterable[str] | None = None,
        check: Callable[[str], str | None] | None = None,
        strip: bool = False,
        normalize: Callable[[str], str] | None = None,
        **kwargs: Any,
    ) -> None:
        """``strip`` removes surrounding whitespace before the checks; ``normalize`` maps a
        valid value to the form that is kept (``https://a.example/`` -> ``https://a.example``)."""
        super().__init__(**kwargs)
        self.min_len = min_len
        self.max_len = max_len
        self.pattern = re.compile(pattern) if pattern else None
        self.pattern_help = pattern_help
        self.choices = tuple(choices) if choices is not None else None
        self.check = check
        self.strip = strip
        self.normalize = normalize

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        if self.strip:
            value = value.strip()
        value = self._checked(value)
        return self.normalize(value) if self.normalize else value

    def _checked(self, value: str) -> str:
        if self.choices is not None:
            if value not in self.choices:
                raise ValidationError(f"must be one of: {', '.join(self.choices)}")
            return value
        if len(value) < self.min_len:
            raise ValidationError("must not be empty")
        if len(value) > self.max_len:
            raise ValidationError(f"must be at most {self.max_len} characters")
        if "\x00" in value:
            raise ValidationError("must not contain NUL characters")
        if self.pattern and not self.pattern.fullmatch(value):
            raise ValidationError(self.pattern_help or f"must match {self.pattern.pattern}")
        if self.check:
            problem = self.check(value)
            if problem:
                raise ValidationError(problem)
        return value


class AnyObj(BaseField):
    """A JSON object whose contents are not validated here (documents, validators,
    definitions checked elsewhere)."""

    default_error_messages = {**_BASE_MESSAGES}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object")
        return dict(value)


class Refused(BaseField):
    """A key that is always refused, with the reason (a secret, which belongs in the
    environment: manifests are stored, exported and shown)."""

    default_error_messages = {**_BASE_MESSAGES}

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        raise ValidationError(self.message)


class OneOfTypes(ContainerField):
    """A value that may take one of several shapes (``csrf_protection``: bool or object);
    the first field whose Python type test passes deserializes (and types) it."""

    default_error_messages = {**_BASE_MESSAGES}

    def __init__(
        self, *choices: tuple[type | tuple[type, ...], fields.Field[Any]], what: str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.choices = choices
        self.what = what

    def inner_fields(self) -> Iterable[fields.Field[Any]]:
        return [field for _, field in self.choices]

    def replace_inner_fields(self, inner: Sequence[fields.Field[Any]]) -> None:
        self.choices = tuple(
            (types, field) for (types, _), field in zip(self.choices, inner, strict=True)
        )

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        for types, field in self.choices:
            if isinstance(value, types):
                return field.deserialize(value, attr, data, **kwargs)
        raise ValidationError(f"must be {self.what}")

    def typed(self, value: Any) -> Any:
        for types, field in self.choices:
            if isinstance(value, types):
                return typed_value(field, value)
        return freeze(value)


class Switch(OneOfTypes):
    """``true``, ``false`` or an object of ``schema`` (which has an ``enabled`` key): typed
    as that object either way — ``true``/``false`` as ``{"enabled": true/false}`` with every
    other default. ``absent`` is what a missing key reads as: ``None`` (off, no object) or
    ``true``/``false``."""

    def __init__(
        self, schema: type[BaseSchema], *, absent: bool | None = None, **kwargs: Any
    ) -> None:
        super().__init__(
            (bool, Bool()), (dict, Obj(schema)), what="true, false or an object", **kwargs
        )
        self.schema_class = schema
        self.absent = absent

    def typed(self, value: Any) -> Any:
        if isinstance(value, bool):
            return typed_defaults(self.schema_class, enabled=value)
        return super().typed(value)

    def typed_absent(self) -> Any:
        return None if self.absent is None else self.typed(self.absent)


# --- typed values ---------------------------------------------------------------------------


def modelled(field: fields.Field[Any]) -> bool:
    """Whether ``field`` is in its section's typed model (inert, alias and refused keys are
    not)."""
    metadata = field.metadata or {}
    return not (metadata.get("inert") or metadata.get(UNMODELLED) or isinstance(field, Refused))


def typed_value(field: fields.Field[Any], value: Any) -> Any:
    """The typed form of ``value``, which ``field`` loaded."""
    convert = getattr(field, "typed", None)
    return convert(value) if convert is not None else freeze(value)


def typed_absent(field: fields.Field[Any]) -> Any:
    """What a key of ``field`` that the data lacks reads as: the field's ``load_default``
    (typed), else its kind's empty value (None, ``()``, an empty mapping, or an object of
    defaults: see :attr:`BaseSchema.defaults_when_absent`)."""
    default = field.load_default
    if default is not missing:
        return typed_value(field, default() if callable(default) else default)
    absent = getattr(field, "typed_absent", None)
    return absent() if absent is not None else None


@functools.lru_cache(maxsize=256)
def _typed_defaults(schema: type[BaseSchema], items: tuple[tuple[str, Any], ...]) -> Any:
    instance = schema()
    return instance.typed(instance.load(dict(items)))


def typed_defaults(schema: type[BaseSchema], **given: Any) -> Any:
    """The typed object of ``schema`` holding its defaults (and the scalar values of
    ``given``): what an absent object, or a ``true``/``false`` shorthand, reads as. Built
    once per schema and values (the result is immutable)."""
    return _typed_defaults(schema, tuple(sorted(given.items())))


def field_default(schema: type[BaseSchema], name: str) -> Any:
    """The ``load_default`` of ``schema``'s field ``name`` — for a runtime class whose own
    defaults must be the manifest's (constructed without a manifest)."""
    default = schema().fields[name].load_default
    if default is missing:
        raise LookupError(f"{schema.__name__}.{name} has no default")
    return default() if callable(default) else default


# --- reusable value checks ------------------------------------------------------------------

URL_RE = r"https?://[^\s/?#]+(?:[/?#]\S*)?"
ROUTE_RE = r"/[^\s?#]*"
ROUTE_HELP = "must be a path starting with '/' (no spaces, query or fragment)"
IDENT_RE = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
IDENT_HELP = "must be 1-64 letters, digits, '_' or '-', starting with a letter"
EMAIL_RE = r"[^@\s]+@[^@\s]+\.[^@\s]+"


def route(**kwargs: Any) -> Str:
    return Str(pattern=ROUTE_RE, pattern_help=ROUTE_HELP, max_len=2048, **kwargs)


def url(**kwargs: Any) -> Str:
    return Str(pattern=URL_RE, pattern_help="must be an http(s) URL", max_len=2048, **kwargs)


def strings(**kwargs: Any) -> ListOf:
    """A list of non-empty strings without duplicates."""
    return ListOf(Str(), unique=True, **kwargs)


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict as ``{json_path: [messages]}``.

    Paths read like ``managed_indexes.tasks[1].keys``; keys that are not plain identifiers
    are bracketed and quoted: ``auth.rate_limits["/login"].max_attempts``.
    """
    out: dict[str, list[str]] = {}

    def add(path: str, msgs: list[str]) -> None:
        out.setdefault(path, [])
        for msg in msgs:
            if msg not in out[path]:
                out[path].append(msg)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "_schema":
                    walk(value, path)
                else:
                    walk(value, join_path(path, key))
        elif isinstance(node, (list, tuple)):
            plain = [m for m in node if isinstance(m, str)]
            if plain:
                add(path, plain)
            for item in node:
                if not isinstance(item, str):
                    walk(item, path)
        else:
            add(path, [str(node)])

    walk(messages, prefix)
    return out


def describe_errors(errors: Mapping[str, list[str]]) -> str:
    """``path: message; path: message`` for an exception message."""
    return "; ".join(f"{path or '<root>'}: {', '.join(msgs)}" for path, msgs in errors.items())


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def join_path(path: str, key: Any) -> str:
    """``path`` extended by a dict key or list index, in the notation of :func:`flatten_errors`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = str(key)
    if _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{quoted}"]'
