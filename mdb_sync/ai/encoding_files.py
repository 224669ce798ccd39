"""tiktoken's encoding files, fetched within a time bound into tiktoken's own cache.

tiktoken downloads an encoding it has not cached (``o200k_base`` for ``gpt-4o``...) with no
timeout: a blob server or proxy that accepts the connection and never answers would hang
token counting — and every chunking or chat call behind it — for good. So mdb-sync never
lets tiktoken download: it fetches the file itself, with a deadline for the whole download
(``MDB_TIKTOKEN_TIMEOUT``, default :data:`DEFAULT_TIMEOUT` seconds; ``0`` never
downloads), a size cap and tiktoken's SHA-256 check, and stores it where tiktoken looks
first (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``,
under the SHA-1 of the file's published URL). tiktoken then reads it from its cache, and a
file already cached needs no network at all. ``MDB_TIKTOKEN_BASE_URL`` points the
download at a mirror (an air-gapped deployment's file server) instead of OpenAI's blob
store; the hash check makes a mirror as trustworthy as the original.

The files and hashes below are tiktoken's own (``tiktoken_ext/openai_public.py``; a test
checks they still match). An encoding not listed (``gpt2``, a plugin's) is never downloaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
import uuid
from pathlib import Path

from ..exceptions import AIServiceError, ConfigurationError, NetworkError
from ..net_bounds import fetch

#: Where tiktoken downloads its encoding files from (the URL its cache is keyed by).
PUBLISHED_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/"
#: Seconds a whole download may take (connect, answer and body) unless
#: ``MDB_TIKTOKEN_TIMEOUT`` says otherwise.
DEFAULT_TIMEOUT = 10.0
#: The largest encoding file accepted (``o200k_base`` is 3.6 MB).
MAX_FILE_BYTES = 32 * 1024 * 1024
BASE_URL_ENV = "MDB_TIKTOKEN_BASE_URL"
TIMEOUT_ENV = "MDB_TIKTOKEN_TIMEOUT"

_O200K = ("o200k_base.tiktoken", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d")
_P50K = ("p50k_base.tiktoken", "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069")
#: Encoding name -> (file name, SHA-256 of its content), as tiktoken publishes them.
FILES: dict[str, tuple[str, str]] = {
    "r50k_base": (
        "r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
    "p50k_base": _P50K,
    "p50k_edit": _P50K,
    "cl100k_base": (
        "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": _O200K,
    "o200k_harmony": _O200K,
}


class EncodingUnavailable(AIServiceError):
    """An encoding file is neither cached nor could be downloaded within the bound."""


def cache_dir() -> Path | None:
    """tiktoken's cache directory, by tiktoken's rules (None: caching is switched off)."""
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in os.environ:
            return Path(os.environ[name]) if os.environ[name] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def download_timeout() -> float:
    """Seconds a download may take (``MDB_TIKTOKEN_TIMEOUT``; 0: never download)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:  # also refuses nan
        raise ConfigurationError(
            f"{TIMEOUT_ENV} must be a number of seconds between 0 and 3600, got {raw!r}"
        )
    return value


def base_url() -> str:
    """Where encoding files are downloaded from (``MDB_TIKTOKEN_BASE_URL``)."""
    url = os.environ.get(BASE_URL_ENV, "").strip() or PUBLISHED_BASE_URL
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{BASE_URL_ENV} must be an http(s) URL, got {url!r}")
    return url if url.endswith("/") else url + "/"


def _matches(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def ensure_cached(name: str, *, timeout: float | None = None) -> Path:
    """The path of encoding ``name``'s file in tiktoken's cache, downloading it first (within
    ``timeout`` seconds, default :func:`download_timeout`) when it is not there.

    Raises :class:`EncodingUnavailable` when the encoding is not one of :data:`FILES`,
    caching is switched off (tiktoken would then download it itself, unbounded), the
    download fails, takes longer or is larger than allowed, or its hash is wrong; nothing is
    stored then.
    """
    if name not in FILES:
        raise EncodingUnavailable(f"no known download for the tiktoken encoding {name!r}")
    directory = cache_dir()
    if directory is None:
        raise EncodingUnavailable(
            "tiktoken's cache is switched off (TIKTOKEN_CACHE_DIR is empty), and tiktoken "
            "would download without a timeout"
        )
    file_name, sha256 = FILES[name]
    published = PUBLISHED_BASE_URL + file_name
    path = directory / hashlib.sha1(published.encode()).hexdigest()  # tiktoken's cache key
    if _matches(path, sha256):
        return path
    limit = download_timeout() if timeout is None else timeout
    if limit <= 0:
        raise EncodingUnavailable(f"{name!r} is not cached and downloads are off ({TIMEOUT_ENV}=0)")
    url = base_url() + file_name
    data = _download(url, limit)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise EncodingUnavailable(f"{url} does not hold the published {file_name} (hash differs)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: a reader sees the whole file or none
    except OSError as exc:
        raise EncodingUnavailable(f"could not store {file_name} in {directory}: {exc}") from exc
    return path


def _download(url: str, limit: float) -> bytes:
    """The body at ``url``, or :class:`EncodingUnavailable` after ``limit`` seconds in all
    (name lookup, connection, answer and body: :func:`mdb_sync.net_bounds.fetch`; socket
    timeouts alone bound each operation, not a server that drips a byte a second, nor a
    name lookup). Redirects are followed (a mirror may redirect; the hash check decides)."""
    try:
        answer = fetch(
            url,
            what=f"downloading {url}",
            timeout=limit,
            max_bytes=MAX_FILE_BYTES,
            headers={"User-Agent": "mdb-sync"},
            follow_redirects=True,
        )
    except NetworkError as exc:  # NetworkTimeout included: "... took longer than 10s"
        raise EncodingUnavailable(str(exc)) from exc
    if answer.status != 200:
        raise EncodingUnavailable(f"could not download {url}: HTTP {answer.status}")
    return answer.body
