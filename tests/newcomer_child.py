"""Flask apps run in a fresh interpreter with some libraries made unimportable — the
newcomer's install (``pip install "mdb-sync[flask]"``), for the tests of what works without
the ``auth`` and ``oauth`` extras. Libraries are blocked as in ``tests/test_quality.py``
(``sys.modules[name] = None``).

A child script is :data:`HEAD` plus its own lines; it gets on ``argv``: the blocked names
(comma-separated), the Mongo URI, the database, the manifests directory, this directory,
then the script's own arguments."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: What ``pip install "mdb-sync[flask]"`` lacks: pycasbin and pyotp (the auth extra), authlib
#: and joserfc (the oauth extra).
NEWCOMER_BLOCKED = ("casbin", "pyotp", "authlib", "joserfc")
TESTS_DIR = os.path.dirname(__file__)

#: Block ``argv[1]``'s libraries; ``make_app(**config)`` builds a Flask app on ``argv``;
#: ``error(exc)`` describes an exception as JSON.
HEAD = """
import json, logging, sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
sys.path.insert(0, sys.argv[5])
from flask import Flask
from auth_apps import auth_config, header_resolver
from flask_mdb import MDB

def make_app(**config):
    app = Flask("newcomer")
    app.config.update(MDB_MONGO_URI=sys.argv[2], MDB_DB_NAME=sys.argv[3],
                      MDB_MANIFESTS=sys.argv[4], MDB_APP_RESOLVER=header_resolver,
                      MDB_EXTERNAL_URL="https://site.example", **auth_config(**config))
    return app

def error(exc):
    return {"type": type(exc).__name__, "message": str(exc),
            "context": getattr(exc, "context", None)}
"""

#: The end of a serving script, after it built ``app``: register ``argv[6]`` once the
#: process runs (as another process or an admin would), print the URL, serve until stdin
#: closes.
SERVE_TAIL = """
from flask_mdb.testing import LiveServer
mdb = MDB(app)
mdb.get_engine(app).register_app(json.loads(sys.argv[6]))
with LiveServer(app) as server:
    print(json.dumps({"url": server.url}), flush=True)
    sys.stdin.read()
"""


def write_manifests(directory: Path, *manifests: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        path = directory / f"{manifest['slug']}.json"
        path.write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def child_argv(
    script: str, blocked: tuple[str, ...], mongo_uri: str, db_name: str, manifests: Path,
    *extra: str,
) -> list[str]:  # fmt: skip
    return [sys.executable, "-c", script, ",".join(blocked), mongo_uri, db_name,
            str(manifests), TESTS_DIR, *extra]  # fmt: skip


def run_child(script: str, env: dict[str, str], *args: Any) -> Any:
    """Run a child script to its end (``args`` as :func:`child_argv`'s); its last line of
    output, as JSON."""
    done = subprocess.run(
        child_argv(script, *args), capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def serving(script: str, env: dict[str, str], log: Path, *args: Any) -> Iterator[str]:
    """A serving child script (ending with :data:`SERVE_TAIL`) running: its URL. Its stderr
    goes to ``log``; on leaving, stdin closes, the child stops and must exit 0."""
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            child_argv(script, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log_file, text=True, env=env,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("{"), log.read_text()
        yield str(json.loads(line)["url"])
    finally:
        proc.communicate(timeout=60)  # closes stdin: the child stops serving
    assert proc.returncode == 0, log.read_text()
