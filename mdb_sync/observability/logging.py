"""Structured logs that carry the active app and correlation id.

The context is :mod:`mdb_sync.context`'s one ``ContextVar`` — the same current app and
correlation id that metrics, Celery messages and flask_mdb's request binding use — so it
belongs to one thread (or one asyncio task) and never shows up in another: a web request
binds it (``X-Request-ID`` or a new id), a Celery task binds it, and a log record made
anywhere below picks it up::

    from mdb_sync.observability import get_logger, log_context

    log = get_logger(__name__)
    with log_context(app_id="shop", correlation_id=request_id):
        log.info("order placed", extra={"order": order_id})
        # {"message": "order placed", "app_id": "shop", "correlation_id": "...", "order": ...}

Prefer :func:`log_context` (or a framework integration that resets in ``finally``) over the
bare ``set_*`` functions in code that runs on pooled threads: a value set and never reset
stays with the thread and would label the next request's records (the classic leak).

Two ways for records to get the context:

* :func:`get_logger` returns a :class:`ContextLoggerAdapter` that adds it when the record is
  made;
* :class:`ContextFilter` on a handler adds it to every record that reaches the handler, also
  those of plain ``logging.getLogger`` loggers (the library's own, third-party ones).

:class:`JSONFormatter` writes one JSON object per line, redacting values of sensitive keys
(passwords, tokens, API keys) and credentials in MongoDB URIs. :func:`configure_logging`
sets all of this up on one logger in one call.

**Secrets never reach a handler from the library's own loggers** (``mdb_sync.*``,
``flask_mdb.*``): their records are redacted when they are made (:func:`redact_text` on the
message and the exception text), whatever handlers the application installs. Other
loggers — werkzeug's or gunicorn's access log, which print request URLs such as
``/ws?token=...`` — are redacted by :class:`RedactingFilter` on a handler
(:func:`configure_logging` puts one on its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from .. import context as _context
from ..context import accept_correlation_id, new_correlation_id
from ..deprecation import renamed_parameters

#: Attributes every LogRecord has; never overwritten by context or extra fields.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("x", logging.INFO, __file__, 0, "", None, None))
) | {"message", "asctime", "taskName"}

_SENSITIVE_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)
_URI_CREDENTIALS = re.compile(r"(mongodb(?:\+srv)?://)[^@/\s]+@")
REDACTED = "[REDACTED]"

# How secrets are recognised in text (log messages, tracebacks, URLs):
#: names whose value is a secret, as ``name=value`` anywhere (query strings, cookies, reprs):
#: ``token``, ``access_token``, ``remember_token``, ``<slug>_session``, ``csrf_token``, ...
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*?(?:token|secret|password|passwd|session|csrf|jwt|api[_-]?key|apikey"
    r"|credentials?|signature)"
)
_SECRET_PAIR = re.compile(rf"(?i)\b({_SECRET_NAME})=([^\s&#;,'\"<>]+)")
#: shorter names that are secrets in a query string only (OAuth ``code``, API ``key``, ...).
_QUERY_PAIR = re.compile(r"(?i)([?&;](?:code|key|sig|auth)=)([^\s&#;'\"<>]+)")
#: ``'token': 'value'`` (a dict's repr, JSON).
_QUOTED_PAIR = re.compile(rf"(?i)(['\"]{_SECRET_NAME}['\"]\s*:\s*)(['\"])[^'\"]*\2")
#: ``Authorization: Bearer <token>``, and the websocket subprotocol pair ``bearer, <token>``.
_BEARER = re.compile(r"(?i)\b(bearer(?:\s+|,\s*))[A-Za-z0-9._~+/=-]{8,}")
#: a JWT (``eyJ...``.``...``.``...``) wherever it appears.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
#: a bare random token (reset tokens, session ids: ``secrets.token_urlsafe``): 32+ URL-safe
#: base64 characters mixing upper case, lower case and digits (ids in hex are left alone).
_OPAQUE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])")


def _opaque(match: re.Match[str]) -> str:
    text = match.group(0)
    mixed = (
        any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )
    return REDACTED if mixed else text


def redact_text(text: str) -> str:
    """``text`` without the secrets it shows: credentials in MongoDB URIs, JWTs, bearer
    tokens, values of secret-named parameters (``token=``, ``access_token=``,
    ``<app>_session=``, ``password=``, and ``code=``/``key=`` in query strings) and bare
    random tokens (32+ URL-safe characters mixing cases and digits)."""
    if "mongodb" in text:
        text = _URI_CREDENTIALS.sub(r"\1***@", text)
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _QUOTED_PAIR.sub(rf"\1\2{REDACTED}\2", text)
    text = _SECRET_PAIR.sub(rf"\1={REDACTED}", text)
    text = _QUERY_PAIR.sub(rf"\1{REDACTED}", text)
    return _OPAQUE.sub(_opaque, text)


# --- the context ------------------------------------------------------------------------------
#
# The values live in :mod:`mdb_sync.context` (one ContextVar shared with metrics, Celery and
# flask_mdb's request binding); these functions are the logging-flavoured way to set them.


def set_correlation_id(correlation_id: str | None = None) -> str:
    """Bind ``correlation_id`` (a new one if None) to the current context; return it.

    Raises ``ValueError`` for an id that is not 1-128 characters of ``[A-Za-z0-9._:+/=@-]``
    (ids often come from request headers; see :func:`accept_correlation_id`).
    """
    chosen = new_correlation_id() if correlation_id is None else correlation_id
    _context.replace_current(_context.changed(_context.current(), correlation_id=chosen))
    return chosen


def get_correlation_id() -> str | None:
    """The correlation id of the current context, or None."""
    return _context.current().correlation_id


def clear_correlation_id() -> None:
    _context.replace_current(dataclasses.replace(_context.current(), correlation_id=None))


@renamed_parameters(app_slug="slug")
def set_app_context(slug: str | None = None, **fields: Any) -> str | None:
    """Bind the app (and optional extra fields, e.g. ``user_id``) to the current context."""
    _context.replace_current(_context.changed(_context.current(), app_id=slug, fields=fields))
    return slug


def get_app_context() -> str | None:
    """The app bound to the current context, or None."""
    return _context.current().app_id


def clear_app_context() -> None:
    _context.replace_current(_context.changed(_context.current(), app_id=None, replace_fields=True))


def get_log_context() -> dict[str, Any]:
    """``{"app_id": ..., "correlation_id": ..., **fields}`` of the current context."""
    return _context.current().as_log_fields()


_UNSET: Any = object()


@contextlib.contextmanager
def log_context(
    app_id: str | None = _UNSET, correlation_id: str | None = _UNSET, **fields: Any
) -> Iterator[dict[str, Any]]:
    """Bind app, correlation id and fields for the block, restoring the previous values on
    exit (also on an exception). ``correlation_id=None`` makes a new id; leaving an argument
    out keeps the enclosing value. Yields the active context."""
    kwargs: dict[str, Any] = {}
    if app_id is not _UNSET:
        kwargs["app_id"] = app_id
    if correlation_id is not _UNSET:
        kwargs["correlation_id"] = correlation_id
    with _context.bound(**kwargs, **fields) as bound:
        yield bound.as_log_fields()


def _apply_context(record: logging.LogRecord) -> None:
    context = _context.current()
    if not hasattr(record, "app_id"):
        record.app_id = context.app_id
    if not hasattr(record, "correlation_id"):
        record.correlation_id = context.correlation_id
    for key, value in context.fields.items():
        if not hasattr(record, key):
            setattr(record, key, value)


# --- loggers, filters, formatters ------------------------------------------------------------


if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
    _StreamHandler = logging.StreamHandler[TextIO]
else:  # generic at run time only from Python 3.11
    _LoggerAdapter = logging.LoggerAdapter
    _StreamHandler = logging.StreamHandler


class ContextLoggerAdapter(_LoggerAdapter):
    """A logger whose records carry the current context, fields bound with :meth:`bind`, and
    the call's own ``extra`` (which wins)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = get_log_context()
        if self.extra:
            extra.update(self.extra)
        if kwargs.get("extra"):
            extra.update(kwargs["extra"])
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **fields: Any) -> ContextLoggerAdapter:
        """A logger like this one whose records also carry ``fields``."""
        _context.check_fields(fields)
        return ContextLoggerAdapter(self.logger, {**(self.extra or {}), **fields})


def get_logger(name: str | None = None, **fields: Any) -> ContextLoggerAdapter:
    """The logger ``name`` whose records carry ``app_id``, ``correlation_id`` and the context's
    fields (plus ``fields`` given here)."""
    if fields:
        _context.check_fields(fields)
    return ContextLoggerAdapter(logging.getLogger(name), dict(fields))


class ContextFilter(logging.Filter):
    """Adds the current context to every record passing through (put it on a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _apply_context(record)
        return True


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with sensitive entries replaced by ``[REDACTED]`` (recursively) and secrets
    removed from text (:func:`redact_text`)."""
    if key is not None and _SENSITIVE_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    return value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place: its message (formatted with its arguments) and the text
    of its exception, which formatters then use as is."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when the record is handled
        return record
    cleaned = redact_text(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        cleaned = redact_text(text)
        if cleaned != text:
            record.exc_text = cleaned
    return record


class RedactingFilter(logging.Filter):
    """Redacts every record passing through (:func:`redact_record`). Put it on a handler
    that receives other libraries' records — werkzeug's or gunicorn's access log prints
    request URLs, and a websocket URL may carry ``?token=``::

        handler.addFilter(RedactingFilter())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


#: The library's loggers: their records are redacted when made, wherever they go.
LIBRARY_LOGGERS = ("mdb_sync", "flask_mdb")
_LIBRARY_PREFIXES = tuple(f"{name}." for name in LIBRARY_LOGGERS)


def _is_library_record(name: str) -> bool:
    return name in LIBRARY_LOGGERS or name.startswith(_LIBRARY_PREFIXES)


def _install_library_redaction() -> None:
    """Wrap the log record factory once so that records of the library's own loggers are
    redacted as they are made. A filter on the ``mdb_sync`` logger would not do: a logger's
    filters do not see its children's records. Other loggers' records are left as they are."""
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "mdb_sync_redacting", False):
        logging.setLogRecordFactory(_RedactingRecordFactory(previous))


class _RedactingRecordFactory:
    """The log record factory that redacts the library's records (see
    :func:`_install_library_redaction`). Marked by an attribute rather than recognised by
    class, so a reloaded module does not wrap the factory twice."""

    mdb_sync_redacting = True

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self._previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._previous(*args, **kwargs)
        if _is_library_record(record.name):
            redact_record(record)
        return record


_install_library_redaction()


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return str(value)


class JSONFormatter(logging.Formatter):
    """One JSON object per record and line: ``timestamp`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, ``app_id``, ``correlation_id``, the record's extra fields, and
    ``exception`` when there is one. Sensitive keys are redacted (:func:`redact`)."""

    def __init__(self, *, static_fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        _apply_context(record)
        payload: dict[str, Any] = {
            "timestamp": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "app_id": getattr(record, "app_id", None),  # set by _apply_context
            "correlation_id": getattr(record, "correlation_id", None),
            "process": record.process,
            "thread": record.threadName,
            "module": record.module,
            "line": record.lineno,
        }
        payload.update(self.static_fields)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in payload and not key.startswith("_"):
                payload[key] = redact(value, key)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exception"] = redact(
                "".join(traceback.format_exception(*record.exc_info)).rstrip()
            )
        if record.stack_info:
            payload["stack"] = record.stack_info
        return json.dumps(payload, default=_json_default, ensure_ascii=False)


#: The human-readable format :func:`configure_logging` uses without ``json=True``.
TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [app=%(app_id)s cid=%(correlation_id)s] %(message)s"
)


class ContextFormatter(logging.Formatter):
    """A plain :class:`logging.Formatter` that may use ``%(app_id)s`` and
    ``%(correlation_id)s`` (filled from the context when the record has none)."""

    def __init__(self, fmt: str | None = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        _apply_context(record)
        return super().format(record)


class _ContextHandler(_StreamHandler):
    """The handler :func:`configure_logging` installs: marked, so that calling it again
    replaces it (by attribute: a reloaded module still finds the one installed before)."""

    mdb_sync_handler = True


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json: bool = True,
    stream: TextIO | None = None,
    logger: str | None = None,
) -> logging.Handler:
    """Log ``logger`` (the root logger by default) to ``stream`` (stderr) as JSON lines (or
    text with ``json=False``), every record carrying the context. Calling it again replaces
    the handler it installed before, so it is safe in code that may run twice."""
    target = logging.getLogger(logger)
    for handler in list(target.handlers):
        if getattr(handler, "mdb_sync_handler", False):
            target.removeHandler(handler)
    handler = _ContextHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JSONFormatter() if json else ContextFormatter())
    target.addHandler(handler)
    target.setLevel(level)
    return handler


__all__ = [
    "LIBRARY_LOGGERS",
    "ContextFilter",
    "ContextFormatter",
    "ContextLoggerAdapter",
    "JSONFormatter",
    "RedactingFilter",
    "accept_correlation_id",
    "clear_app_context",
    "clear_correlation_id",
    "configure_logging",
    "get_app_context",
    "get_correlation_id",
    "get_log_context",
    "get_logger",
    "log_context",
    "new_correlation_id",
    "redact",
    "redact_record",
    "redact_text",
    "set_app_context",
    "set_correlation_id",
]
