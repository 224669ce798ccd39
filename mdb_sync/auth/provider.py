"""Authorization providers: who may do what.

:class:`AuthorizationProvider` is the protocol — one method, ``check(subject, resource,
action) -> bool`` — that route protection and ``require_permission`` call, so an app can
plug in any engine. Built in: :class:`CasbinProvider` (the default; the manifest's
``auth.policy.authorization`` block) and :class:`OsoProvider` (when the ``oso`` package is
installed).

The casbin models: ``rbac`` is RBAC with domains, the domain being the app's slug (a user's
roles in one app say nothing about another); ``acl`` is a plain subject/object/action
list; anything else is the path of a model file. Objects match with ``keyMatch2``
(``/tasks/*``, ``/tasks/:id``) or ``*``; actions exactly or ``*``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..exceptions import ConfigurationError
from . import store

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger("mdb_sync.auth")

RBAC_MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && (p.obj == "*" || keyMatch2(r.obj, p.obj)) \
&& (p.act == "*" || r.act == p.act)
"""

ACL_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.sub == p.sub && (p.obj == "*" || keyMatch2(r.obj, p.obj)) && (p.act == "*" || r.act == p.act)
"""


@runtime_checkable
class AuthorizationProvider(Protocol):
    """Decides whether ``subject`` (a user's email, or a role) may ``action`` on ``resource``."""

    def check(self, subject: str, resource: str, action: str) -> bool: ...


class CasbinProvider:
    """Casbin on the app's scoped policy collection, safe to share between threads.

    Policies changed through this provider are saved at once (auto-save) and bump the app's
    policy version; other processes' providers notice within ``reload_interval`` seconds
    (they compare versions, one tiny read, at most that often) and reload — or call
    :meth:`reload` yourself (the reload hook).
    """

    def __init__(
        self,
        engine: MongoDBEngine,
        slug: str,
        *,
        model: str = "rbac",
        collection: str = "casbin_policies",
        reload_interval: float = 5.0,
    ) -> None:
        try:
            import casbin
        except ImportError as exc:  # pragma: no cover - pycasbin is in the auth extra
            raise ConfigurationError(
                f"the casbin provider of app {slug!r} needs pycasbin, which is not installed: "
                'pip install "mdb-sync[auth]"',
                context={"app": slug, "extra": "auth", "missing": ["casbin"]},
            ) from exc
        from .casbin_adapter import MongoPolicyAdapter

        self.slug = slug
        self.adapter = MongoPolicyAdapter(engine, slug, collection)
        if model == "rbac":
            casbin_model = casbin.Enforcer.new_model(text=RBAC_MODEL)
        elif model == "acl":
            casbin_model = casbin.Enforcer.new_model(text=ACL_MODEL)
        else:
            try:
                casbin_model = casbin.Enforcer.new_model(path=model)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ConfigurationError(
                    f"auth.policy.authorization.model of {slug!r}: cannot load the casbin model "
                    f"file {model!r}: {exc}",
                    context={"app": slug, "path": "auth.policy.authorization.model"},
                ) from exc
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._version = self.adapter.version()
        self._checked = time.monotonic()
        self.enforcer = casbin.SyncedEnforcer(casbin_model, self.adapter)
        tokens = self.enforcer.get_model().model["r"]["r"].tokens
        #: The domain argument of requests (the slug), or None for models without one.
        self.domain: str | None = slug if len(tokens) == 4 else None

    # --- deciding -------------------------------------------------------------------------------

    def _args(self, *values: str) -> tuple[str, ...]:
        return (values[0], self.domain, *values[1:]) if self.domain else values

    def _link(self, subject: str, role: str) -> tuple[str, ...]:
        """A role link: ``g, subject, role[, domain]`` (the domain comes last in casbin)."""
        return (subject, role, self.domain) if self.domain else (subject, role)

    def check(self, subject: str, resource: str, action: str) -> bool:
        self.maybe_reload()
        return bool(self.enforcer.enforce(*self._args(str(subject), str(resource), str(action))))

    def roles_for(self, subject: str) -> list[str]:
        """Direct and inherited roles of ``subject`` in this app."""
        self.maybe_reload()
        if self.domain:
            return list(self.enforcer.get_implicit_roles_for_user(subject, self.domain))
        return list(self.enforcer.get_implicit_roles_for_user(subject))

    # --- reloading ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load the rules from the database again (the reload hook for other processes)."""
        version = self.adapter.version()
        self.enforcer.load_policy()
        with self._lock:
            self._version = version
            self._checked = time.monotonic()

    def maybe_reload(self) -> None:
        if time.monotonic() - self._checked < self.reload_interval:
            return
        with self._lock:
            self._checked = time.monotonic()
        if self.adapter.version() != self._version:
            self.reload()

    def _saved(self) -> None:
        # Our own change: the in-memory model already has it.
        with self._lock:
            self._version = self.adapter.version()

    # --- managing -------------------------------------------------------------------------------

    def add_policy(self, subject: str, resource: str, action: str) -> bool:
        added = bool(self.enforcer.add_policy(*self._args(subject, resource, action)))
        self._saved()
        return added

    def remove_policy(self, subject: str, resource: str, action: str) -> bool:
        removed = bool(self.enforcer.remove_policy(*self._args(subject, resource, action)))
        self._saved()
        return removed

    def add_role(self, subject: str, role: str) -> bool:
        added = bool(self.enforcer.add_grouping_policy(*self._link(subject, role)))
        self._saved()
        return added

    def remove_role(self, subject: str, role: str) -> bool:
        removed = bool(self.enforcer.remove_grouping_policy(*self._link(subject, role)))
        self._saved()
        return removed

    def set_roles(self, subject: str, roles: Iterable[str]) -> None:
        """Make ``subject``'s direct roles exactly ``roles``."""
        wanted = set(roles)
        current = self.enforcer.get_filtered_grouping_policy(0, subject)
        current_roles = {
            rule[1] for rule in current if not self.domain or rule[2:3] == [self.domain]
        }
        for role in current_roles - wanted:
            self.remove_role(subject, role)
        for role in wanted - current_roles:
            self.add_role(subject, role)

    def policies(self) -> list[list[str]]:
        return [list(p) for p in self.enforcer.get_policy()]

    def seed(self, policies: Iterable[Any], roles: Iterable[Any]) -> int:
        """Add the manifest's ``initial_policies`` and ``initial_roles`` once: a rule an
        admin removed later stays removed until the manifest's list changes."""
        policies, roles = list(policies), list(roles)
        if not policies and not roles:
            return 0
        fingerprint = hashlib.sha256(
            json.dumps([policies, roles], sort_keys=True, default=str).encode()
        ).hexdigest()
        versions = store.collection(self.adapter.engine, store.POLICY_VERSIONS)
        if (versions.find_one({"_id": self.slug}) or {}).get("seeded") == fingerprint:
            return 0
        added = 0
        for item in policies:
            if isinstance(item, dict):
                if "role" in item:
                    rule = [item.get("user") or item.get("subject"), item.get("role")]
                else:
                    rule = [item.get(k) for k in ("sub", "obj", "act")]
            else:
                rule = list(item)
            if any(not isinstance(v, str) or not v for v in rule) or len(rule) not in (2, 3):
                raise ConfigurationError(
                    f"auth.policy.authorization.initial_policies of {self.slug!r}: {item!r} is "
                    "not [subject, resource, action] or [user, role]",
                    context={"app": self.slug},
                )
            checked = [str(v) for v in rule]
            added += self.add_role(*checked) if len(checked) == 2 else self.add_policy(*checked)
        for item in roles:
            user = item.get("user") or item.get("subject") or item.get("email")
            role = item.get("role")
            if not isinstance(user, str) or not isinstance(role, str):
                raise ConfigurationError(
                    f"auth.policy.authorization.initial_roles of {self.slug!r}: {item!r} needs "
                    '"user" and "role"',
                    context={"app": self.slug},
                )
            added += self.add_role(user.strip().lower() if "@" in user else user, role)
        versions.update_one({"_id": self.slug}, {"$set": {"seeded": fingerprint}}, upsert=True)
        return added


class OsoProvider:
    """Authorization with an Oso (Polar) policy: ``check`` is ``oso.is_allowed(subject,
    action, resource)``. Needs the ``oso`` package."""

    def __init__(self, policy: str | None = None, policy_file: str | None = None) -> None:
        try:
            # import-not-found: oso is an optional extra, absent from the type-checking
            # environment (the ImportError below is what a user without it gets).
            from oso import Oso  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigurationError(
                "the oso authorization provider needs the 'oso' package, which is not "
                "installed: pip install 'mdb-sync[oso]' (or use the casbin provider)"
            ) from exc
        self.oso = Oso()
        if policy_file:
            self.oso.load_files([policy_file])
        if policy:
            self.oso.load_str(policy)

    def check(self, subject: str, resource: str, action: str) -> bool:
        return bool(self.oso.is_allowed(subject, action, resource))
