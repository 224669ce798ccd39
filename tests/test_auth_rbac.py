"""Authorization: casbin on the app's own collection, the provider protocol, the matrix."""

from __future__ import annotations

import pytest
from auth_apps import SECRET, auth_manifest

from mdb_sync import MongoDBEngine
from mdb_sync.auth import AuthorizationProvider, AuthService, CasbinProvider, PasswordHasher
from mdb_sync.auth.casbin_adapter import MongoPolicyAdapter
from mdb_sync.exceptions import ConfigurationError

HASHER = PasswordHasher(n=4096)
PW = "correct horse battery"


@pytest.fixture
def auth(engine):
    engine.register_app(auth_manifest("rbac_app"))
    return AuthService(engine, "rbac_app", secret=SECRET, hasher=HASHER)


MATRIX = [
    # (roles, resource, action, allowed)
    (["admin"], "reports", "read", True),
    (["admin"], "reports", "delete", True),
    (["user"], "reports", "read", True),
    (["user"], "reports", "delete", False),
    (["user"], "/tasks/42", "write", True),
    (["user"], "/tasks/42/notes", "write", False),
    (["user"], "/tasks/42", "read", False),
    ([], "reports", "read", False),
    (["guest"], "reports", "read", False),
]


@pytest.mark.parametrize(("roles", "resource", "action", "allowed"), MATRIX)
def test_the_rbac_matrix(auth, roles, resource, action, allowed):
    email = f"{'-'.join(roles) or 'nobody'}@example.com"
    user = auth.register_user(email, PW, roles=roles)
    assert auth.is_allowed(user, resource, action) is allowed
    assert auth.check(email, resource, action) is allowed  # roles are linked in casbin


def test_roles_are_per_app_domains(engine, auth, raw_db):
    engine.register_app(auth_manifest("rbac_other"))
    other = AuthService(engine, "rbac_other", secret=SECRET, hasher=HASHER)
    auth.register_user("ada@example.com", PW, roles=["admin"])
    assert auth.check("ada@example.com", "reports", "delete")
    assert not other.check("ada@example.com", "reports", "delete")
    rules = list(raw_db["rbac_app_casbin_policies"].find({}, {"_id": 0}))
    assert {"ptype": "g", "v0": "ada@example.com", "v1": "admin", "v2": "rbac_app",
            "app_id": "rbac_app"} in rules  # fmt: skip
    assert all(r["app_id"] == "rbac_app" for r in rules)
    assert raw_db["rbac_other_casbin_policies"].count_documents({"v0": "ada@example.com"}) == 0


def test_inherited_roles_count(auth):
    authz = auth.authz
    assert isinstance(authz, CasbinProvider) and isinstance(authz, AuthorizationProvider)
    authz.add_role("editor", "user")  # editors inherit the user role's rights
    user = auth.register_user("ed@example.com", PW, roles=["editor"])
    assert auth.is_allowed(user, "reports", "read")
    assert {"editor", "user"} <= auth.roles_of(user)
    assert not auth.is_allowed(user, "reports", "delete")


def test_the_adapter_writes_incrementally_on_the_engines_client(engine, auth, recorder):
    authz = auth.authz
    recorder.clear()
    authz.add_policy("auditor", "logs", "read")
    authz.remove_policy("user", "reports", "read")
    names = [(c.get("update") or c.get("delete") or c.get("insert") or c.get("find")) for c in
             recorder.commands("update", "delete", "insert")]  # fmt: skip
    assert "rbac_app_casbin_policies" in names
    deletes = recorder.commands("delete")
    assert all(d["deletes"][0]["q"].get("v0") for d in deletes if d["delete"].endswith("policies"))
    assert auth.check("auditor", "logs", "read") and not auth.check("user", "reports", "read")
    reloaded = CasbinProvider(engine, "rbac_app")
    assert reloaded.check("auditor", "logs", "read")
    assert not reloaded.check("user", "reports", "read")


def test_another_process_sees_changes_through_the_version(mongo_uri, db_name, auth):
    """A second engine (as another process would have) notices the version and reloads."""
    with MongoDBEngine(mongo_uri, db_name) as second:
        theirs = CasbinProvider(second, "rbac_app", reload_interval=0)
        lazy = CasbinProvider(second, "rbac_app", reload_interval=3600)
        assert not theirs.check("bob@example.com", "reports", "delete")
        auth.authz.add_role("bob@example.com", "admin")
        assert theirs.check("bob@example.com", "reports", "delete")
        assert not lazy.check("bob@example.com", "reports", "delete")  # its interval not over
        lazy.reload()  # the reload hook
        assert lazy.check("bob@example.com", "reports", "delete")


def test_filtered_loading(engine, auth):
    import casbin
    from casbin.persist.adapters.filtered_file_adapter import Filter

    auth.register_user("ada@example.com", PW, roles=["admin"])
    adapter = MongoPolicyAdapter(engine, "rbac_app", "casbin_policies")
    from mdb_sync.auth.provider import RBAC_MODEL

    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=RBAC_MODEL), adapter)
    only_admin = Filter()
    only_admin.P = ["admin"]
    enforcer.load_filtered_policy(only_admin)
    assert enforcer.is_filtered()
    assert [p[0] for p in enforcer.get_policy()] == ["admin"]
    assert enforcer.enforce("ada@example.com", "rbac_app", "reports", "delete")
    enforcer.load_filtered_policy({"ptype": "p", "v0": "user"})
    assert {p[0] for p in enforcer.get_policy()} == {"user"}
    with pytest.raises(ValueError):
        enforcer.load_filtered_policy({"$where": "1"})


def test_initial_policies_are_seeded_once(engine, auth):
    auth.authz.remove_policy("user", "reports", "read")  # an admin's decision
    again = AuthService(engine, "rbac_app", secret=SECRET, hasher=HASHER)
    assert not again.check("user", "reports", "read")


def test_acl_and_model_file(engine, tmp_path):
    manifest = auth_manifest("acl_app")
    manifest["auth"]["policy"]["authorization"] = {
        "model": "acl",
        "initial_policies": [["ada@example.com", "reports", "read"]],
    }
    engine.register_app(manifest)
    acl = AuthService(engine, "acl_app", secret=SECRET, hasher=HASHER)
    assert acl.check("ada@example.com", "reports", "read")
    assert not acl.check("ada@example.com", "reports", "write")
    assert not acl.check("bob@example.com", "reports", "read")

    model = tmp_path / "model.conf"
    model.write_text(
        "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n"
        "[policy_effect]\ne = some(where (p.eft == allow))\n"
        "[matchers]\nm = r.sub == p.sub && r.obj == p.obj && r.act == p.act\n"
    )
    manifest = auth_manifest("file_app")
    manifest["auth"]["policy"]["authorization"] = {
        "model": str(model),
        "initial_policies": [["ada", "/x", "get"]],
    }
    engine.register_app(manifest)
    custom = AuthService(engine, "file_app", secret=SECRET, hasher=HASHER)
    assert custom.check("ada", "/x", "get") and not custom.check("ada", "/y", "get")
    manifest["auth"]["policy"]["authorization"]["model"] = str(tmp_path / "missing.conf")
    engine.register_app(manifest)
    with pytest.raises(ConfigurationError, match="cannot load the casbin model"):
        AuthService(engine, "file_app", secret=SECRET, hasher=HASHER)


def test_a_custom_provider_and_the_oso_provider(engine):
    class OnlyReads:
        def check(self, subject: str, resource: str, action: str) -> bool:
            return action == "read"

    manifest = auth_manifest("custom_app")
    manifest["auth"]["policy"]["provider"] = "custom"
    engine.register_app(manifest)
    with pytest.raises(ConfigurationError, match="provider="):
        AuthService(engine, "custom_app", secret=SECRET, hasher=HASHER)
    auth = AuthService(engine, "custom_app", secret=SECRET, hasher=HASHER, provider=OnlyReads())
    assert auth.check("anyone", "x", "read") and not auth.check("anyone", "x", "write")

    manifest = auth_manifest("oso_app")
    manifest["auth"]["policy"]["provider"] = "oso"
    manifest["auth"]["policy"]["authorization"] = {}
    engine.register_app(manifest)
    oso_auth = AuthService(engine, "oso_app", secret=SECRET, hasher=HASHER)
    with pytest.raises(ConfigurationError, match="needs the 'oso' package"):
        oso_auth.check("a", "b", "c")


def test_the_manifest_policy_decides_access(engine):
    manifest = auth_manifest("policy_app", developer_id="owner@example.com")
    manifest["auth"]["policy"].update(
        {
            "allowed_roles": ["staff"],
            "denied_users": ["mallory@example.com"],
            "required_permissions": ["reports:read"],
        }
    )
    manifest["auth"]["policy"]["authorization"]["initial_policies"] = [["staff", "reports", "read"]]
    engine.register_app(manifest)
    auth = AuthService(engine, "policy_app", secret=SECRET, hasher=HASHER)
    staff = auth.register_user("staff@example.com", PW, roles=["staff"])
    user = auth.register_user("user@example.com", PW, roles=["user"])
    mallory = auth.register_user("mallory@example.com", PW, roles=["staff"])
    registered = auth.register_user("owner@example.com", PW, roles=[])
    assert "roles" in auth.access_problem(registered)  # holding the address proves nothing
    owner = auth.mark_email_verified(registered["user_id"])  # an administrator vouches
    assert auth.access_problem(staff) is None
    assert "roles" in auth.access_problem(user)
    assert "denied" in auth.access_problem(mallory)
    assert auth.access_problem(owner) is None  # owner_can_access
