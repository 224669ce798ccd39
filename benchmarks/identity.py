"""Cost of the identity features' parts, against the raw operations they are made of.

In the same run (microseconds per operation, median of rounds):

* a TOTP code check: pyotp's own ``TOTP.verify(valid_window=1)`` against what a check does
  on the CPU (open the AES-GCM-sealed secret, compute the three codes of the window, compare
  in constant time), and the lockout's reservation + settlement a check also pays (two
  round trips, as for passwords) against one raw ``find_one_and_update``;
* a platform hand-off: :meth:`HandOffs.issue` (the pair check in the registry, one insert)
  against a raw ``insert_one``, and :meth:`HandOffs.redeem` (one ``find_one_and_delete``,
  the pair check) against a raw ``find_one_and_delete``;
* an anonymous identity: :meth:`AnonymousIdentities.create` and ``get`` against a raw
  ``insert_one`` and ``find_one``.

    .venv/bin/python benchmarks/identity.py [--ops 300] [--rounds 5]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import hmac
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyotp  # noqa: E402

from mdb_sync import MongoDBEngine, embedded  # noqa: E402
from mdb_sync.auth import AnonymousIdentities, AuthService, PasswordHasher  # noqa: E402
from mdb_sync.auth.lockout import AccountLockout, LockoutPolicy  # noqa: E402
from mdb_sync.auth.platform import HandOffs, callback_url  # noqa: E402
from mdb_sync.auth.twofactor import SecondFactor  # noqa: E402

HUB, SHOP = "bench_portal", "bench_shop"
URLS = {HUB: "https://portal.example/auth", SHOP: "https://shop.example/auth"}


def median_us(fn: Callable[[], object], ops: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(ops):
            fn()
        samples.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(samples)


def manifest(slug: str) -> dict:
    auth: dict = {
        "mode": "shared",
        "users": {"enabled": True, "strategy": "global_users", "two_factor": {}},
        "policy": {"allow_anonymous": True, "required": False},
    }
    if slug == HUB:
        auth["related_apps"] = {SHOP: URLS[SHOP]}
    else:
        auth["auth_hub_url"] = URLS[HUB]
        auth["related_apps"] = {HUB: URLS[HUB]}
    return {"slug": slug, "auth": auth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    uri = uri or server.uri  # type: ignore[union-attr]
    rows: list[tuple[str, float]] = []

    def row(name: str, fn: Callable[[], object]) -> None:
        rows.append((name, median_us(fn, args.ops, args.rounds)))

    try:
        with MongoDBEngine(uri, "bench_identity") as engine:
            for slug in (HUB, SHOP):
                engine.register_app(manifest(slug))
            hasher = PasswordHasher(n=4096)
            hub = AuthService(engine, HUB, hasher=hasher, two_factor_key="k" * 32, seed=False)
            shop = AuthService(engine, SHOP, hasher=hasher, seed=False)
            user = hub.create_user(f"{secrets.token_hex(4)}@example.com", "Bench password 1")

            # --- TOTP --------------------------------------------------------------------------
            factor = hub.second_factor
            assert isinstance(factor, SecondFactor)
            secret = pyotp.random_base32(32)
            sealed = factor.seal(user["user_id"], secret)
            totp = pyotp.TOTP(secret)
            code = totp.now()
            row("pyotp TOTP.verify (window 1)", lambda: totp.verify(code, valid_window=1))

            def cpu_check() -> bool:
                opened = factor.unseal(user["user_id"], sealed)
                otp = pyotp.TOTP(opened)
                step = int(time.time()) // 30
                return any(
                    hmac.compare_digest(otp.generate_otp(s), code)
                    for s in (step - 1, step, step + 1)
                )

            row("code check on the CPU (open + 3 codes)", cpu_check)
            raw = engine._raw_collection("bench_raw")
            row(
                "raw find_one_and_update (upsert)",
                lambda: raw.find_one_and_update(
                    {"_id": "counter"}, {"$inc": {"n": 1}}, upsert=True
                ),
            )
            lockout = AccountLockout(engine, HUB, LockoutPolicy(10**9, 900), shared=True)
            row(
                "lockout reserve + succeeded",
                lambda: lockout.succeeded(lockout.reserve("2fa:bench")),
            )

            # --- hand-offs ---------------------------------------------------------------------
            issuer = HandOffs(hub)
            redeemer = HandOffs(shop)
            target = callback_url(URLS[SHOP])
            codes: list[str] = []
            row("raw insert_one", lambda: raw.insert_one({"_id": secrets.token_hex(16)}))
            row(
                "HandOffs.issue",
                lambda: codes.append(
                    issuer.issue(
                        SHOP, target, user, platform_session="s" * 64, authenticated_at=None
                    )
                ),
            )
            ids = [d["_id"] for d in raw.find({"_id": {"$ne": "counter"}}, {"_id": 1})]
            row("raw find_one_and_delete", lambda: raw.find_one_and_delete({"_id": ids.pop()}))
            row("HandOffs.redeem", lambda: redeemer.redeem(codes.pop(), target))

            # --- anonymous identities ----------------------------------------------------------
            anonymous = AnonymousIdentities(engine, HUB)
            tokens: list[str] = []
            row("AnonymousIdentities.create", lambda: tokens.append(anonymous.create()[0]))
            row("raw find_one", lambda: raw.find_one({"_id": "counter"}))
            row("AnonymousIdentities.get", lambda: anonymous.get(tokens[-1]))
    finally:
        if server is not None:
            embedded.stop_private(server)
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  µs/op (median of {args.rounds} x {args.ops})")
    for name, value in rows:
        print(f"{name:<{width}}  {value:10.1f}")


if __name__ == "__main__":
    main()
