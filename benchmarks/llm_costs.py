"""What routing, pricing and the budget add to an LLM call.

Compares, in the same run, interleaved, against the tests' OpenAI-compatible server on
127.0.0.1 (so the provider answers in about a millisecond and our own costs show):

* the ``openai`` client alone (``client.chat.completions.create``),
* ``LLMService.chat`` with a model that has no price (routing only: no ledger write),
* with a priced model (the spending recorded in MongoDB: one update per call),
* with a priced model and a monthly budget (reserve before the call, settle after: two
  updates, and the prompt counted with tiktoken for the reservation).

Prints the median milliseconds per call and the overhead over the bare client.

    .venv/bin/python benchmarks/llm_costs.py [--calls 200] [--rounds 5]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402
from openai_server import OpenAIServer  # noqa: E402

from mdb_sync import MongoDBEngine, embedded  # noqa: E402

PROMPT = "Summarise the water temperature advice for green tea in one sentence."


def per_call(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["LAB_API_KEY"] = "test-key"
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    db_name = f"bench_llm_{uuid.uuid4().hex[:8]}"
    try:
        with OpenAIServer() as api, MongoDBEngine(uri or server.uri, db_name) as engine:
            base = {
                "enabled": True,
                "provider": "local",
                "providers": {"lab": {"base_url": api.base_url}},
                "max_tokens": 20,
                "max_retries": 0,
            }
            priced = {"lab/gpt-4o-mini": {"input": 0.15, "output": 0.6}}
            apps = {
                "unpriced": dict(base),
                "priced": {**base, "prices": priced},
                "budget": {**base, "prices": priced, "monthly_budget_usd": 1000},
            }
            for slug, config in apps.items():
                engine.register_app({"slug": slug, "llm_config": config})
            services = {slug: engine.get_llm_service(slug) for slug in apps}
            client = openai.OpenAI(api_key="test-key", base_url=api.base_url, max_retries=0)
            messages = [{"role": "user", "content": PROMPT}]
            runs = {
                "openai client alone": lambda: client.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, max_tokens=20
                ),
                **{
                    f"LLMService, {slug}": (
                        lambda s=services[slug]: s.chat(messages, model="lab/gpt-4o-mini")
                    )
                    for slug in apps
                },
            }
            for fn in runs.values():  # warm up: connections, tiktoken, indexes
                for _ in range(5):
                    fn()
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    times[name].append(per_call(fn, args.calls))
                    api.reset()
            print(f"server: {engine.describe_server()}; {args.calls} calls x {args.rounds} rounds")
            print("(median ms per call; the provider is a local test server)\n")
            header = f"{'path':<28}{'ms/call':>10}{'overhead ms':>14}"
            print(header)
            print("-" * len(header))
            bare = statistics.median(times["openai client alone"])
            for name, values in times.items():
                median = statistics.median(values)
                print(f"{name:<28}{median:>10.2f}{median - bare:>14.2f}")
            spent = services["budget"].spending()
            print(f"\nbudget app this month: ${spent['spent_usd']:.6f} over {spent['calls']} calls")
            engine.client.drop_database(db_name)
    finally:
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
