"""Chunking throughput on a 1 MB text: chunks per second and MB per second.

The reference is tiktoken encoding the same text once (the least any token-aware chunker
must do); the ratio says what finding semantic boundaries and checking every chunk's exact
size costs on top.

    .venv/bin/python benchmarks/chunking.py [--size-mb 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import time

from mdb_sync.ai.chunking import TextChunker
from mdb_sync.ai.tokens import TiktokenCounter

VOCABULARY = (
    "the database stores every document of an app with its identifier and a vector that "
    "describes what the text means so that similar passages can be found quickly while "
    "tokens are counted by the model which reads them"
)
WORDS = VOCABULARY.split()


def make_text(size: int, seed: int = 7) -> str:
    """Prose-like text: sentences of 4-30 words, paragraphs of 1-12 sentences."""
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < size:
        sentences = []
        for _ in range(rng.randint(1, 12)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 30))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
        paragraph = " ".join(sentences)
        parts.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(parts)[:size]


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = make_text(int(args.size_mb * 1_000_000))
    mb = len(text.encode("utf-8")) / 1_000_000
    counter = TiktokenCounter("gpt-3.5-turbo")
    counter.count("warm up")
    encode_s, tokens = best_of(args.repeat, lambda: counter.count(text))
    print(f"text: {mb:.2f} MB, {tokens:,} cl100k_base tokens; best of {args.repeat} runs\n")
    header = f"{'case':<28}{'chunks':>8}{'seconds':>10}{'chunks/s':>11}{'MB/s':>8}{'vs encode':>11}"
    print(header)
    print("-" * len(header))
    label = "tiktoken encode only"
    print(f"{label:<28}{'-':>8}{encode_s:>10.3f}{'-':>11}{mb / encode_s:>8.1f}{1:>10.1f}x")
    for max_tokens, overlap in ((200, 0), (500, 0), (1000, 0), (1000, 100)):
        chunker = TextChunker(max_tokens, overlap)
        seconds, chunks = best_of(args.repeat, lambda c=chunker: c.split(text))
        label = f"max {max_tokens}" + (f", overlap {overlap}" if overlap else "")
        print(
            f"{label:<28}{len(chunks):>8}{seconds:>10.3f}{len(chunks) / seconds:>11,.0f}"
            f"{mb / seconds:>8.1f}{seconds / encode_s:>10.1f}x"
        )
    try:
        from mdb_sync.ai.local_model import get_encoder

        tokenizer = get_encoder().tokenizer
    except Exception as exc:  # the local model is optional
        print(f"\n(local model not installed: {exc.__class__.__name__})")
        return
    chunker = TextChunker(254, counter=tokenizer)
    seconds, chunks = best_of(args.repeat, lambda: chunker.split(text))
    label = "max 254, local WordPiece"
    print(
        f"{label:<28}{len(chunks):>8}{seconds:>10.3f}{len(chunks) / seconds:>11,.0f}"
        f"{mb / seconds:>8.1f}{seconds / encode_s:>10.1f}x"
    )


if __name__ == "__main__":
    main()
