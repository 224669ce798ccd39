"""``auth.users.demo_users`` without clear passwords at rest.

A manifest may give a demo user's ``password`` in clear (handy while developing), but the
registry — which every process reads, ``mdb apps show`` prints and exports copy — keeps only
its hash: :func:`hash_demo_passwords` replaces each ``password`` with a ``password_hash``
when the manifest is registered, after checking it against the app's password policy.
Registering the same manifest again keeps the stored hash when it still matches, so an
unchanged manifest stays unchanged in the registry. :func:`redact_demo_passwords` hides
both from what is shown to people.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..exceptions import ManifestValidationError
from .config import AuthConfig
from .passwords import PasswordHasher

#: What is shown in place of a demo user's password or hash.
HIDDEN = "<hidden>"


def _demo_users(manifest: Mapping[str, Any] | None) -> list[Any]:
    users = ((manifest or {}).get("auth") or {}).get("users") or {}
    return list(users.get("demo_users") or ())


def has_clear_passwords(manifest: Mapping[str, Any] | None) -> bool:
    """Whether ``manifest`` lists a demo user with a clear ``password`` (to be hashed)."""
    return any(isinstance(d, Mapping) and "password" in d for d in _demo_users(manifest))


def hash_demo_passwords(
    manifest: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
    *,
    hasher: PasswordHasher | None = None,
    check_policy: bool = True,
) -> dict[str, Any]:
    """A copy of the validated ``manifest`` whose demo users carry ``password_hash`` instead
    of ``password``; a hash of ``previous`` (the registered manifest) is reused when it
    matches. :class:`ManifestValidationError` for a password the app's policy refuses."""
    if not has_clear_passwords(manifest):
        return dict(manifest)
    out = copy.deepcopy(dict(manifest))
    policy = AuthConfig.from_manifest(out).password_policy
    known = {
        str(d.get("email", "")).lower(): d.get("password_hash")
        for d in _demo_users(previous)
        if isinstance(d, Mapping) and d.get("password_hash")
    }
    hasher = hasher or PasswordHasher()
    errors: dict[str, list[str]] = {}
    for i, demo in enumerate(out["auth"]["users"]["demo_users"]):
        if not isinstance(demo, dict) or "password" not in demo:
            continue
        clear = demo.pop("password")
        path = f"auth.users.demo_users[{i}].password"
        email = str(demo.get("email", "")).lower()
        problems = policy.problems(clear, email) if check_policy else []
        if problems:
            errors[path] = problems
            continue
        stored = known.get(email)
        demo["password_hash"] = (
            stored if stored and hasher.verify(clear, stored) else hasher.hash(clear)
        )
    if errors:
        slug = manifest.get("slug")
        raise ManifestValidationError(
            f"invalid manifest {slug!r}: "
            + "; ".join(f"{path}: {', '.join(msgs)}" for path, msgs in errors.items()),
            errors=errors,
            context={"app": slug},
        )
    return out


def redact_demo_passwords(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` to show people: demo users' passwords and hashes hidden."""
    if not _demo_users(manifest):
        return dict(manifest)
    out = copy.deepcopy(dict(manifest))
    for demo in out["auth"]["users"]["demo_users"]:
        if isinstance(demo, dict):
            for key in ("password", "password_hash"):
                if key in demo:
                    demo[key] = HIDDEN
    return out
