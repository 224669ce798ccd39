"""MongoDB connection strings, read with pymongo's own parser.

One place reads a URI's hosts, database and option names, so the engine, the Celery
settings and displays agree with what pymongo will connect to (``db.coll`` paths,
percent-encoded names, IPv6 literals, ``;`` separators) instead of each guessing with a
regular expression. Two rules hold everywhere: credentials are never part of what is
shown, and a ``mongodb+srv://`` URI is never resolved in DNS here (describing a server or
reading its database name must not wait on a DNS server; the client resolves it when it
connects).
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import PyMongoError

from ._pymongo_seam import parse_uri_offline

SCHEMES = ("mongodb://", "mongodb+srv://")
UNPARSEABLE = "<unparseable URI>"


def parse(uri: str, *, validate: bool = False) -> dict[str, Any] | None:
    """pymongo's parse of ``uri`` (no DNS), or None when it is not a MongoDB URI."""
    if not isinstance(uri, str) or not uri.startswith(SCHEMES):
        return None
    try:
        return parse_uri_offline(uri, validate=validate)
    except (PyMongoError, ValueError, TypeError):
        return None


def _host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
    return shown if port is None else f"{shown}:{port}"


def describe(uri: str) -> str:
    """``mongodb://host:port[,host:port]`` (or ``mongodb+srv://name``) of ``uri``: no
    credentials, database or options."""
    parsed = parse(uri or "")
    if parsed is None:
        return _unparsed_hosts(uri or "")
    if parsed.get("fqdn"):
        return f"mongodb+srv://{parsed['fqdn']}"
    hosts = ",".join(_host(h, p) for h, p in parsed["nodelist"])
    return f"mongodb://{hosts or '<no host>'}"


def _unparsed_hosts(uri: str) -> str:
    """The host text of a MongoDB URI pymongo refuses (a bad port, say), so an error can
    still say where: what follows the last ``@`` before the options, up to the path — never
    the credentials, even when a password holds an unescaped ``/`` or ``@``."""
    scheme = next((s for s in SCHEMES if uri.startswith(s)), None)
    if scheme is None:
        return UNPARSEABLE
    hosts = uri[len(scheme) :].split("?", 1)[0].rpartition("@")[2].split("/", 1)[0]
    return f"{scheme}{hosts or '<no host>'}"


def option_names(uri: str) -> set[str]:
    """The option names (lowercase) ``uri``'s query string sets (none when unparseable:
    the client then refuses the URI with pymongo's own message)."""
    parsed = parse(uri or "")
    return {str(k).lower() for k in parsed["options"]} if parsed else set()


def database(uri: str) -> str | None:
    """The database named in ``uri``'s path (``db`` of ``/db.coll``), or None."""
    parsed = parse(uri or "")
    return parsed.get("database") if parsed else None


def with_database(uri: str, name: str) -> str:
    """``uri`` with its path set to ``name`` (credentials and options kept as given).

    Raises ``ValueError`` when ``uri`` is not a MongoDB URI pymongo can read."""
    if parse(uri) is None:
        raise ValueError("not a mongodb:// or mongodb+srv:// URI")
    scheme, rest = uri.split("://", 1)
    head, sep, query = rest.partition("?")
    hosts = head.split("/", 1)[0]
    return f"{scheme}://{hosts}/{name}{sep}{query}"
