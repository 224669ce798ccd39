"""Attack: tell who has an account from how long ``POST /auth/forgot`` takes.

With an SMTP-like sender (300 ms a message) the link used to be sent inside the request, so
an existing account answered ~300 ms slower than an unknown email. Now the request does the
same work for every email and the lookup, token, link and sending run on the background
sender: the medians of both kinds of request stay within 5 ms."""

from __future__ import annotations

import statistics
import threading

from flask_mdb.testing import LiveServer

from .raw_http import Browser, wait_for
from .site_apps import Outbox, make_site, register

ACCOUNTS = 30  # requests of each kind (existing and unknown emails)


def test_forgot_answers_in_the_same_time_whether_or_not_the_email_has_an_account(factory, tmp_path):
    outbox = Outbox(delay=0.3)
    app = make_site(
        factory,
        tmp_path,
        MDB_PASSWORD_RESET_SENDER=outbox,
        MDB_EXTERNAL_URL="https://alice.example",
        MDB_PASSWORD_RESET_QUEUE_SIZE=64,
    )
    existing = [f"user{i}@example.com" for i in range(ACCOUNTS)]
    unknown = [f"ghost{i}@example.com" for i in range(ACCOUNTS)]
    with LiveServer(app) as server:
        for email in existing:  # one link each: the per-account cap never hides a send
            register(Browser(server.url, "127.0.0.2"), email)
        attacker = Browser(server.url, "127.0.0.3", headers={"Accept": "application/json"})
        token = attacker.csrf()

        def forgot(email: str) -> float:
            reply = attacker.post("/auth/forgot", json={"email": email},
                                  headers={"X-CSRF-Token": token})  # fmt: skip
            assert reply.status == 202, reply.text
            bodies.add(reply.body)
            return reply.elapsed

        bodies: set[bytes] = set()
        forgot("warm-up@example.com")
        times: dict[str, list[float]] = {"existing": [], "unknown": []}
        # Interleaved, alternating which kind goes first (ABBA): background work left by one
        # request falls on both kinds alike, and so does any load on the machine.
        for i in range(ACCOUNTS):
            pair = [("existing", existing[i]), ("unknown", unknown[i])]
            for kind, email in pair if i % 2 == 0 else pair[::-1]:
                times[kind].append(forgot(email))
        wait_for(lambda: len(outbox.sent) == ACCOUNTS, timeout=60, what="every link sent")

    known_ms = statistics.median(times["existing"]) * 1000
    unknown_ms = statistics.median(times["unknown"]) * 1000
    print(f"\nforgot medians: existing {known_ms:.1f} ms, unknown {unknown_ms:.1f} ms")
    assert len(bodies) == 1  # one answer, byte for byte
    assert abs(known_ms - unknown_ms) < 5.0, (known_ms, unknown_ms)
    assert known_ms < 300  # the 300 ms sender is not in the request
    # ... but every existing account did get its link, and only those.
    assert sorted(email for email, _ in outbox.sent) == sorted(existing)
    assert all(url.startswith("https://alice.example/auth/reset?token=") for _, url in outbox.sent)
    assert outbox.threads and all("reset" in name for name in outbox.threads)


def test_a_flood_of_reset_requests_is_dropped_beyond_the_queue_with_the_same_answer(
    factory, tmp_path, caplog
):
    entered, release = threading.Event(), threading.Event()
    sent: list[str] = []

    def stuck_sender(user, url):  # a mail server that hangs
        entered.set()
        release.wait(30)
        sent.append(user["email"])

    app = make_site(factory, tmp_path, MDB_PASSWORD_RESET_SENDER=stuck_sender,
                    MDB_EXTERNAL_URL="https://alice.example",
                    MDB_PASSWORD_RESET_QUEUE_SIZE=2)  # fmt: skip
    emails = [f"user{i}@example.com" for i in range(6)]
    with LiveServer(app) as server:
        for email in emails:
            register(Browser(server.url, "127.0.0.2"), email)
        replies = []
        for i, email in enumerate(emails):  # from six addresses
            client = Browser(
                server.url, f"127.0.0.{10 + i}", headers={"Accept": "application/json"}
            )
            replies.append(client.post("/auth/forgot", json={"email": email},
                                       headers={"X-CSRF-Token": client.csrf()}))  # fmt: skip
            if i == 0:
                assert entered.wait(10)  # the worker is now stuck in the first send
        assert {(r.status, r.body) for r in replies} == {(202, replies[0].body)}
        release.set()
        wait_for(lambda: len(sent) == 3, what="the queued links")
        assert app.extensions["mdb"].outbox.join(10)
    assert sent == emails[:3]  # the one being sent and the two that fitted in the queue
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 3 and all(r.levelname == "WARNING" for r in drops)
