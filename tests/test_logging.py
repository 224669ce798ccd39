"""Structured logs: records carry the app and correlation id of their own thread or block,
never another's; JSON output is one redacted object per line."""

from __future__ import annotations

import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mdb_sync.observability import (
    ContextFilter,
    JSONFormatter,
    accept_correlation_id,
    clear_app_context,
    clear_correlation_id,
    configure_logging,
    get_app_context,
    get_correlation_id,
    get_logger,
    log_context,
    set_app_context,
    set_correlation_id,
)


class Capture(logging.Handler):
    """Keeps the formatted JSON lines of the records it receives (thread-safe: Handler
    serialises emit with its own lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JSONFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def capture():
    handler = Capture()
    logger = logging.getLogger("mdbtest")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    clear_app_context()
    clear_correlation_id()
    yield handler
    logger.removeHandler(handler)
    clear_app_context()
    clear_correlation_id()


def test_records_carry_app_and_correlation_ids(capture):
    log = get_logger("mdbtest.orders")
    set_app_context("shop")
    cid = set_correlation_id()
    log.info("order %s placed", 42, extra={"order_id": 42})
    (record,) = capture.records()
    assert record["message"] == "order 42 placed"
    assert record["app_id"] == "shop"
    assert record["correlation_id"] == cid and len(cid) == 32
    assert record["order_id"] == 42
    assert record["level"] == "INFO" and record["logger"] == "mdbtest.orders"
    assert record["timestamp"].endswith("+00:00")


def test_context_does_not_leak_between_threads(capture):
    log = get_logger("mdbtest.threads")
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        set_app_context(f"app{n}")
        set_correlation_id(f"req-{n}")
        barrier.wait()
        for i in range(20):
            log.info("step", extra={"thread_no": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = capture.records()
    assert len(records) == 160
    for record in records:
        assert record["app_id"] == f"app{record['thread_no']}"
        assert record["correlation_id"] == f"req-{record['thread_no']}"
    # The main thread never set anything.
    log.info("main")
    assert capture.records()[-1]["app_id"] is None
    assert capture.records()[-1]["correlation_id"] is None


def test_log_context_does_not_leak_between_tasks_on_a_reused_thread(capture):
    log = get_logger("mdbtest.pool")

    def request(n: int) -> None:
        if n % 2 == 0:
            with log_context(app_id=f"app{n}", correlation_id=f"cid-{n}"):
                log.info("bound", extra={"n": n})
        log.info("after", extra={"n": n})

    with ThreadPoolExecutor(max_workers=1) as pool:  # one thread runs every task
        list(pool.map(request, range(6)))
    for record in capture.records():
        if record["message"] == "bound":
            assert record["app_id"] == f"app{record['n']}"
            assert record["correlation_id"] == f"cid-{record['n']}"
        else:
            assert record["app_id"] is None and record["correlation_id"] is None


def test_log_context_restores_outer_values_even_on_errors():
    with log_context(app_id="outer", correlation_id="c-outer"):
        with (
            pytest.raises(RuntimeError),
            log_context(app_id="inner", correlation_id=None, user_id=7) as ctx,
        ):
            assert ctx["app_id"] == "inner" and ctx["user_id"] == 7
            assert len(get_correlation_id()) == 32
            raise RuntimeError
        assert get_app_context() == "outer"
        assert get_correlation_id() == "c-outer"
    assert get_app_context() is None


def test_fields_and_bound_loggers(capture):
    log = get_logger("mdbtest.fields", component="billing").bind(region="eu")
    with log_context(app_id="shop", user_id="u1"):
        log.warning("charged", extra={"region": "us"})
    (record,) = capture.records()
    assert record["component"] == "billing"
    assert record["region"] == "us"  # the call's extra wins
    assert record["user_id"] == "u1"
    with pytest.raises(ValueError, match="cannot be a log context field"):
        log_context(msg="x").__enter__()


def test_bad_ids_are_refused_or_replaced():
    for bad in ["", "a b", "x" * 129, "line\nbreak", "<script>", 5]:
        with pytest.raises(ValueError, match="invalid correlation id"):
            set_correlation_id(bad)
        assert len(accept_correlation_id(bad)) == 32
    assert accept_correlation_id("00-4bf92f3577b34da6-00f067aa0ba902b7-01") == (
        "00-4bf92f3577b34da6-00f067aa0ba902b7-01"
    )
    with pytest.raises(ValueError, match="invalid app id"):
        set_app_context("bad app")


def test_json_lines_redact_secrets_and_include_exceptions(capture):
    log = get_logger("mdbtest.secrets")
    log.info(
        "connecting to mongodb://admin:hunter2@db.example:27017/x",
        extra={"password": "hunter2", "config": {"api_key": "sk-123", "host": "h"}},
    )
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed")
    first, second = capture.lines
    assert "\n" not in first and "hunter2" not in first and "sk-123" not in first
    parsed = json.loads(first)
    assert parsed["message"] == "connecting to mongodb://***@db.example:27017/x"
    assert parsed["password"] == "[REDACTED]"
    assert parsed["config"] == {"api_key": "[REDACTED]", "host": "h"}
    error = json.loads(second)
    assert error["level"] == "ERROR"
    assert error["exc_type"] == "ValueError"
    assert "bad value" in error["exception"]


def test_context_filter_labels_plain_loggers():
    stream = io.StringIO()
    handler = configure_logging("DEBUG", stream=stream, logger="mdbtest.plain")
    logging.getLogger("mdbtest.plain").propagate = False
    again = configure_logging("DEBUG", stream=stream, logger="mdbtest.plain")
    try:
        assert handler not in logging.getLogger("mdbtest.plain").handlers  # replaced
        assert any(isinstance(f, ContextFilter) for f in again.filters)
        with log_context(app_id="plainapp", correlation_id="c-1"):
            logging.getLogger("mdbtest.plain.child").info("hello")
        (line,) = stream.getvalue().splitlines()
        assert json.loads(line)["app_id"] == "plainapp"
        assert json.loads(line)["correlation_id"] == "c-1"
    finally:
        logging.getLogger("mdbtest.plain").removeHandler(again)


def test_text_format_names_the_context():
    stream = io.StringIO()
    handler = configure_logging("INFO", json=False, stream=stream, logger="mdbtest.text")
    logging.getLogger("mdbtest.text").propagate = False
    try:
        with log_context(app_id="textapp", correlation_id="c-9"):
            logging.getLogger("mdbtest.text").info("plain words")
        assert "[app=textapp cid=c-9] plain words" in stream.getvalue()
    finally:
        logging.getLogger("mdbtest.text").removeHandler(handler)
