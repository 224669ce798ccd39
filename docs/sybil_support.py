"""How the test suite runs the examples of the documentation and the README (Sybil).

Every page runs like one script, top to bottom, in a fresh empty working directory:

- ``.. code-block:: python`` blocks (and ``>>>`` sessions) run in one namespace per page, so a
  name defined in one block is used by the next. ``__name__`` is ``"docs_example"``, which no
  module has, so ``Flask(__name__)`` roots the app in the working directory.
- ``.. code-block:: json`` blocks are manifests: each must pass ``validate_manifest``
  (duplicate keys refused, as ``load_manifest`` does). A block captioned with a file name
  (``:caption: manifests/my_app.json``) is also written there, for the blocks that follow;
  a few other captioned files (``prices.json``) are checked by their own loader instead.
- ``.. code-block:: console`` blocks are shell sessions: each ``$`` line runs with ``bash``
  in the working directory (``mdb`` and ``python`` are this environment's) — in the
  repository's root when the block is captioned "in a checkout"; lines that follow a command
  are its expected output, compared as doctest compares (``...`` matches anything). A command
  must exit 0. In a block of class ``server`` each command starts a web server: it runs with
  ``PORT`` set to a free port until ``/`` answers, then it is stopped.
- ``.. code-block:: shell`` blocks are install commands: they would change the environment
  the suite runs in, so ``tests/test_install_lines.py`` checks each line instead (the extras
  exist, the wheel builds under the name shown, the Git URL form installs).
- ``.. code-block:: text`` (and ``javascript``) blocks are output or other languages and are
  not run.

The environment of every page: ``MDB_MONGO_URI`` names the suite's throwaway server (the
embedded one, or ``MDB_TEST_URI``), ``MDB_DB_NAME`` a database of the page's own (dropped
afterwards), ``MDB_EMBEDDED_DIR`` a temporary directory, and ``MDB_LLM_BASE_URL`` /
``OPENAI_API_KEY`` the tests' OpenAI-compatible server (``tests/openai_server.py``). The pages
say so at their top; nothing else is added to what they show.
"""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sybil import Example, Region, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.rest import DocTestParser
from sybil.parsers.rest.lexers import DirectiveLexer

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

#: Languages of code blocks that are shown but not run: output, and other languages.
SHOWN_ONLY = frozenset({"text", "javascript", "shell"})
RUN = frozenset({"python", "json", "console"})
OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# --- parsers ----------------------------------------------------------------------------------


def _caption(example: Example) -> str | None:
    return (example.region.lexemes.get("options") or {}).get("caption") or None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _check_prices(text: str) -> None:
    from mdb_sync.ai.prices import load_price_file

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        handle.write(text)
    try:
        assert load_price_file(handle.name), "a price file with no price"
    finally:
        os.unlink(handle.name)


#: Captioned JSON files that are not manifests, and the loader that checks each.
OTHER_JSON = {"prices.json": _check_prices}


def evaluate_json(example: Example) -> None:
    """A manifest: valid, and written to its caption's path if it has one."""
    from mdb_sync.manifest import validate_manifest

    text = str(example.parsed)
    document = json.loads(text, object_pairs_hook=_refuse_duplicates)
    caption = _caption(example)
    name = Path(caption).name if caption else None
    if name in OTHER_JSON:
        OTHER_JSON[name](text)
    else:
        validate_manifest(document, lenient=False)
    if caption:
        target = Path.cwd() / caption
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _commands(source: str) -> Iterator[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block (``\\`` continues a line)."""
    command: list[str] | None = None
    output: list[str] = []
    for line in source.splitlines():
        if line.startswith("$ ") and not (command and command[-1].endswith("\\")):
            if command is not None:
                yield "\n".join(command), "\n".join(output)
            command, output = [line[2:]], []
        elif command is not None and command[-1].endswith("\\") and not output:
            command.append(line)
        elif command is not None:
            output.append(line)
    if command is not None:
        yield "\n".join(command), "\n".join(output)


def shell_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _cwd(example: Example) -> Path:
    """The page's directory, or the repository's for a block captioned "in a checkout"."""
    caption = _caption(example) or ""
    return ROOT if "in a checkout" in caption else Path.cwd()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_server(command: str, cwd: Path, deadline: float = 90.0) -> str | None:
    """Start a command that serves HTTP on ``$PORT``, wait until ``/`` answers (below 500),
    then stop it (SIGTERM, then SIGKILL)."""
    port = _free_port()
    env = {**shell_environment(), "PORT": str(port)}
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        stop_at = time.monotonic() + deadline
        while True:
            if process.poll() is not None:
                return f"$ {command}\nexited {process.returncode}:\n{process.stdout.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = None
            if status is not None:
                return None if status < 500 else f"$ {command}\nanswered {status}"
            if time.monotonic() > stop_at:
                return f"$ {command}\nserved nothing on port {port} within {deadline:.0f} s"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def evaluate_console(example: Example) -> str | None:
    """Run each command of a console block; its output must match what the block shows. In a
    block of class ``server`` each command is a server, started and checked by
    :func:`run_server` (its output, which names a port, is not compared)."""
    checker = doctest.OutputChecker()
    options = example.region.lexemes.get("options") or {}
    server = "server" in options.get("class", "").split()
    for command, expected in _commands(str(example.parsed)):
        if server:
            problem = run_server(command, _cwd(example))
            if problem:
                return problem
            continue
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=_cwd(example),
            env=shell_environment(),
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            return (
                f"$ {command}\nexited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        if expected.strip() and not checker.check_output(
            expected.strip() + "\n", result.stdout.strip() + "\n", OPTIONFLAGS
        ):
            return f"$ {command}\nexpected:\n{expected}\ngot:\n{result.stdout}"
    return None


class CodeBlocks:
    """Every ``code-block`` of a page: run the runnable languages, refuse unknown ones."""

    def __init__(self) -> None:
        self.lexer = DirectiveLexer(directive=r"(sourcecode|code-block|code)")
        self.python = PythonEvaluator()

    def __call__(self, document: Any) -> Iterator[Region]:
        for region in self.lexer(document):
            language = (region.lexemes.get("arguments") or "").strip()
            region.parsed = region.lexemes["source"]
            if language == "python":
                if str(region.parsed).lstrip().startswith(">>>"):
                    continue  # run by the doctest parser
                region.evaluator = self.python
            elif language == "json":
                region.evaluator = evaluate_json
            elif language == "console":
                region.evaluator = evaluate_console
            elif language in SHOWN_ONLY:
                continue
            else:
                region.evaluator = _unknown(language)
            yield region


def _unknown(language: str) -> Any:
    def evaluate(example: Example) -> str:
        return (
            f"code-block language {language!r} is neither run ({', '.join(sorted(RUN))}) "
            f"nor shown only ({', '.join(sorted(SHOWN_ONLY))})"
        )

    return evaluate


# --- the environment of a page ------------------------------------------------------------------


_servers: dict[str, Any] = {}


def servers() -> dict[str, str]:
    """The suite's database server and OpenAI-compatible server, as environment variables;
    started on first use, stopped by :func:`stop_servers` (the root ``conftest.py`` calls it
    when the session ends)."""
    if "env" not in _servers:
        from openai_server import OpenAIServer

        from mdb_sync import embedded

        uri = os.environ.get("MDB_TEST_URI")
        if not uri:
            _servers["db"] = embedded.start_private()
            uri = _servers["db"].uri
        _servers["llm"] = llm = OpenAIServer().start()
        _servers["dir"] = tempfile.TemporaryDirectory(prefix="mdb-docs-embedded-")
        _servers["env"] = {
            "MDB_MONGO_URI": uri,
            "MDB_EMBEDDED_DIR": _servers["dir"].name,
            "MDB_LLM_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": llm.api_key,
        }
    return _servers["env"]


def stop_servers() -> None:
    from mdb_sync import embedded

    if "llm" in _servers:
        _servers.pop("llm").stop()
    if "db" in _servers:
        embedded.stop_private(_servers.pop("db"))
    if "dir" in _servers:
        _servers.pop("dir").cleanup()
    _servers.pop("env", None)


_CLEARED = (
    "MDB_MONGO_URI",
    "MDB_DB_NAME",
    "MDB_EMBEDDED_DIR",
    "MDB_LLM_BASE_URL",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "MDB_JWT_SECRET",
)


def setup_page(namespace: dict[str, Any]) -> None:
    """A working directory, a database and the servers' environment for one page."""
    env = servers()
    state = {
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in _CLEARED},
        "tmp": tempfile.TemporaryDirectory(prefix="mdb-docs-"),
        "db": f"docs_{uuid.uuid4().hex[:12]}",
    }
    for key in _CLEARED:
        os.environ.pop(key, None)
    os.environ.update(env)
    os.environ["MDB_DB_NAME"] = state["db"]
    os.chdir(state["tmp"].name)
    namespace["__name__"] = "docs_example"
    namespace["_docs_state"] = state


def teardown_page(namespace: dict[str, Any]) -> None:
    """Shut down what the page left open, drop its database, restore the process."""
    from pymongo import MongoClient

    from mdb_sync import MongoDBEngine

    state = namespace.pop("_docs_state", None)
    if state is None:
        return
    databases = {state["db"]}
    _close_flask_apps(namespace)
    for value in list(namespace.values()):
        if isinstance(value, MongoDBEngine):
            databases.add(value.db_name)
            value.shutdown()
    client: MongoClient[Any] = MongoClient(os.environ["MDB_MONGO_URI"])
    try:
        for name in databases:
            client.drop_database(name)
    finally:
        client.close()
    os.chdir(state["cwd"])
    for key, value in state["env"].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    state["tmp"].cleanup()


def _close_flask_apps(namespace: dict[str, Any]) -> None:
    """``mdb.shutdown(app)`` for each Flask app and extension a page left behind."""
    if "flask_mdb" not in sys.modules:
        return
    from flask import Flask

    from flask_mdb import MDB

    apps = [v for v in namespace.values() if isinstance(v, Flask) and "mdb" in v.extensions]
    extensions = [v for v in namespace.values() if isinstance(v, MDB)]
    for app in apps:
        for extension in extensions:
            try:
                extension.shutdown(app)
            except Exception:
                continue


def make_sybil(**kwargs: Any) -> Sybil:
    return Sybil(
        parsers=[CodeBlocks(), DocTestParser(optionflags=OPTIONFLAGS)],
        setup=setup_page,
        teardown=teardown_page,
        **kwargs,
    )
