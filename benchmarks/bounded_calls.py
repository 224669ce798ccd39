"""Cost of the total deadlines on outbound HTTP calls, against the same calls unbounded.

In the same run, interleaved rounds (baseline, bounded, bounded, baseline...), wall time per
call in microseconds (median of the rounds) against servers on 127.0.0.1 that answer at once:

* a small GET: ``urllib.request.urlopen`` against :func:`mdb_sync.net_bounds.fetch` (a worker
  thread per call, its socket tracked, the body read with a size cap);
* an embeddings call: the ``openai`` client as it comes (per-phase timeouts only) against
  :meth:`OpenAIProvider.embed` (its connections through the deadline-keeping backend, each
  call under a thread deadline), both keeping their connection alive between calls.

    .venv/bin/python benchmarks/bounded_calls.py [--ops 200] [--rounds 6]
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402
from openai_server import OpenAIServer  # noqa: E402

from mdb_sync.ai import LLMConfig  # noqa: E402
from mdb_sync.ai.providers import OpenAIProvider  # noqa: E402
from mdb_sync.net_bounds import fetch  # noqa: E402

BODY = b'{"issuer": "https://idp.example", "keys": []}' * 20


class _Fast(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def per_call_us(fn: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - started) / ops * 1e6


def compare(
    baseline: Callable[[], object], ours: Callable[[], object], ops: int, rounds: int
) -> tuple[float, float, float]:
    """Medians of baseline and ours (µs per call), and the median of the per-round ratios."""
    base_runs, our_runs, ratios = [], [], []
    for i in range(rounds):
        pair = (baseline, ours) if i % 2 == 0 else (ours, baseline)
        first, second = (per_call_us(fn, ops) for fn in pair)
        base, our = (first, second) if i % 2 == 0 else (second, first)
        base_runs.append(base)
        our_runs.append(our)
        ratios.append(our / base)
    return statistics.median(base_runs), statistics.median(our_runs), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fast)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/doc"
    rows = []
    try:

        def plain_get() -> bytes:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return bytes(answer.read())

        def bounded_get() -> bytes:
            return fetch(url, what="bench", timeout=10, max_bytes=1 << 20).body

        rows.append(("GET 1 KB", *compare(plain_get, bounded_get, args.ops, args.rounds)))

        with OpenAIServer() as server:
            plain = openai.OpenAI(
                api_key="test-key", base_url=server.base_url, timeout=10, max_retries=0
            )
            provider = OpenAIProvider(
                LLMConfig(
                    provider="openai",
                    base_url=server.base_url,
                    api_key="test-key",
                    timeout_seconds=10,
                )
            )
            model = "text-embedding-3-small"
            try:
                rows.append(
                    (
                        "embeddings (1 text)",
                        *compare(
                            lambda: plain.embeddings.create(model=model, input=["hello"]),
                            lambda: provider.embed(["hello"], model=model),
                            args.ops,
                            args.rounds,
                        ),
                    )
                )
            finally:
                plain.close()
                provider.close()
    finally:
        httpd.shutdown()
        httpd.server_close()

    print(f"{'call':<22}{'unbounded µs':>14}{'bounded µs':>12}{'ratio':>8}")
    for name, base, ours, ratio in rows:
        print(f"{name:<22}{base:>14.0f}{ours:>12.0f}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
