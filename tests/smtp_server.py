"""A real SMTP server for the tests (aiosmtpd, on 127.0.0.1, a free port) and a sender that
mails through it with ``smtplib`` — what an app's ``MDB_EMAIL_VERIFICATION_SENDER``,
``MDB_EMAIL_CHANGE_NOTICE_SENDER`` and ``MDB_PASSWORD_RESET_SENDER`` would do. Tests read
the messages the server received and follow the links in them."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import threading
import time
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from flask_apps import free_port

LINK = re.compile(r"https?://\S+")


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.inbox.add(list(envelope.rcpt_tos), message)
        return "250 OK"


class Inbox:
    """The messages an :class:`SmtpServer` received, by recipient."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[list[str], Any]] = []

    def add(self, recipients: list[str], message: Any) -> None:
        with self._lock:
            self.messages.append((recipients, message))

    def to(self, address: str) -> list[Any]:
        with self._lock:
            return [m for rcpts, m in self.messages if address in rcpts]

    def wait_for(self, address: str, count: int = 1, timeout: float = 20.0) -> list[Any]:
        """The messages to ``address`` once there are ``count`` (AssertionError after
        ``timeout`` seconds: the mails go out from the app's background sender)."""
        deadline = time.monotonic() + timeout
        while len(self.to(address)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} message(s) to {address} within {timeout:g} s")
            time.sleep(0.02)
        return self.to(address)


def links_in(message: Any) -> list[str]:
    body = message.get_body(preferencelist=("plain",)).get_content()
    return LINK.findall(body)


class SmtpServer:
    """``with SmtpServer() as smtp:`` a real SMTP server; ``smtp.inbox`` its messages."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._controller = Controller(_Handler(self.inbox), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._controller.stop()

    def send(self, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"] = "noreply@app.example"
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            client.send_message(message)

    # --- the app's senders ---------------------------------------------------------------------

    def verification_sender(self, user: dict[str, Any], url: str) -> None:
        if user.get("previous_email"):
            text = f"Confirm your new address for your account:\n\n{url}\n"
        else:
            text = f"Welcome! Confirm your address:\n\n{url}\n"
        self.send(user["email"], "Confirm your e-mail address", text)

    def notice_sender(self, user: dict[str, Any], new_email: str) -> None:
        text = (
            f"Someone asked to move your account to {new_email}. If it was not you, reset "
            "your password now. (This message has no link on purpose.)\n"
        )
        self.send(user["email"], "Your account's e-mail address is changing", text)

    def reset_sender(self, user: dict[str, Any], url: str) -> None:
        self.send(user["email"], "Reset your password", f"Reset it here:\n\n{url}\n")
