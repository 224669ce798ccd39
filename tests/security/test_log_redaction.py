"""Attack: read secrets from logs. Whoever can read an application's logs (a log service, a
support engineer, a leaked archive) must not find tokens there: reset links, access
tokens in ``?token=`` websocket URLs, bearer headers, session cookies.

The library's own loggers redact what they emit, whatever handler the application put on
them; other loggers (werkzeug's access log) are redacted by the handler
:func:`~mdb_sync.observability.configure_logging` installs (or a :class:`RedactingFilter`)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

from auth_apps import PASSWORD

from flask_mdb.testing import LiveServer
from mdb_sync.observability import configure_logging

from .raw_http import Browser, wait_for
from .site_apps import EXTERNAL_URL, make_site, register, site_manifest

VICTIM = "victim@example.com"


@contextmanager
def captured(logger: str, level: int = logging.INFO) -> Iterator[io.StringIO]:
    """Everything ``logger`` (and its children) emits, formatted by a plain handler of the
    application's own — no filter of ours on it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    target = logging.getLogger(logger)
    saved = target.level
    target.addHandler(handler)
    target.setLevel(level)
    try:
        yield stream
    finally:
        target.removeHandler(handler)
        target.setLevel(saved)


def test_a_failing_sender_does_not_put_the_reset_link_in_the_logs(factory, tmp_path):
    links: list[str] = []

    def sender(user, url):
        links.append(url)
        raise OSError(f"550 mailbox unavailable: could not deliver {url} to {user['email']}")

    app = make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=sender,
                    MDB_EXTERNAL_URL=EXTERNAL_URL)  # fmt: skip
    with captured("flask_mdb") as logs, LiveServer(app) as server:
        register(Browser(server.url, "127.0.0.2"), VICTIM)
        attacker = Browser(server.url, "127.0.0.9", headers={"Accept": "application/json"})
        reply = attacker.post("/auth/forgot", json={"email": VICTIM},
                              headers={"X-CSRF-Token": attacker.csrf()})  # fmt: skip
        assert reply.status == 202
        wait_for(lambda: "550 mailbox unavailable" in logs.getvalue(), what="the sender's error")
    token = parse_qs(urlsplit(links[0]).query)["token"][0]
    text = logs.getvalue()
    assert "Traceback" in text and "OSError" in text  # the failure is logged, in full...
    assert token not in text  # ... without the token
    assert "token=[REDACTED]" in text


def test_tokens_in_websocket_and_auth_urls_are_redacted_from_the_access_log(factory, tmp_path):
    manifest = site_manifest(reset=False)
    manifest["websockets"] = {"realtime": {"path": "/ws", "auth": {"required": True}}}
    app = make_site(factory, tmp_path, manifest)
    access = io.StringIO()
    werkzeug_log = logging.getLogger("werkzeug")
    saved = werkzeug_log.level
    handler = configure_logging(logging.INFO, json=False, stream=access, logger="werkzeug")
    try:
        with LiveServer(app) as server:
            browser = Browser(server.url, "127.0.0.2", headers={"Accept": "application/json"})
            register(browser, VICTIM)
            tokens = browser.post("/auth/token", json={"email": VICTIM, "password": PASSWORD})
            access_token = tokens.json["access_token"]
            with server.websocket(f"/ws?token={access_token}") as ws:  # what docs advise against
                assert ws.receive_json()["type"] == "connected"
            reset_token = "Zq3" + "x" * 40
            browser.get(f"/auth/reset?token={reset_token}&next=/", headers={"Accept": "text/html"})
            wait_for(lambda: "/ws?token=" in access.getvalue(), what="the websocket's log line")
    finally:
        werkzeug_log.removeHandler(handler)
        werkzeug_log.setLevel(saved)
    text = access.getvalue()
    assert "GET /ws?token=[REDACTED]" in text
    assert "GET /auth/reset?token=[REDACTED]&next=/" in text
    assert access_token not in text and reset_token not in text


def test_the_library_loggers_redact_whatever_handler_receives_their_records():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLXZhbHVl"
    opaque = "kT9x" + "Ab3_" * 9
    lines = [
        f"websocket GET /alice_app/ws?token={jwt}&v=2",
        f"handshake Authorization: Bearer {opaque}",
        f"subprotocols bearer, {opaque}",
        f"cookies alice_app_session={opaque}; remember_token=1|{opaque}",
        f"payload {{'refresh_token': '{jwt}', 'email': 'ada@example.com'}}",
        f"callback /oauth/callback?code={opaque}&state=1",
        f"link {EXTERNAL_URL}/auth/reset?token={opaque}",
        f"bare {opaque} here",
    ]
    with captured("mdb_sync") as core, captured("flask_mdb") as web:
        for line in lines:
            logging.getLogger("mdb_sync.auth.service").warning("%s", line)
            logging.getLogger("flask_mdb.websockets.routes").warning(line)
        try:
            raise ValueError(f"could not verify {jwt} for ?token={opaque}")
        except ValueError:
            logging.getLogger("flask_mdb.auth").exception("verification failed")
    for text in (core.getvalue(), web.getvalue()):
        assert jwt not in text and opaque not in text, text
        assert text.count("[REDACTED]") >= len(lines)
    assert "ada@example.com" in core.getvalue()  # what is not a secret stays readable
    assert "could not verify [REDACTED]" in web.getvalue()

    # Loggers that are not the library's are left as they are (their handlers decide).
    with captured("someone_else") as other:
        logging.getLogger("someone_else").warning("token=%s", opaque)
    assert opaque in other.getvalue()
