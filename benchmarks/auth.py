"""Cost of authenticating a request, against the raw operations it is made of.

Compares, in the same run and on the same server (microseconds per operation, median of
rounds):

* a bearer token: ``jwt.decode`` alone; ``TokenManager.verify`` (decode + the deny-list
  query); ``AuthService.user_from_token`` (+ loading the user) — what a request pays;
* a session cookie: one raw ``find_one`` by ``_id``; ``AuthService.load_session`` (session +
  user);
* a rate-limited attempt: one raw ``find_one_and_update`` upsert; ``RateLimiter.hit``;
* account lockout: what one password check pays when it is on — a reservation before the
  hash (``AccountLockout.reserve``, one pipeline upsert) and its settlement after it, as a
  success (``succeeded``: one ``delete_one``) or a failure (``failed``: one pipeline
  update); and the read-only ``AccountLockout.check``;
* a login (``AuthService.authenticate``, right password, cheap scrypt n=4096 so the
  lockout's share shows) without and with the lockout: the lockout's added cost per login;
* an authorization check: ``CasbinProvider.check`` (in memory, version check off);
* a password check at the default scrypt cost (n=2**15): the price of a login.

    .venv/bin/python benchmarks/auth.py [--ops 500] [--rounds 5]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt
from pymongo import ReturnDocument

from mdb_sync import MongoDBEngine, embedded
from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.auth.lockout import AccountLockout, LockoutPolicy

SECRET = "benchmark-secret-" + "x" * 32
MANIFEST = {
    "slug": "bench",
    "name": "bench",
    "auth": {
        "users": {"enabled": True},
        "policy": {
            "required": True,
            "authorization": {"initial_policies": [["user", "reports", "read"]]},
        },
    },
    "token_management": {},
}


def per_op(fn: Callable[[], Any], ops: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(ops):
            fn()
        results.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    try:
        with MongoDBEngine(uri or server.uri, "mdb_bench_auth") as engine:
            engine.client.drop_database("mdb_bench_auth")
            engine.register_app(MANIFEST)
            auth = AuthService(engine, "bench", secret=SECRET, hasher=PasswordHasher(n=4096))
            auth.authz.reload_interval = 3600.0  # measure the in-memory check
            user = auth.register_user("ada@example.com", "correct horse battery", roles=["user"])
            token = auth.issue_tokens(user)["access_token"]
            keys = auth.tokens.keys
            sid, session = auth.start_session(user)
            raw_sessions = engine._raw_collection("mdb_auth_sessions")
            raw_limits = engine._raw_collection("bench_raw_limits")
            never = LockoutPolicy(max_failed_attempts=10**9, duration_seconds=3600)
            lockout = AccountLockout(engine, "bench", never)
            ops, rounds = args.ops, args.rounds
            locked = dict(MANIFEST, slug="guarded")
            locked["token_management"] = {
                "security": {"account_lockout": {"max_failed_attempts": 5}}
            }
            engine.register_app(locked)
            cheap = PasswordHasher(n=4096)
            plain = AuthService(engine, "bench", secret=SECRET, hasher=cheap)
            guarded = AuthService(engine, "guarded", secret=SECRET, hasher=cheap)
            guarded.register_user("ada@example.com", "correct horse battery")
            logins = max(ops // 10, 20)

            def login_plain() -> Any:
                return plain.authenticate("ada@example.com", "correct horse battery")

            def login_guarded() -> Any:
                return guarded.authenticate("ada@example.com", "correct horse battery")

            def settle_success() -> None:
                lockout.succeeded(lockout.reserve("ada@example.com"))

            def settle_failure() -> None:
                lockout.failed(lockout.reserve("eve@example.com"))

            def decode() -> Any:
                return jwt.decode(
                    token, keys.signing_key, algorithms=["HS256"], audience="bench",
                    issuer="mdb-sync",
                )  # fmt: skip

            def raw_upsert() -> Any:
                return raw_limits.find_one_and_update(
                    {"_id": "k"}, {"$inc": {"count": 1}}, upsert=True,
                    return_document=ReturnDocument.AFTER,
                )  # fmt: skip

            rows = [
                ("bearer token", "jwt.decode", per_op(decode, ops, rounds),
                 "TokenManager.verify", per_op(lambda: auth.tokens.verify(token), ops, rounds)),
                ("bearer token", "jwt.decode", None,
                 "user_from_token", per_op(lambda: auth.user_from_token(token), ops, rounds)),
                ("session cookie", "find_one _id",
                 per_op(lambda: raw_sessions.find_one({"_id": session["_id"]}), ops, rounds),
                 "load_session", per_op(lambda: auth.load_session(sid), ops, rounds)),
                ("rate limit", "find_one_and_update", per_op(raw_upsert, ops, rounds),
                 "RateLimiter.hit",
                 per_op(lambda: auth.limiter.hit("bench", "b", "k", 10**9, 3600), ops, rounds)),
                ("account lockout", "find_one_and_update", None, "reserve+succeeded",
                 per_op(settle_success, ops, rounds)),
                ("account lockout", "find_one_and_update", None, "reserve+failed",
                 per_op(settle_failure, ops, rounds)),
                ("account lockout", "find_one _id",
                 per_op(lambda: raw_limits.find_one({"_id": "k"}), ops, rounds),
                 "AccountLockout.check",
                 per_op(lambda: lockout.check("ada@example.com"), ops, rounds)),
            ]  # fmt: skip
            # Interleaved rounds, so both logins see the same machine load.
            plain_us, guarded_us = [], []
            for _ in range(rounds):
                plain_us.append(per_op(login_plain, logins, 1))
                guarded_us.append(per_op(login_guarded, logins, 1))
            rows.append(("login (n=4096)", "authenticate, no lock", statistics.median(plain_us),
                         "with account_lockout", statistics.median(guarded_us)))  # fmt: skip
            check = per_op(lambda: auth.check("user", "reports", "read"), ops, rounds)
            default = PasswordHasher()
            stored = default.hash("correct horse battery")
            login = per_op(lambda: default.verify("correct horse battery", stored), 5, 3)
            engine.client.drop_database("mdb_bench_auth")
    finally:
        if server is not None:
            embedded.stop_private(server)

    header = f"{'what':<16}{'raw':<22}{'raw µs':>9}  {'mdb-sync':<21}{'µs':>9}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    raw_cost = None
    for what, raw_name, raw_us, ours_name, ours_us in rows:
        raw_cost = raw_us if raw_us is not None else raw_cost
        shown = f"{raw_us:9.1f}" if raw_us is not None else f"{'(same)':>9}"
        print(
            f"{what:<16}{raw_name:<22}{shown}  {ours_name:<21}{ours_us:9.1f}"
            f"{ours_us / raw_cost:8.1f}x"
        )
    print(f"{'authorization':<16}{'':<22}{'':>9}  {'casbin check':<21}{check:9.1f}")
    print(f"{'password check':<16}{'':<22}{'':>9}  {'scrypt n=2**15':<21}{login:9.0f}")
    _what, _raw, plain_us, _ours, guarded_us = rows[-1]
    added = guarded_us - plain_us
    print(
        f"account lockout adds {added:.0f} µs per login: {added / login * 100:.1f}% of one "
        "password check at the default cost"
    )


if __name__ == "__main__":
    main()
