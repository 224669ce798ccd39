"""Old keyword spellings kept working, with a DeprecationWarning naming the new one.

The app parameter is ``slug`` across the public API (``engine.get_scoped_db(slug)``,
``EventBus.publish(slug, ...)``, ``record_operation(..., slug=...)``); it used to be spelled
``app_slug`` in some signatures and ``app`` in others. :func:`renamed_parameters` lets
callers that pass the old keyword keep working for a release while they are told the new
name. (In ``flask_mdb``, ``app`` is the Flask application everywhere and is not renamed.)
:func:`deprecated` does the same for a public callable that has a replacement.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def renamed_parameters(**renames: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Accept each ``old=`` keyword of ``renames`` (``old="new"``) as ``new=``, warning.

    Passing both spellings is a ``TypeError``, as a duplicate argument would be. The
    decorated function keeps its signature for type checkers, which therefore flag the old
    spellings in checked code.
    """

    olds = frozenset(renames)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        where = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not kwargs or olds.isdisjoint(kwargs):  # the usual call: nothing renamed
                return func(*args, **kwargs)
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{where}() got both {new}= and its old spelling {old}=")
                    warnings.warn(
                        f"{where}(): the keyword {old}= is deprecated; use {new}=",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def deprecated(replacement: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Keep a public callable working for a release, warning that ``replacement`` is the
    way now (a :class:`DeprecationWarning` naming both)."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        where = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            warnings.warn(
                f"{where}() is deprecated; use {replacement}", DeprecationWarning, stacklevel=2
            )
            return func(*args, **kwargs)

        return wrapper

    return decorate
