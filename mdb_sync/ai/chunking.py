"""Token-aware text chunking that cuts at the highest semantic boundary that fits.

A chunk holds at most ``max_tokens`` tokens as the embedding model's tokenizer counts them.
From the current position the chunker tries, in order, paragraph breaks, line breaks,
sentence ends, whitespace between words, and finally single characters: at the highest
level where the next section fits, it packs as many whole sections of that level as fit.
When not even one section of a level fits (a paragraph longer than the limit), the chunker
works inside that section at the next level down and never lets a chunk run past the
section's end, so a chunk never straddles a boundary it could have respected.

Every chunk carries its character offsets: ``text[chunk.start:chunk.end] == chunk.text``.
Chunks are stripped of surrounding whitespace; without overlap the text between two chunks
is whitespace only, so the offsets reconstruct the document. With ``overlap_tokens`` each
chunk starts, at a word boundary, up to that many tokens before the previous one ended.

Speed: the whole text is tokenized once; the size of any span is estimated from the token
start offsets with binary searches, and only the chosen chunk is re-counted exactly (a BPE
count of a span can differ from the estimate by a token or two at its edges).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from .tokens import DEFAULT_TOKENIZER_MODEL, TokenCounter, get_counter

DEFAULT_MAX_TOKENS = 1000
#: The smallest limit: any one character must fit in a chunk, and a character is up to
#: four bytes, each at worst one token of a byte-level BPE encoding.
MIN_MAX_TOKENS = 4

#: Boundaries, highest first; a cut is the position right after the match.
_LEVELS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("paragraph", re.compile(r"\n[^\S\n]*\n\s*")),
    ("line", re.compile(r"\n\s*")),
    # ., !, ?, an ellipsis, optional closing quotes or brackets, then whitespace; or CJK
    # full stop / exclamation / question marks, which need no space after them.
    (
        "sentence",
        re.compile("(?<=[.!?\u2026])[\"')\\]\u201d\u2019]*\\s+|(?<=[\u3002\uff01\uff1f])\\s*"),
    ),
    ("word", re.compile(r"\s+")),
)
_NON_SPACE = re.compile(r"\S")
_SPACE_RUN = re.compile(r"\s+")


@dataclass
class Chunk:
    """A piece of a document, with where it came from."""

    text: str
    index: int
    start: int
    end: int
    token_count: int
    source_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (what ``process_and_store`` writes, minus the embedding)."""
        return {
            "text": self.text,
            "chunk_index": self.index,
            "start": self.start,
            "end": self.end,
            "token_count": self.token_count,
            "source_id": self.source_id,
            "metadata": dict(self.metadata),
        }


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return value


class TextChunker:
    """Splits text into chunks of at most ``max_tokens`` tokens.

    :param max_tokens: the limit per chunk (``embedding_config.max_tokens_per_chunk``).
    :param overlap_tokens: tokens of the previous chunk repeated at the start of the next
        (``embedding_config.chunk_overlap_tokens``); must be smaller than ``max_tokens``.
    :param tokenizer_model: the model whose tiktoken encoding counts tokens.
    :param counter: a :class:`~mdb_sync.ai.tokens.TokenCounter` to use instead (the local
        model counts with its own WordPiece tokenizer).
    """

    def __init__(
        self,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        overlap_tokens: int = 0,
        tokenizer_model: str = DEFAULT_TOKENIZER_MODEL,
        *,
        counter: TokenCounter | None = None,
    ) -> None:
        self.max_tokens = _positive_int(max_tokens, "max_tokens")
        if self.max_tokens < MIN_MAX_TOKENS:
            raise ConfigurationError(
                f"max_tokens must be at least {MIN_MAX_TOKENS} (one character can take four "
                f"tokens), got {max_tokens}"
            )
        if isinstance(overlap_tokens, bool) or not isinstance(overlap_tokens, int):
            raise ConfigurationError(f"overlap_tokens must be an integer, got {overlap_tokens!r}")
        if not 0 <= overlap_tokens < self.max_tokens:
            raise ConfigurationError(
                f"overlap_tokens must be >= 0 and < max_tokens ({self.max_tokens}), "
                f"got {overlap_tokens}"
            )
        self.overlap_tokens = overlap_tokens
        self.counter: TokenCounter = counter or get_counter(tokenizer_model)

    def count_tokens(self, text: str) -> int:
        return self.counter.count(text)

    def split(
        self,
        text: str,
        *,
        source_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Chunk]:
        """The chunks of ``text``, in order; an empty or blank text has none."""
        return list(self.iter_chunks(text, source_id=source_id, metadata=metadata))

    def split_text(self, text: str) -> list[str]:
        """Only the texts of :meth:`split`."""
        return [chunk.text for chunk in self.iter_chunks(text)]

    def iter_chunks(
        self,
        text: str,
        *,
        source_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Iterator[Chunk]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        base = dict(metadata or {})
        for index, (start, end, tokens) in enumerate(_Splitter(self, text).spans()):
            yield Chunk(
                text=text[start:end],
                index=index,
                start=start,
                end=end,
                token_count=tokens,
                source_id=source_id,
                metadata=dict(base),
            )


class _Splitter:
    """One pass over one text (holds the precomputed boundaries and token offsets)."""

    def __init__(self, chunker: TextChunker, text: str) -> None:
        self.text = text
        self.max = chunker.max_tokens
        self.overlap = chunker.overlap_tokens
        self.counter = chunker.counter
        self.starts = np.asarray(chunker.counter.token_starts(text), dtype=np.int64)
        self.cuts: list[list[int]] = []
        found: list[np.ndarray] = []
        for _, pattern in _LEVELS:
            found.append(np.fromiter((m.end() for m in pattern.finditer(text)), dtype=np.int64))
            self.cuts.append(np.unique(np.concatenate(found)).tolist())
        runs = np.array([m.span() for m in _SPACE_RUN.finditer(text)], dtype=np.int64)
        self.run_starts, self.run_ends = runs.reshape(-1, 2).T

    def _before_space(self, position: int) -> int:
        """``position`` moved back over the whitespace run that ends there (tokenizers glue
        a run's last space to the next word: the run belongs to neither side's count)."""
        i = int(self.run_ends.searchsorted(position))
        if i < len(self.run_ends) and self.run_ends[i] == position:
            return int(self.run_starts[i])
        return position

    def estimate(self, start: int, end: int) -> int:
        """Tokens of the whole-text tokenization that start in the span (estimate)."""
        starts = self.starts
        a, b = self._before_space(start), self._before_space(end)
        return int(starts.searchsorted(b) - starts.searchsorted(a))

    def trimmed(self, start: int, end: int) -> tuple[int, int]:
        text = self.text
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end

    def exact(self, start: int, end: int) -> int:
        s, e = self.trimmed(start, end)
        return self.counter.count(self.text[s:e])

    def spans(self) -> Iterator[tuple[int, int, int]]:
        text = self.text
        pos = 0
        prev_end = 0
        while True:
            match = _NON_SPACE.search(text, pos)
            if match is None:
                return
            pos = match.start()
            end, tokens = self.next_chunk(pos, prev_end)
            s, e = self.trimmed(pos, end)
            if tokens > self.max and pos < prev_end:
                # Overlapping, the chunk cannot both fit and pass the previous one's end:
                # give up the overlap for this chunk.
                pos = prev_end
                continue
            if e <= prev_end:
                # The overlap left no room to advance: start right after the last chunk.
                pos = prev_end
                continue
            yield s, e, tokens
            prev_end = e
            pos = self.overlap_start(s, e) if self.overlap else e

    def best_end(self, pos: int, cuts: list[int], lo: int, hi: int) -> tuple[int, int] | None:
        """The furthest of ``cuts[lo:hi]`` whose span from ``pos`` fits, with its count."""
        i = bisect.bisect_right(cuts, self.max, lo, hi, key=lambda c: self.estimate(pos, c))
        if i == lo:
            return None
        tokens = self.exact(pos, cuts[i - 1])
        if tokens <= self.max:
            return cuts[i - 1], tokens
        # The estimate was a little low at the edges: search with exact counts.
        best = None
        lo_, hi_ = lo, i - 2
        while lo_ <= hi_:
            mid = (lo_ + hi_) // 2
            tokens = self.exact(pos, cuts[mid])
            if tokens <= self.max:
                best, lo_ = (cuts[mid], tokens), mid + 1
            else:
                hi_ = mid - 1
        return best

    def next_chunk(self, pos: int, min_end: int) -> tuple[int, int]:
        """End and token count of the chunk starting at ``pos`` and ending after ``min_end``
        (the previous chunk's end, which an overlapping chunk must pass)."""
        limit = len(self.text)
        if min_end > pos:
            # A chunk must hold something past min_end, not just the whitespace after it.
            match = _NON_SPACE.search(self.text, min_end)
            min_end = match.start() if match else limit
        for cuts in self.cuts:
            if self.estimate(pos, limit) <= self.max:
                tokens = self.exact(pos, limit)
                if tokens <= self.max:
                    return limit, tokens
            lo = bisect.bisect_right(cuts, max(pos, min_end))
            hi = bisect.bisect_left(cuts, limit)
            found = self.best_end(pos, cuts, lo, hi)
            if found is not None:
                return found
            if lo < hi:
                # Not even the first section of this level fits: split inside it.
                limit = cuts[lo]
        return self.character_split(pos, max(pos, min_end), limit)

    def character_split(self, pos: int, min_end: int, limit: int) -> tuple[int, int]:
        """The longest prefix of ``text[pos:limit]`` that fits and ends after ``min_end``
        (at least one character past it)."""
        k = int(self.starts.searchsorted(pos))
        if k + self.max + 2 < len(self.starts):
            limit = max(min_end + 1, min(limit, int(self.starts[k + self.max + 2])))
        lo, hi = min_end + 1, limit
        best = min_end + 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.exact(pos, mid) <= self.max:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        # Keep combining marks with their letter while that still fits.
        while (
            best < limit
            and _is_continuation(self.text[best])
            and self.exact(pos, best + 1) <= self.max
        ):
            best += 1
        return best, self.exact(pos, best)

    def overlap_start(self, start: int, end: int) -> int:
        """Where the next chunk starts: the earliest word boundary inside the chunk whose
        tail holds at most ``overlap`` tokens, or ``end`` if none does."""
        cuts = self.cuts[-1]
        lo = bisect.bisect_right(cuts, start)
        hi = bisect.bisect_left(cuts, end)
        i = bisect.bisect_left(cuts, -self.overlap, lo, hi, key=lambda c: -self.estimate(c, end))
        return cuts[i] if i < hi else end


def _is_continuation(ch: str) -> bool:
    return unicodedata.combining(ch) != 0


def chunk_text(
    text: str,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = 0,
    tokenizer_model: str = DEFAULT_TOKENIZER_MODEL,
) -> list[Chunk]:
    """Shortcut for ``TextChunker(max_tokens, overlap_tokens, tokenizer_model).split(text)``."""
    return TextChunker(max_tokens, overlap_tokens, tokenizer_model).split(text)
