"""Deprecated public names keep working and say so (DeprecationWarning naming the new way)."""

from __future__ import annotations

import warnings

import pytest

from mdb_sync import exceptions


@pytest.mark.parametrize("name", ["IndexConflictError", "IndexNotSupportedError"])
def test_never_raised_index_errors_are_deprecated_but_importable(name):
    with pytest.warns(DeprecationWarning, match=f"{name} is deprecated and never raised"):
        cls = getattr(exceptions, name)
    assert cls.__name__ == name
    assert issubclass(cls, exceptions.IndexError_)
    assert name not in exceptions.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for live in exceptions.__all__:  # what `import *` reads: no warning
            getattr(exceptions, live)
    with pytest.raises(AttributeError):
        exceptions.NoSuchError  # noqa: B018
