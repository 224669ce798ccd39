"""Cost of an OAuth / OpenID Connect sign-in's parts, against the raw operations they are made of.

In the same run (microseconds per operation, median of rounds):

* the ID token check: joserfc's signature verification alone (``jwt.decode`` with the key
  set) against :func:`verify_id_token` (signature, issuer, audience, expiry, nonce, and
  authlib's claim checks);
* the key set from the cache (a hit) — what every sign-in pays after the first;
* starting a sign-in: one raw ``insert_one`` against :meth:`PendingSignIns.create`, and
  consuming it: one raw ``find_one_and_delete`` against :meth:`PendingSignIns.consume`.

    .venv/bin/python benchmarks/oauth.py [--ops 500] [--rounds 5]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server; the provider is the
test suite's (``tests/oidc_provider.py``) on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from joserfc import jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402
from oidc_provider import TestProvider  # noqa: E402

from mdb_sync import MongoDBEngine, embedded  # noqa: E402
from mdb_sync.auth.oauth.idtoken import verify_id_token  # noqa: E402
from mdb_sync.auth.oauth.metadata import ProviderCache  # noqa: E402
from mdb_sync.auth.oauth.states import PendingSignIns, new_key  # noqa: E402


def median_us(fn: Callable[[], object], ops: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(ops):
            fn()
        samples.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    uri = uri or server.uri  # type: ignore[union-attr]
    rows: list[tuple[str, float]] = []
    try:
        with TestProvider() as op, MongoDBEngine(uri, "bench_oauth") as engine:
            now = int(time.time())
            claims = {
                "iss": op.url,
                "sub": "u1",
                "aud": "bench",
                "iat": now,
                "exp": now + 3600,
                "nonce": "n" * 43,
            }
            token = jwt.encode({"alg": "RS256", "kid": op.key.kid}, claims, op.key)
            keys = KeySet([op.key])
            cache = ProviderCache()
            jwks = op.url + "/jwks"
            cache.keys(jwks, what="bench")

            def check() -> object:
                return verify_id_token(
                    token,
                    keys=lambda kid: cache.keys(jwks, what="bench", kid=kid),
                    issuer_ok=lambda iss, c: iss == op.url,
                    client_id="bench",
                    nonce="n" * 43,
                )

            rows.append(
                (
                    "jwt.decode (signature only)",
                    median_us(
                        lambda: jwt.decode(token, keys, algorithms=["RS256"]), args.ops, args.rounds
                    ),
                )
            )
            rows.append(("verify_id_token (all checks)", median_us(check, args.ops, args.rounds)))
            rows.append(
                (
                    "ProviderCache.keys (hit)",
                    median_us(
                        lambda: cache.keys(jwks, what="bench", kid=op.key.kid),
                        args.ops,
                        args.rounds,
                    ),
                )
            )
            raw = engine._raw_collection("bench_raw_states")
            rows.append(
                (
                    "raw insert_one",
                    median_us(
                        lambda: raw.insert_one({"_id": new_key(), "x": 1}), args.ops, args.rounds
                    ),
                )
            )
            pending = PendingSignIns(engine, "bench", 600)
            browser = new_key()
            states = []
            rows.append(
                (
                    "PendingSignIns.create",
                    median_us(
                        lambda: states.append(pending.create("p", browser, nonce="n")),
                        args.ops,
                        args.rounds,
                    ),
                )
            )
            ids = [d["_id"] for d in raw.find({}, {"_id": 1})]
            rows.append(
                (
                    "raw find_one_and_delete",
                    median_us(
                        lambda: raw.find_one_and_delete({"_id": ids.pop()}), args.ops, args.rounds
                    ),
                )
            )
            rows.append(
                (
                    "PendingSignIns.consume",
                    median_us(
                        lambda: pending.consume(states.pop(), "p", browser), args.ops, args.rounds
                    ),
                )
            )
            engine.client.drop_database("bench_oauth")
    finally:
        if server is not None:
            embedded.stop_private(server)
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  µs/op (median of {args.rounds} x {args.ops})")
    for name, value in rows:
        print(f"{name:<{width}}  {value:10.1f}")


if __name__ == "__main__":
    main()
