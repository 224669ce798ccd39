"""App users and global users, passwords, sessions and rate limits (framework-free)."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import time

import pytest
from auth_apps import SECRET, auth_manifest

from mdb_sync.auth import AuthService, PasswordHasher, PasswordPolicy, RateLimiter
from mdb_sync.auth.passwords import SCHEME
from mdb_sync.auth.store import now as store_now
from mdb_sync.exceptions import (
    AuthenticationError,
    ConfigurationError,
    RateLimitExceeded,
    TokenError,
    UserExistsError,
    UserInputError,
)

HASHER = PasswordHasher(n=4096)
PW = "correct horse battery"


@pytest.fixture
def auth(engine):
    engine.register_app(auth_manifest("users_app"))
    return AuthService(engine, "users_app", secret=SECRET, hasher=HASHER)


def test_users_live_in_the_apps_scoped_collection_with_a_unique_email(auth, raw_db):
    user = auth.register_user("  Ada@Example.COM ", PW, name="Ada")
    assert user["email"] == "ada@example.com" and user["roles"] == ["user"]
    assert "password_hash" not in user
    stored = raw_db["users_app_users"].find_one()
    assert stored["app_id"] == "users_app" and stored["name"] == "Ada"
    assert stored["password_hash"].startswith(SCHEME + "$1$n=4096,r=8,p=1$")
    assert PW not in str(stored)
    index = raw_db["users_app_users"].index_information()["email_unique"]
    assert index["key"] == [("app_id", 1), ("email", 1)] and index["unique"]
    with pytest.raises(UserExistsError):
        auth.register_user("ada@example.com", PW)


@pytest.mark.parametrize(
    "email", [{"$ne": None}, ["a@b.co"], None, "no-at-sign", "a@b", "x" * 250 + "@b.co"]
)
def test_malformed_emails_are_refused_before_any_query(auth, recorder, email):
    with pytest.raises(UserInputError, match="email"):
        auth.register_user(email, PW)
    recorder.clear()
    with pytest.raises(AuthenticationError, match="invalid email or password"):
        auth.authenticate(email, PW)
    assert recorder.commands("find") == []


def test_passwords_follow_the_policy(auth, engine):
    with pytest.raises(UserInputError, match="at least 8"):
        auth.register_user("a@b.co", "short")
    with pytest.raises(UserInputError, match="too common"):
        auth.register_user("a@b.co", "password123")
    with pytest.raises(UserInputError, match="must be a string"):
        auth.register_user("a@b.co", 12345678)
    manifest = auth_manifest("strict_pw")
    manifest["auth"]["password_policy"] = {"min_length": 10, "require_special": True}
    engine.register_app(manifest)
    strict = AuthService(engine, "strict_pw", secret=SECRET, hasher=HASHER)
    with pytest.raises(UserInputError) as info:
        strict.register_user("a@b.co", "alllowercase")
    assert "upper-case" in str(info.value) and "digit" in str(info.value)
    assert strict.register_user("a@b.co", "Good-Pass-2024")["email"] == "a@b.co"
    assert PasswordPolicy().problems("x" * 2000) == ["password must be at most 1024 characters"]


def test_unknown_email_wrong_password_and_inactive_user_fail_alike(auth):
    user = auth.register_user("ada@example.com", PW)
    messages = []
    for email, password in (("nobody@example.com", PW), ("ada@example.com", "wrong pass")):
        with pytest.raises(AuthenticationError) as info:
            auth.authenticate(email, password)
        messages.append(str(info.value))
    auth.deactivate(user["user_id"])
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate("ada@example.com", PW)
    messages.append(str(info.value))
    assert messages == ["invalid email or password"] * 3


#: Sign-in attempts of each kind the timing tests compare.
TIMING_ROUNDS = 15


def interleaved_medians(kinds: dict, rounds: int = TIMING_ROUNDS) -> dict[str, float]:
    """The median cost of each of ``kinds`` (name: callable), measured interleaved — one of
    each per round, their order rotating — so that whatever else the machine does falls on
    every kind alike.

    The cost is the CPU time of the signing-in thread: the work the server does for the
    attempt, which is what an attacker's clock sees on an idle server. On a loaded machine
    the wall clock adds the time other processes run meanwhile — several times the hash
    itself on a busy 2-core CI box — which no number of samples averages out reliably."""
    for attempt in kinds.values():  # warm-up: connections, caches, the first scrypt
        attempt()
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for i in range(rounds):
        shift = i % len(order)
        for kind in order[shift:] + order[:shift]:
            started = time.thread_time()
            kinds[kind]()
            times[kind].append(time.thread_time() - started)
    return {kind: statistics.median(values) for kind, values in times.items()}


def refused(auth, email: str):
    def sign_in() -> None:
        with pytest.raises(AuthenticationError):
            auth.authenticate(email, "wrong pass")

    return sign_in


def test_unknown_emails_cost_as_much_as_wrong_passwords(engine):
    """The dummy check runs the real scrypt: timing does not tell who is registered.

    Measured as an attacker would, by medians of interleaved attempts, against the cost of
    one bare scrypt check at the same parameters as the yardstick: an unknown email that
    skipped the hash would answer a whole hash faster."""
    engine.register_app(auth_manifest("timing"))
    hasher = PasswordHasher(n=2**14)
    auth = AuthService(engine, "timing", secret=SECRET, hasher=hasher)
    auth.register_user("ada@example.com", PW)
    stored = hasher.hash(PW)
    median = interleaved_medians(
        {
            "known": refused(auth, "ada@example.com"),
            "unknown": refused(auth, "nobody@example.com"),
            "hash": lambda: hasher.verify("wrong pass", stored),
        }
    )
    print("\nsign-in medians (CPU ms):", {k: round(v * 1000, 2) for k, v in median.items()})
    # Without the dummy check an unknown email would cost a look-up (~1 ms), not a hash.
    assert median["unknown"] > median["hash"] / 2, median
    assert abs(median["unknown"] - median["known"]) < median["hash"] / 4, median


def test_accounts_without_a_password_or_with_an_older_hash_cost_as_much(engine, raw_db):
    """A refused sign-in costs one check at the current parameters whatever the account
    holds: no password (an account made by signing in through a provider) used to answer
    without any hash, and a hash made before the cost was raised a fraction of one — both
    told the attacker that the email has an account, and which kind."""
    engine.register_app(auth_manifest("timing"))
    hasher = PasswordHasher(n=2**14)
    auth = AuthService(engine, "timing", secret=SECRET, hasher=hasher)
    older = AuthService(engine, "timing", secret=SECRET, hasher=PasswordHasher(n=2**12))
    older.register_user("old@example.com", PW)  # hashed at a quarter of the current cost
    user = auth.register_user("nopassword@example.com", PW)
    raw_db["timing_users"].update_one({"_id": user["_id"]}, {"$unset": {"password_hash": ""}})
    median = interleaved_medians(
        {
            "no password": refused(auth, "nopassword@example.com"),
            "older hash": refused(auth, "old@example.com"),
            "unknown": refused(auth, "nobody@example.com"),
        }
    )
    print("\nsign-in medians (CPU ms):", {k: round(v * 1000, 2) for k, v in median.items()})
    # The older hash alone is a quarter of a check: 3/4 of one would be missing.
    for kind in ("no password", "older hash"):
        assert abs(median[kind] - median["unknown"]) < median["unknown"] / 4, (kind, median)
    # ... and the right password still signs in (its hash is upgraded then).
    assert auth.authenticate("old@example.com", PW)["email"] == "old@example.com"
    upgraded = raw_db["timing_users"].find_one({"email": "old@example.com"})["password_hash"]
    assert "n=16384" in upgraded


def test_a_user_of_app_a_cannot_log_into_app_b(engine, auth):
    engine.register_app(auth_manifest("other_app"))
    other = AuthService(engine, "other_app", secret=SECRET, hasher=HASHER)
    user = auth.register_user("ada@example.com", PW)
    assert auth.authenticate("ada@example.com", PW)["user_id"] == user["user_id"]
    with pytest.raises(AuthenticationError, match="invalid email or password"):
        other.authenticate("ada@example.com", PW)
    assert other.get_user(user["user_id"]) is None
    sid, _ = auth.start_session(user)
    assert auth.load_session(sid) is not None
    assert other.load_session(sid) is None  # the session id is app A's


def test_hashes_are_upgraded_on_login_when_the_cost_rises(engine, auth, raw_db):
    auth.register_user("ada@example.com", PW)
    stronger = AuthService(engine, "users_app", secret=SECRET, hasher=PasswordHasher(n=8192))
    stronger.authenticate("ada@example.com", PW)
    stored = raw_db["users_app_users"].find_one()["password_hash"]
    assert "n=8192" in stored
    assert stronger.authenticate("ada@example.com", PW)
    assert auth.authenticate("ada@example.com", PW)  # the old deployment still verifies it


def test_werkzeug_hashes_are_accepted_and_rehashed(auth, raw_db):
    user = auth.register_user("ada@example.com", PW)
    salt = "abcdefgh12345678"
    digest = hashlib.pbkdf2_hmac("sha256", PW.encode(), salt.encode(), 1000).hex()
    raw_db["users_app_users"].update_one(
        {"_id": user["_id"]}, {"$set": {"password_hash": f"pbkdf2:sha256:1000${salt}${digest}"}}
    )
    assert auth.authenticate("ada@example.com", PW)
    assert raw_db["users_app_users"].find_one()["password_hash"].startswith(SCHEME)
    with pytest.raises(ConfigurationError):
        PasswordHasher(n=1000)


def test_change_password_ends_sessions_and_needs_the_current_one(auth):
    user = auth.register_user("ada@example.com", PW)
    sid, _ = auth.start_session(user)
    with pytest.raises(AuthenticationError, match="current password is wrong"):
        auth.change_password(user["user_id"], "not it at all", "new passphrase here")
    assert auth.load_session(sid) is not None
    updated = auth.change_password(user["user_id"], PW, "new passphrase here")
    assert updated["auth_version"] == 1
    assert auth.load_session(sid) is None
    with pytest.raises(AuthenticationError):
        auth.authenticate("ada@example.com", PW)
    assert auth.authenticate("ada@example.com", "new passphrase here")


def test_sessions_expire_and_are_stored_hashed(engine, raw_db):
    manifest = auth_manifest("sess")
    manifest["token_management"]["session_inactivity_timeout"] = 60
    manifest["token_management"]["max_sessions_per_user"] = 2
    engine.register_app(manifest)
    auth = AuthService(engine, "sess", secret=SECRET, hasher=HASHER)
    user = auth.register_user("ada@example.com", PW)
    sids = [auth.start_session(user)[0] for _ in range(3)]
    assert auth.load_session(sids[0]) is None  # only the newest two are kept
    assert auth.load_session(sids[2]) is not None
    stored = list(raw_db["mdb_auth_sessions"].find())
    assert len(stored) == 2 and all(sid not in str(stored) for sid in sids)
    raw_db["mdb_auth_sessions"].update_many({}, {"$set": {"expires_at": stored[0]["created_at"]}})
    assert auth.load_session(sids[2]) is None  # expired: refused even before the TTL sweep
    fingerprint = {"ip": "a"}
    bound, _ = auth.start_session(user, fingerprint=fingerprint)
    assert auth.load_session(bound, fingerprint) is not None
    assert auth.load_session(bound, {"ip": "b"}) is None


def test_global_users_are_shared_with_roles_per_app(engine, raw_db):
    for slug, roles in (("shop", ["customer"]), ("blog", ["reader"])):
        manifest = auth_manifest(slug)
        manifest["auth"]["users"]["strategy"] = "global_users"
        manifest["auth"]["policy"]["authorization"]["default_roles"] = roles
        engine.register_app(manifest)
    engine.register_app(auth_manifest("private"))
    shop = AuthService(engine, "shop", secret=SECRET, hasher=HASHER)
    blog = AuthService(engine, "blog", secret=SECRET, hasher=HASHER)
    private = AuthService(engine, "private", secret=SECRET, hasher=HASHER)
    user = shop.register_user("ada@example.com", PW)
    assert user["roles"] == ["customer"]
    assert blog.get_user(user["user_id"]) is None  # not a member yet
    joined = blog.authenticate("ada@example.com", PW)
    assert joined["user_id"] == user["user_id"] and joined["roles"] == ["reader"]
    blog.set_roles(user["user_id"], ["reader", "user"])
    assert shop.get_user(user["user_id"])["roles"] == ["customer"]
    with pytest.raises(UserExistsError):
        blog.register_user("ada@example.com", PW)
    with pytest.raises(AuthenticationError):
        private.authenticate("ada@example.com", PW)  # app_users apps never see them
    stored = raw_db["mdb_auth_users"].find_one()
    assert sorted(stored["app_ids"]) == ["blog", "shop"]
    assert "users" not in engine.get_scoped_db("shop").list_collection_names()
    blog.deactivate(user["user_id"])
    with pytest.raises(AuthenticationError):
        blog.authenticate("ada@example.com", PW)
    assert shop.authenticate("ada@example.com", PW)["roles"] == ["customer"]


def test_demo_users_are_seeded_once(engine):
    manifest = auth_manifest("demo")
    manifest["auth"]["users"]["demo_users"] = [
        {"email": "admin@example.com", "password": "demo admin passphrase", "role": "admin"}
    ]
    engine.register_app(manifest)
    auth = AuthService(engine, "demo", secret=SECRET, hasher=HASHER)
    AuthService(engine, "demo", secret=SECRET, hasher=HASHER)
    assert [u["email"] for u in auth.list_users()] == ["admin@example.com"]
    assert auth.authenticate("admin@example.com", "demo admin passphrase")["roles"] == ["admin"]


def test_the_rate_limit_counts_in_the_database(engine, raw_db):
    limiter = RateLimiter(engine)
    results = [limiter.hit("app", "login", "10.0.0.1", 3, 60) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert 55 <= results[-1].retry_after <= 60
    assert limiter.hit("app", "login", "10.0.0.2", 3, 60).allowed  # per key
    assert limiter.hit("other", "login", "10.0.0.1", 3, 60).allowed  # per app
    with pytest.raises(RateLimitExceeded) as info:
        limiter.check("app", "login", "10.0.0.1", 3, 60)
    assert info.value.retry_after >= 55
    assert "10.0.0.1" not in str(list(raw_db["mdb_auth_rate_limits"].find()))
    # A window that is over starts again at one attempt.
    raw_db["mdb_auth_rate_limits"].update_many(
        {}, [{"$set": {"window_start": {"$subtract": ["$window_start", 61_000]}}}]
    )
    assert limiter.hit("app", "login", "10.0.0.1", 3, 60).count == 1
    limiter.reset("app", "login", "10.0.0.1")
    assert limiter.hit("app", "login", "10.0.0.1", 3, 60).allowed


_OTHER_PROCESS = """
import sys
from mdb_sync import MongoDBEngine
from mdb_sync.auth import RateLimiter
uri, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with MongoDBEngine(uri, db) as engine:
    limiter = RateLimiter(engine)
    print(sum(limiter.hit("app", "login", "1.2.3.4", 10, 300).allowed for _ in range(n)))
"""


def test_the_limit_holds_across_processes(engine, mongo_uri, db_name):
    limiter = RateLimiter(engine)
    allowed_here = sum(limiter.hit("app", "login", "1.2.3.4", 10, 300).allowed for _ in range(6))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDB_MONGO")}
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, mongo_uri, db_name, "6"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    assert allowed_here == 6
    assert int(out.stdout.strip()) == 4  # only 10 in total, whoever asks
    assert not limiter.hit("app", "login", "1.2.3.4", 10, 300).allowed


def _authenticate_in_child(auth, queue) -> None:
    user = auth.authenticate("ada@example.com", PW)
    queue.put((user["email"], auth.limiter.hit("users_app", "fork", "k", 5, 60).count))


def test_a_forked_worker_uses_the_parents_service(auth):
    import multiprocessing

    auth.register_user("ada@example.com", PW)
    auth.limiter.hit("users_app", "fork", "k", 5, 60)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_authenticate_in_child, args=(auth, queue))
    proc.start()
    assert queue.get(timeout=60) == ("ada@example.com", 2)
    proc.join(60)
    assert proc.exitcode == 0
    assert auth.limiter.hit("users_app", "fork", "k", 5, 60).count == 3


def test_audit_events_are_recorded_when_configured(engine, raw_db):
    manifest = auth_manifest("audited")
    manifest["auth"]["audit"] = {"events": ["login", "login_failed"], "retention_days": 7}
    engine.register_app(manifest)
    auth = AuthService(engine, "audited", secret=SECRET, hasher=HASHER)
    user = auth.register_user("ada@example.com", PW)
    auth.authenticate("ada@example.com", PW)
    with pytest.raises(AuthenticationError):
        auth.authenticate("ada@example.com", "wrong pass")
    events = [(e["event"], e.get("user_id")) for e in raw_db["audited_auth_audit"].find()]
    assert events == [("login", user["user_id"]), ("login_failed", None)]
    assert all(e["app_id"] == "audited" for e in raw_db["audited_auth_audit"].find())
    index = raw_db["audited_auth_audit"].index_information()["retention"]
    assert index["expireAfterSeconds"] == 7 * 86_400


def _lockout_app(engine, slug, **lockout):
    manifest = auth_manifest(slug)
    manifest["token_management"]["security"]["account_lockout"] = lockout
    engine.register_app(manifest)
    return AuthService(engine, slug, secret=SECRET, hasher=HASHER)


def test_account_lockout_stops_a_guesser_whatever_the_email(engine, raw_db):
    auth = _lockout_app(engine, "locked", max_failed_attempts=3, lockout_duration_seconds=600)
    auth.register_user("ada@example.com", PW)
    with pytest.raises(AuthenticationError):
        auth.authenticate("ada@example.com", "wrong pass")
    auth.authenticate("ada@example.com", PW)  # a success forgets the failure
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="invalid email or password"):
            auth.authenticate("Ada@Example.com", "wrong pass")
    with pytest.raises(RateLimitExceeded, match="too many failed sign-ins") as info:
        auth.authenticate("ada@example.com", PW)  # locked: not even the right password
    assert 590 <= info.value.retry_after <= 600

    # An email without an account locks the same way: a lock tells nothing about who exists.
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="invalid email or password"):
            auth.authenticate("nobody@example.com", "wrong pass")
    with pytest.raises(RateLimitExceeded, match="too many failed sign-ins"):
        auth.authenticate("nobody@example.com", "wrong pass")

    # Other accounts are unaffected; every process sees the lock (it is in the database).
    auth.register_user("bob@example.com", PW)
    assert auth.authenticate("bob@example.com", PW)["email"] == "bob@example.com"
    with pytest.raises(RateLimitExceeded):
        AuthService(engine, "locked", secret=SECRET, hasher=HASHER).authenticate(
            "ada@example.com", PW
        )
    stored = list(raw_db["mdb_auth_rate_limits"].find({"scope": "lockout"}))
    assert len(stored) == 2 and "example.com" not in str(stored)  # emails stored hashed

    auth.unlock_account(" ADA@example.com")
    assert auth.authenticate("ada@example.com", PW)["email"] == "ada@example.com"


def test_a_lockout_ends_after_its_duration(engine):
    auth = _lockout_app(engine, "short_lock", max_failed_attempts=2, lockout_duration_seconds=1)
    auth.register_user("ada@example.com", PW)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            auth.authenticate("ada@example.com", "wrong pass")
    with pytest.raises(RateLimitExceeded):
        auth.authenticate("ada@example.com", PW)
    time.sleep(1.2)
    with pytest.raises(AuthenticationError):  # counting starts afresh: one failure is not a lock
        auth.authenticate("ada@example.com", "wrong pass")
    assert auth.authenticate("ada@example.com", PW)["email"] == "ada@example.com"


def test_checks_are_reserved_and_a_success_under_a_lock_is_refused(engine, raw_db):
    """Reserve, then settle: a check in flight holds a slot; a lock set while a correct
    password is being checked (apps sharing an account may be stricter) refuses it."""
    from mdb_sync.auth.lockout import AccountLockout, LockoutPolicy

    email = "ada@example.com"
    strict = AccountLockout(engine, "a", LockoutPolicy(2, 60), shared=True)
    loose = AccountLockout(engine, "b", LockoutPolicy(3, 60), shared=True)
    correct = loose.reserve(email)  # ada's own sign-in, hashing
    guess_a, guess_b = strict.reserve(email), loose.reserve(email)
    with pytest.raises(RateLimitExceeded):  # 3 checks in flight: loose has no slot left
        loose.reserve(email)
    assert loose.failed(guess_b) is False
    assert strict.failed(guess_a) is True  # strict's 2nd failure locks the shared account
    with pytest.raises(RateLimitExceeded, match="too many failed sign-ins"):
        loose.succeeded(correct)
    with pytest.raises(RateLimitExceeded):
        strict.reserve(email)
    [doc] = raw_db["mdb_auth_rate_limits"].find({"scope": "lockout"})
    assert doc["pending"] == [] and doc["failures"] == 0 and doc["locked_until"]
    assert "ada" not in str(doc)

    # A reservation whose request died keeps its slot until the window ends (fails closed).
    per_app = AccountLockout(engine, "c", LockoutPolicy(1, 60))
    per_app.reserve(email)
    with pytest.raises(RateLimitExceeded) as info:
        per_app.reserve(email)
    assert 50 <= info.value.retry_after <= 60


def test_global_users_apps_may_only_tighten_the_shared_lockout(engine):
    from mdb_sync.auth.lockout import LockoutPolicy

    def policy(**lockout):
        manifest = auth_manifest("shared_lock")
        manifest["auth"]["users"]["strategy"] = "global_users"
        if lockout:
            manifest["token_management"]["security"]["account_lockout"] = lockout
        engine.register_app(manifest)
        return AuthService(engine, "shared_lock", secret=SECRET, hasher=HASHER).lockout

    assert policy().policy == LockoutPolicy()  # none configured: the defaults
    assert policy(enabled=False).policy == LockoutPolicy()
    loose = policy(max_failed_attempts=100, lockout_duration_seconds=5)
    assert loose.shared and loose.policy == LockoutPolicy(5, 900)
    strict = policy(max_failed_attempts=3, lockout_duration_seconds=3600)
    assert strict.policy == LockoutPolicy(3, 3600)


def test_older_security_spellings_act_and_inert_settings_are_reported(engine, caplog):
    manifest = auth_manifest("spellings")
    manifest["auth"]["password_policy"] = {"check_breaches": True}
    manifest["token_management"]["security"].update(
        session_fingerprinting={"enabled": True},
        ip_validation={},
        token_fingerprinting={"enabled": True},
    )
    engine.register_app(manifest)
    with caplog.at_level("WARNING", logger="mdb_sync.auth"):
        auth = AuthService(engine, "spellings", secret=SECRET, hasher=HASHER)
    assert auth.config.bind_fingerprint and auth.config.bind_ip
    assert auth.lockout is None
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "token_management.security.token_fingerprinting has no effect" in warned
    assert "auth.password_policy.check_breaches" in warned

    manifest = auth_manifest("binding_wins")
    manifest["auth"]["session_binding"] = {"bind_ip": False}
    manifest["token_management"]["security"]["ip_validation"] = {"enabled": True}
    engine.register_app(manifest)
    assert not AuthService(engine, "binding_wins", secret=SECRET, hasher=HASHER).config.bind_ip


def _reset_app(engine, slug="resets", **reset):
    manifest = auth_manifest(slug)
    manifest["auth"]["users"]["password_reset"] = reset
    manifest["token_management"]["security"]["account_lockout"] = {"max_failed_attempts": 1}
    engine.register_app(manifest)
    return AuthService(engine, slug, secret=SECRET, hasher=HASHER)


def test_password_reset_tokens_are_single_use_hashed_and_voided_by_changes(engine, raw_db):
    from mdb_sync.auth.signals import password_reset_requested

    auth = _reset_app(engine)
    ada = auth.register_user("ada@example.com", PW)
    sid, _ = auth.start_session(ada)
    sent = []
    with password_reset_requested.connected_to(lambda _e, **kw: sent.append(kw)):
        user, token = auth.request_password_reset(" ADA@example.com")
        assert user["email"] == "ada@example.com"
        assert auth.request_password_reset("nobody@example.com") is None  # nothing to send
        assert auth.request_password_reset("not an email") is None
    assert [(kw["slug"], kw["user"]["email"], kw["token"]) for kw in sent] == [
        ("resets", "ada@example.com", token)
    ]
    stored = raw_db["mdb_auth_resets"].find_one()
    assert token not in str(stored) and stored["app_id"] == "resets"

    with pytest.raises(UserInputError, match="at least"):
        auth.reset_password(token, "short")  # refused by the policy: the token stays valid
    with pytest.raises(AuthenticationError):
        auth.authenticate("ada@example.com", "a wrong guess 1")  # locks the account (max 1)
    new = "brand new horse battery"
    assert auth.reset_password(token, new)["email"] == "ada@example.com"
    assert auth.authenticate("ada@example.com", new)  # the reset lifted the lock
    assert auth.load_session(sid) is None  # and ended the sessions
    with pytest.raises(TokenError, match="invalid or has expired"):
        auth.reset_password(token, "yet another horse 2")  # spent

    # A later password change voids outstanding tokens; so does deactivation.
    _, first = auth.request_password_reset("ada@example.com")
    auth.change_password(ada["user_id"], new, "changed horse battery 3")
    with pytest.raises(TokenError):
        auth.reset_password(first, "yet another horse 4")
    _, second = auth.request_password_reset("ada@example.com")
    auth.deactivate(ada["user_id"])
    with pytest.raises(TokenError):
        auth.reset_password(second, "yet another horse 5")
    assert auth.request_password_reset("ada@example.com") is None

    # Another app's token, forged or malformed tokens: all refused alike.
    bob = auth.register_user("bob@example.com", PW)
    other = _reset_app(engine, "elsewhere")
    other.register_user("bob@example.com", PW)
    _, foreign = other.request_password_reset("bob@example.com")
    for bad in (foreign, "x" * 43, None, {"$ne": None}, "short"):
        with pytest.raises(TokenError):
            auth.reset_password(bad, "yet another horse 6")
    assert auth.authenticate("bob@example.com", PW)["user_id"] == bob["user_id"]


def test_one_account_gets_a_bounded_number_of_reset_links(engine):
    auth = _reset_app(engine)
    auth.register_user("ada@example.com", PW)
    links = [auth.request_password_reset("ada@example.com") for _ in range(5)]
    assert [link is not None for link in links] == [True, True, True, False, False]
    auth.register_user("bob@example.com", PW)
    assert auth.request_password_reset("bob@example.com") is not None  # per account


def test_password_reset_tokens_expire(engine, raw_db):
    auth = _reset_app(engine, token_ttl_seconds=300)
    auth.register_user("ada@example.com", PW)
    _, token = auth.request_password_reset("ada@example.com")
    raw_db["mdb_auth_resets"].update_many({}, {"$set": {"expires_at": store_now()}})
    with pytest.raises(TokenError):
        auth.reset_password(token, "brand new horse battery")


def test_password_reset_is_off_unless_the_manifest_enables_it(auth):
    with pytest.raises(ConfigurationError, match="password_reset"):
        auth.request_password_reset("ada@example.com")


def test_a_registration_cannot_claim_a_proven_email(engine):
    manifest = auth_manifest("proofs", developer_id="owner@example.com")
    engine.register_app(manifest)
    auth = AuthService(engine, "proofs", secret=SECRET, hasher=HASHER)
    for field in ("email_verified", "email_verified_via", "email_verified_at"):
        with pytest.raises(UserInputError, match="cannot be set"):
            auth.register_user("owner@example.com", PW, **{field: "admin"})
    user = auth.register_user("owner@example.com", PW)
    assert user["email_verified"] is False and not auth.is_owner(user)
    proven = auth.mark_email_verified(user["user_id"], via="support ticket 12")
    assert proven["email_verified"] and proven["email_verified_via"] == "support ticket 12"
    assert auth.is_owner(proven)
    made = auth.create_user("staff@example.com", PW)
    assert made["email_verified"] and made["email_verified_via"] == "admin"
