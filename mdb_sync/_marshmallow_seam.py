"""Every use of marshmallow's private API, in one module.

The manifest's container fields (:class:`~mdb_sync.manifest.fields.MapOf`: an object of
user-chosen keys, :class:`~mdb_sync.manifest.fields.OneOfTypes`: a value of one of several
shapes) hold inner fields, as marshmallow's own ``List`` and ``Dict`` do. marshmallow binds a
field to its schema (name, parent, root: what ``Nested`` reads to build its schema and
options) through ``Field._bind_to_schema``, which it calls itself for the inner fields of its
own containers only — not a public hook. :class:`ContainerField` binds ours the same way,
on copies of the inner fields as ``List`` does (marshmallow copies a schema's fields
shallowly, so without them every instance of a schema — one per thread — would share the
inner fields and the nested schemas they cache), so that a marshmallow release that renames
or drops the hook breaks this module and one test
(``tests/test_dependency_seams.py`` checks every name of :data:`PRIVATES` on the installed
marshmallow, and that binding reaches the inner fields) rather than a manifest section in
some far corner. ``setup.cfg`` keeps marshmallow below its next major version.

Nothing else in the packages may use a marshmallow private: go through this module.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from marshmallow import fields

if TYPE_CHECKING:
    # marshmallow 4's fields are generic for the type checker; 3.x's (which setup.cfg still
    # allows) cannot be subscripted at run time.
    _Field = fields.Field[Any]
else:
    _Field = fields.Field

#: Each private name used, by the object that has it: what the seam test checks.
PRIVATES: dict[str, tuple[str, ...]] = {
    # Binding a field to its schema (called by marshmallow on every declared field, and by a
    # container on its inner fields).
    "marshmallow.fields.Field": ("_bind_to_schema",),
}


class ContainerField(_Field):
    """A field holding inner fields (:meth:`inner_fields`), bound with it to its schema as
    marshmallow binds a ``List``'s inner field."""

    def inner_fields(self) -> Iterable[_Field]:
        """The fields this one deserializes its parts with."""
        return ()

    def replace_inner_fields(self, inner: Sequence[_Field]) -> None:
        """Hold ``inner`` (copies of :meth:`inner_fields`, in order) instead."""

    def _bind_to_schema(self, field_name: str, parent: Any) -> None:
        super()._bind_to_schema(field_name, parent)
        inner = [copy.deepcopy(field) for field in self.inner_fields()]
        for field in inner:
            field._bind_to_schema(field_name, self)
        self.replace_inner_fields(inner)


__all__ = ["PRIVATES", "ContainerField"]
