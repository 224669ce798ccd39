"""The extension's configuration: ``MDB_*`` keys, their defaults and their validation.

Each option is declared once (key, default, parser); :func:`load_config` sets the defaults
on the Flask config with ``setdefault`` and parses every value, so a bad value fails in
``init_app`` with a :class:`~mdb_sync.exceptions.ConfigurationError` (a ``ValueError``)
naming the key, not on the first request. Features that add options append to
:data:`OPTIONS`.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from werkzeug.utils import ImportStringError, import_string

from mdb_sync.exceptions import ConfigurationError, ScopeError
from mdb_sync.scoping import QueryLimits, validate_slug


def _error(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{key} {message}", context={"option": key})


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _error(key, f"must be True or False, not {value!r}")
    return value


def _optional_str(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _error(key, f"must be a string, not {type(value).__name__}")
    return value


def _optional_path(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise _error(key, f"must be a path, not {type(value).__name__}")
    return os.fspath(value)


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _error(key, f"must be a dict, not {type(value).__name__}")
    return dict(value)


def _query_limits(key: str, value: Any) -> QueryLimits:
    try:
        return QueryLimits.from_mapping(_mapping(key, value))
    except ConfigurationError as exc:
        raise _error(key, f"is invalid: {exc}") from exc


def _slug(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return validate_slug(value)
    except ScopeError as exc:
        raise _error(key, f"is invalid: {exc}") from exc


def _callable(key: str, value: Any, what: str = "a callable") -> Callable[..., Any] | None:
    """None, a callable, or the import path of one."""
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportStringError as exc:
            raise _error(key, f"names nothing importable: {value!r}") from exc
    if value is not None and not callable(value):
        raise _error(key, f"must be {what}, not {value!r}")
    checked: Callable[..., Any] | None = value
    return checked


def _resolver(key: str, value: Any) -> Callable[[Any], str | None] | None:
    return _callable(key, value, "a callable (request -> slug or None)")


def _url(key: str, value: Any) -> str | None:
    if value is None or value is False:
        return None
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        raise _error(
            key, f"must be a URL path starting with '/' (or None to disable), not {value!r}"
        )
    return value


def external_url_value(key: str, value: Any) -> str:
    """One external base URL: absolute ``http``/``https`` with a host, no credentials, no
    query or fragment; returned without its trailing ``/``."""
    example = "an absolute http(s) URL such as 'https://example.com'"
    if not isinstance(value, str) or any(c.isspace() or ord(c) < 32 or c == "\\" for c in value):
        raise _error(key, f"must be {example} (no spaces or control characters), not {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise _error(key, f"is not a valid URL: {value!r} ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _error(key, f"must be {example}, not {value!r}")
    if "@" in parts.netloc:
        raise _error(key, f"must not carry credentials: {value!r}")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise _error(key, f"must not have a query string or fragment: {value!r}")
    return urlunsplit((parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def _external_url(key: str, value: Any) -> str | dict[str, str] | None:
    """None, one base URL, or ``{app slug: base URL}`` (apps served on different hosts)."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        out = {}
        for slug, url in value.items():
            try:
                validate_slug(slug)
            except ScopeError as exc:
                raise _error(key, f"has a key that is not an app slug: {slug!r} ({exc})") from exc
            out[slug] = external_url_value(f"{key}[{slug!r}]", url)
        return out
    return external_url_value(key, value)


#: ``MDB_INDEX_BUILDS`` values: declared indexes built off the first request, or before it.
INDEX_BUILDS = ("background", "blocking")


def _index_builds(key: str, value: Any) -> str:
    if value not in INDEX_BUILDS:
        raise _error(key, f"must be one of {', '.join(map(repr, INDEX_BUILDS))}, not {value!r}")
    return str(value)


def _manifest_paths(key: str, value: Any, root: str | None = None) -> tuple[Path, ...]:
    """Files and directories -> manifest files. A directory contributes its ``*.json`` files
    and its subdirectories' ``manifest.json``, in name order. Relative paths resolve against
    ``root`` (the app's ``root_path``, as Flask resolves its own files), not the working
    directory, so ``flask run`` from anywhere finds the same manifests."""
    if value is None or value == "":
        return ()
    if isinstance(value, str | os.PathLike):
        value = [value]
    if not isinstance(value, list | tuple):
        raise _error(key, f"must be a path or a list of paths, not {type(value).__name__}")
    paths: list[Path] = []
    for item in value:
        if not isinstance(item, str | os.PathLike):
            raise _error(key, f"must list paths, not {type(item).__name__} {item!r}")
        given = Path(item)
        path = given if given.is_absolute() or root is None else Path(root) / given
        if path.is_dir():
            found = sorted(path.glob("*.json")) + sorted(path.glob("*/manifest.json"))
            if not found:
                raise _error(key, f"names the directory {str(path)!r}, which holds no manifest")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            where = ""
            if path is not given:
                where = f" (relative paths resolve against the app's root_path {root!r})"
                if given.exists():
                    where += (
                        f"; {str(given)!r} exists in the working directory {os.getcwd()!r}: "
                        "give an absolute path to use it"
                    )
            raise _error(key, f"names {str(path)!r}, which does not exist{where}")
    return tuple(dict.fromkeys(p.resolve() for p in paths))


def _optional_bool(key: str, value: Any) -> bool | None:
    return None if value is None else _bool(key, value)


def _secrets(key: str, value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | bytes) for v in value):
        raise _error(key, "must be a list of secrets (strings)")
    return tuple(value)


def _secret(key: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes | os.PathLike):
        raise _error(key, f"must be a string, not {type(value).__name__}")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _error(key, f"must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(key, f"must be a whole number >= 1, not {value!r}")
    return value


def _optional_positive_int(key: str, value: Any) -> int | None:
    return None if value is None else _positive_int(key, value)


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _error(key, f"must be a number of seconds > 0, not {value!r}")
    return float(value)


def _limits_scope(key: str, value: Any) -> str:
    if value not in ("process", "cluster"):
        raise _error(key, f'must be "process" or "cluster", not {value!r}')
    return str(value)


def _lease_ttl(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 3600:
        raise _error(key, f"must be a number of seconds from 1 to 3600, not {value!r}")
    return float(value)


def _scrypt_cost(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4096 or value & (value - 1):
        raise _error(key, f"must be a power of two >= 4096 (scrypt N), not {value!r}")
    return value


def csp_value(policy: str | Mapping[str, Any] | None) -> str | None:
    """A Content-Security-Policy value from a string or a dict of directives
    (``{"default-src": "'self'", "img-src": ["'self'", "data:"]}``)."""
    if policy is None or isinstance(policy, str):
        return policy
    parts = []
    for directive, sources in policy.items():
        values = sources if isinstance(sources, str) else " ".join(sources)
        parts.append(f"{directive} {values}".strip())
    return "; ".join(parts)


def _csp(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str | Mapping):
        raise _error(key, "must be a string or a dict of directives")
    return csp_value(value)


def _provider(key: str, value: Any) -> Any:
    """An object with ``check``, a ``slug -> provider`` callable or dict, or an import string."""
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportStringError as exc:
            raise _error(key, f"names nothing importable: {value!r}") from exc
    return value


def _url_prefix(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/"):
        raise _error(
            key, f"must be a URL path starting with '/', without a trailing '/': {value!r}"
        )
    return value


def _redirect_path(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        raise _error(key, f"must be a path on this site starting with '/': {value!r}")
    return value


#: An HTTP header name (RFC 9110 token characters).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def _header_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise _error(key, f"must be an HTTP header name such as 'X-Request-ID': {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One ``MDB_*`` configuration key."""

    key: str
    default: Any
    parse: Callable[[str, Any], Any]
    doc: str


#: Every option the extension reads. The engine options are refused when ``MDB`` was given
#: an engine (see :data:`ENGINE_OPTIONS`).
OPTIONS: list[Option] = [
    Option("MDB_MONGO_URI", None, _optional_str, "MongoDB URI; unset: the embedded server"),
    Option("MDB_DB_NAME", None, _optional_str, "database shared by the apps"),
    Option("MDB_EMBEDDED_DIR", None, _optional_path, "directory of the embedded server"),
    Option("MDB_CLIENT_OPTIONS", None, _mapping, "keyword arguments of pymongo.MongoClient"),
    Option("MDB_QUERY_LIMITS", None, _query_limits, "QueryLimits fields, e.g. max_result_docs"),
    Option("MDB_IMPLICIT_APPS", True, _bool, "configured slugs may register themselves"),
    Option(
        "MDB_COMMAND_METRICS",
        False,
        _bool,
        "record every command with pymongo listeners (costs every operation)",
    ),
    Option("MDB_MANIFESTS", None, _manifest_paths, "manifest files or directories"),
    Option(
        "MDB_INDEX_BUILDS",
        "background",
        _index_builds,
        "declared indexes: 'background' (off the first request) or 'blocking'",
    ),
    Option("MDB_APP_SLUG", None, _slug, "the app bound when nothing else resolves one"),
    Option("MDB_APP_RESOLVER", None, _resolver, "callable: request -> slug or None"),
    Option("MDB_AUTO_INDEX", True, _bool, "query-driven indexes for request databases"),
    Option("MDB_HEALTH_URL", None, _url, "URL of the JSON health endpoint; None: off"),
    Option("MDB_METRICS_URL", None, _url, "URL of the Prometheus metrics endpoint; None: off"),
    Option("MDB_JSON_PROVIDER", False, _bool, "install the BSON-aware JSON provider"),
    Option("MDB_ERROR_HANDLERS", False, _bool, "JSON errors for pymongo's exceptions too"),
    Option("MDB_REQUEST_ID_HEADER", "X-Request-ID", _header_name, "correlation id header"),
    Option("MDB_TRUST_REQUEST_ID", True, _bool, "use a valid id the client sends"),
    Option("MDB_CORS", True, _bool, "answer CORS requests from the manifests' cors blocks"),
    # --- auth (flask_mdb.auth)
    Option("MDB_AUTH", None, _optional_bool, "install auth; None: when a manifest has auth"),
    Option("MDB_AUTH_ROUTES", True, _bool, "register the auth blueprint (login, token, ...)"),
    Option("MDB_AUTH_URL_PREFIX", "/auth", _url_prefix, "URL prefix of the auth blueprint"),
    Option("MDB_AUTH_HOME", "/", _redirect_path, "where login and logout go without a next"),
    Option("MDB_JWT_SECRET", None, _secret, "HMAC secret of JWTs (>= 32 bytes)"),
    Option("MDB_JWT_SECRET_FALLBACKS", None, _secrets, "older JWT secrets, verify only"),
    Option("MDB_JWT_PRIVATE_KEY", None, _secret, "PEM key (or path) for RS*/ES*/EdDSA tokens"),
    Option("MDB_JWT_PUBLIC_KEYS", None, _mapping, "{kid: PEM} of older keys, verify only"),
    Option("MDB_JWT_KEY_ID", None, _optional_str, "kid of MDB_JWT_PRIVATE_KEY"),
    Option("MDB_AUTH_PROVIDER", None, _provider, "authorization provider (custom)"),
    Option("MDB_AUTH_POLICY_RELOAD", 5.0, _seconds, "seconds between policy checks"),
    Option("MDB_PASSWORD_HASH_COST", 32768, _scrypt_cost, "scrypt N of new password hashes"),
    Option(
        "MDB_PASSWORD_RESET_SENDER",
        None,
        _callable,
        "callable (user, url) delivering a password-reset link",
    ),
    Option(
        "MDB_PASSWORD_RESET_QUEUE_SIZE",
        100,
        _positive_int,
        "reset requests waiting for the background sender (beyond: dropped, logged)",
    ),
    Option(
        "MDB_EMAIL_VERIFICATION_SENDER",
        None,
        _callable,
        "callable (user, url) delivering an e-mail verification or change-of-address link",
    ),
    Option(
        "MDB_EMAIL_CHANGE_NOTICE_SENDER",
        None,
        _callable,
        "callable (user, new_email) telling the old address that the account's changes",
    ),
    Option(
        "MDB_ANONYMOUS_UPGRADE",
        None,
        _callable,
        "callable (anonymous_id, user) carrying an anonymous visitor's data to its account",
    ),
    Option("MDB_TWO_FACTOR_KEY", None, _secret, "encrypts TOTP secrets; unset: SECRET_KEY"),
    Option(
        "MDB_EXTERNAL_URL",
        None,
        _external_url,
        "public base URL of absolute links (reset links), or {slug: URL}; never the Host",
    ),
    Option("MDB_SECURITY_HEADERS", True, _bool, "security headers on apps with auth"),
    Option("MDB_CONTENT_SECURITY_POLICY", None, _csp, "Content-Security-Policy of those apps"),
    # --- websockets (flask_mdb.websockets)
    Option("MDB_WEBSOCKETS", True, _bool, "serve the websocket endpoints of MDB_MANIFESTS"),
    Option("MDB_WEBSOCKET_QUEUE_SIZE", 256, _positive_int, "frames a client may lag behind"),
    Option("MDB_WEBSOCKET_SEND_TIMEOUT", 10.0, _positive_number, "seconds one frame may take"),
    Option(
        "MDB_WEBSOCKET_MAX_CONNECTIONS",
        1000,
        _optional_positive_int,
        "per app (and process, unless the limits scope is cluster)",
    ),
    Option("MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER", 16, _optional_positive_int, "per user"),
    Option(
        "MDB_WEBSOCKET_LIMITS_SCOPE",
        "process",
        _limits_scope,
        'connection limits counted per "process", or across every process ("cluster")',
    ),
    Option(
        "MDB_WEBSOCKET_LEASE_TTL",
        15.0,
        _lease_ttl,
        "cluster limits: seconds until a dead process's connections stop counting",
    ),
    Option(
        "MDB_WEBSOCKET_MAX_CHANNELS_PER_CONNECTION",
        64,
        _optional_positive_int,
        "channels one connection may be in",
    ),
    Option(
        "MDB_WEBSOCKET_MAX_CHANNELS",
        10_000,
        _optional_positive_int,
        "channels with members per app and process",
    ),
    Option(
        "MDB_WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS",
        None,
        _optional_positive_int,
        "anonymous ones per client address (None: no limit)",
    ),
    Option(
        "MDB_WEBSOCKET_RECHECK_INTERVAL",
        0.0,
        _seconds,
        "seconds a re-check of a connection's login holds for its next messages (0: each)",
    ),
]

#: Options that configure an engine the extension builds itself.
ENGINE_OPTIONS = (
    "MDB_MONGO_URI",
    "MDB_DB_NAME",
    "MDB_EMBEDDED_DIR",
    "MDB_CLIENT_OPTIONS",
    "MDB_QUERY_LIMITS",
    "MDB_IMPLICIT_APPS",
    "MDB_COMMAND_METRICS",
)


class MDBConfig(dict[str, Any]):
    """The parsed ``MDB_*`` values of one Flask app, by key."""


#: Shortest Flask ``SECRET_KEY`` accepted (bytes, as for ``MDB_JWT_SECRET``): it signs the
#: session cookie and the CSRF tokens.
MIN_SECRET_KEY_BYTES = 32


def check_secret_key(config: Mapping[str, Any]) -> None:
    """Refuse a Flask ``SECRET_KEY`` that is set but is not a string (or bytes) of at least
    :data:`MIN_SECRET_KEY_BYTES` bytes: a short or guessable key lets anyone forge the
    signed cookies and CSRF tokens. An unset key is left to the features that need one."""
    value = config.get("SECRET_KEY")
    if value is None:
        return
    hint = "e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
    if not isinstance(value, str | bytes):
        raise _error("SECRET_KEY", f"must be a string of random characters ({hint}), "
                     f"not {type(value).__name__}")  # fmt: skip
    size = len(value.encode("utf-8") if isinstance(value, str) else value)
    if size < MIN_SECRET_KEY_BYTES:
        raise _error(
            "SECRET_KEY",
            f"is {size} bytes long: it must be at least {MIN_SECRET_KEY_BYTES} random bytes "
            f"({hint})",
        )


def load_config(config: dict[str, Any], *, engine_given: bool = False) -> MDBConfig:
    """Set the defaults on ``config`` (a Flask ``app.config``) and parse every option."""
    check_secret_key(config)
    root = getattr(config, "root_path", None)
    parsed = MDBConfig()
    for option in OPTIONS:
        raw = config.setdefault(option.key, option.default)
        if option.key == "MDB_MANIFESTS":
            value = _manifest_paths(option.key, raw, root)
        else:
            value = option.parse(option.key, raw)
        if (
            engine_given
            and option.key in ENGINE_OPTIONS
            and value != option.parse(option.key, option.default)
        ):
            raise _error(
                option.key,
                "configures an engine, but MDB was given one (engine=...): configure that "
                "engine instead, or drop engine= to let the extension build one",
            )
        parsed[option.key] = value
    _warn_unknown(config)
    return parsed


def _warn_unknown(config: Mapping[str, Any]) -> None:
    known = [option.key for option in OPTIONS]
    for key in config:
        if isinstance(key, str) and key.startswith("MDB_") and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.warn(f"unknown configuration key {key}{hint}", RuntimeWarning, stacklevel=5)
