"""Test harness: every test talks to a real MongoDB-compatible server.

By default one throwaway embedded server (SecantusDB, in-memory storage, a child process) is
started for the whole session; with ``MDB_TEST_URI`` set, that server is used instead (a
real mongod, a replica set, Atlas). Each test gets a database of its own, dropped afterwards.
Tests never touch a developer's persistent data directory: ``MDB_EMBEDDED_DIR`` points to a
temporary directory for the session and ``MDB_MONGO_URI``/``MDB_DB_NAME`` are cleared.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from mdb_sync import MongoDBEngine, embedded
from mdb_sync.context import live_engines

TEST_URI_ENV = "MDB_TEST_URI"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("MDB_MONGO_URI", "MDB_DB_NAME", "MDB_EMBEDDED_DIR")}
    os.environ.pop("MDB_MONGO_URI", None)
    os.environ.pop("MDB_DB_NAME", None)
    os.environ["MDB_EMBEDDED_DIR"] = str(tmp_path_factory.mktemp("embedded-default"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """URI of the server the whole session uses."""
    uri = os.environ.get(TEST_URI_ENV)
    if uri:
        yield uri
        return
    server = embedded.start_private()
    try:
        yield server.uri
    finally:
        embedded.stop_private(server)


@pytest.fixture(scope="session")
def raw_client(mongo_uri: str) -> Iterator[MongoClient[Any]]:
    """A plain pymongo client, for asserting what is physically stored."""
    client: MongoClient[Any] = MongoClient(mongo_uri)
    yield client
    client.close()


@pytest.fixture
def db_name(raw_client: MongoClient[Any]) -> Iterator[str]:
    """A fresh database name for this test, dropped afterwards."""
    name = f"mdbtest_{uuid.uuid4().hex[:12]}"
    yield name
    raw_client.drop_database(name)


@pytest.fixture
def raw_db(raw_client: MongoClient[Any], db_name: str) -> Any:
    return raw_client[db_name]


class CommandRecorder(monitoring.CommandListener):
    """Records every command sent to the server (name and body), thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def commands(self, *names: str) -> list[dict[str, Any]]:
        """Bodies of the recorded commands, optionally only those named ``names``."""
        with self._lock:
            events = list(self.events)
        return [dict(e.command) for e in events if not names or e.command_name in names]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


@pytest.fixture
def recorder() -> CommandRecorder:
    return CommandRecorder()


@pytest.fixture
def engine(mongo_uri: str, db_name: str, recorder: CommandRecorder) -> Iterator[MongoDBEngine]:
    """An initialized engine on the session's server and this test's database."""
    eng = MongoDBEngine(mongo_uri, db_name, event_listeners=[recorder])
    eng.initialize()
    yield eng
    eng.shutdown()


# --- engines a test leaves initialized --------------------------------------------------------

#: Weak references to the engines a test made while it ran (not in its fixtures' set-up).
_MADE_DURING_CALL = pytest.StashKey[list[weakref.ReferenceType[MongoDBEngine]]]()
_CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    before = {id(engine) for engine in live_engines()}
    try:
        return (yield)
    finally:
        made = [weakref.ref(e) for e in live_engines() if id(e) not in before]
        item.stash[_MADE_DURING_CALL] = made


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a test and its fixtures: shut down the engines it made and left initialized.

    ``current_engine()`` falls back to "the process's one initialized engine", so one engine
    left behind makes later tests find several. A failed test leaves them easily (its
    ``shutdown()`` never ran, and pytest keeps the failed test's frames, so its engines stay
    alive to the end of the session): they are shut down here, and a test that passed while
    leaving one fails, naming it."""
    try:
        return (yield)
    finally:
        refs = item.stash.get(_MADE_DURING_CALL, [])
        left = [e for ref in refs if (e := ref()) is not None and e.is_initialized]
        described = repr(left)
        for engine in left:
            engine.shutdown()
        if left and item.stash.get(_CALL_PASSED, False):
            raise AssertionError(
                f"{item.nodeid} left {len(left)} engine(s) initialized (shut down now): "
                f"{described}; shut down every engine a test makes (a fixture, or try/finally)"
            )
