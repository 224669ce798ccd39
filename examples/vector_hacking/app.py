"""Vector hacking: recover a hidden phrase from nothing but how close guesses come to its
embedding — why an embedding is not an anonymised copy of a text.

The chat model proposes a target phrase (or you type one), the app embeds it with the local
all-MiniLM-L6-v2 model and keeps the vector. Then the model guesses, step by step: it never
sees the target, only the cosine similarity of each of its earlier guesses to the target's
vector, and tries to raise it. Every step — the guess and its similarity — is streamed to
the page over the websocket the manifest declares (``/ws``), until a guess reaches the
threshold (0.95 by default), the steps run out, or you stop it. Runs and guesses are stored
in the app's sandbox (``runs``, ``guesses``).

Messages on ``/ws``: ``{"type": "start", "target"?, "max_steps"?, "threshold"?}`` (answered
``accepted``, then ``run.started``, one ``step`` per guess, ``run.finished``), ``{"type":
"stop"}``, ``{"type": "history"}``. One attack per connection, ``VECTOR_HACKING_MAX_RUNS`` (2)
per process at once, at most 50 steps each: every step is a chat call that someone pays for.

It needs a chat model for the guesses — any OpenAI-compatible server (Ollama, vLLM, LM Studio,
or OpenAI's own with ``OPENAI_API_KEY``) through ``MDB_LLM_BASE_URL`` (the model is
``llm_config.default_chat_model``); embeddings are computed on this machine::

    MDB_LLM_BASE_URL=http://localhost:11434/v1 python examples/vector_hacking/app.py
    # http://127.0.0.1:5003  (PORT=... to change)
    flask --app examples/vector_hacking/app.py run      # the same, on port 5000
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bson import ObjectId
from flask import Flask, current_app, render_template

from flask_mdb import (
    MDB,
    Connection,
    MessageError,
    get_current_db,
    register_disconnect_handler,
    register_message_handler,
)
from mdb_sync import MongoDBEngine, ScopedDatabase
from mdb_sync.exceptions import AIServiceError, ConfigurationError

HERE = Path(__file__).resolve().parent
SLUG = "vector_hacking"
DEFAULT_STEPS = 25
MAX_STEPS = 50
DEFAULT_THRESHOLD = 0.95
MAX_TARGET = 200
MAX_GUESS = 120
#: Quotes a model may wrap its guess in (straight, curly, backticks).
QUOTES = "\"'`\u201c\u201d\u2018\u2019"
#: Guesses shown to the model: the most similar ones, and the latest.
PROMPT_BEST, PROMPT_RECENT = 12, 3
TARGET_PROMPT = (
    "Propose a short, everyday English phrase of three to seven words for a guessing game: "
    "a saying, a piece of advice or a title. Reply with the phrase only."
)
GUESS_PROMPT = (
    "You are playing a guessing game. A hidden short English phrase was turned into an "
    "embedding vector. You cannot see the phrase: you only learn how similar each of your "
    "guesses is to it (cosine similarity; 1.0 means the same meaning, around 0.1 unrelated). "
    "Use the similarities to home in on the phrase: keep what raised them, change what did "
    "not. Reply with your next guess only: one short phrase, no quotes, no explanation, "
    "never a guess you already made."
)

log = logging.getLogger(__name__)
mdb = MDB()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, root_path=str(HERE))
    app.config.update(
        MDB_DB_NAME=os.environ.get("MDB_DB_NAME", "vector_hacking_example"),
        MDB_MANIFESTS=str(HERE / "manifest.json"),
        MDB_JSON_PROVIDER=True,
        MDB_HEALTH_URL="/health",
        VECTOR_HACKING_MAX_RUNS=int(os.environ.get("VECTOR_HACKING_MAX_RUNS", "2")),
    )
    app.config.update(config or {})
    mdb.init_app(app)
    app.add_url_rule("/", "index", index)
    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    return app


def shutdown(app: Flask) -> None:
    """Stop the running attacks (their runs are recorded as stopped), then the engine."""
    stop_all(timeout=10)
    mdb.shutdown(app)


def index() -> str:
    manifest = mdb.engine.get_app(SLUG) or {}
    live = (manifest.get("websockets") or {}).get("attack", {}).get("path", "")
    return render_template(
        "index.html",
        live=live,
        defaults={"steps": DEFAULT_STEPS, "max_steps": MAX_STEPS, "threshold": DEFAULT_THRESHOLD},
    )


# --- the attack ----------------------------------------------------------------------------------


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def clean_guess(reply: str) -> str:
    """The model's guess: its first non-empty line, without quotes, at most 120 characters."""
    for line in reply.splitlines():
        line = line.strip().strip(QUOTES).strip()
        if line:
            return " ".join(line.split())[:MAX_GUESS]
    return ""


def guess_messages(history: list[tuple[str, float]]) -> list[dict[str, str]]:
    """The prompt of the next guess: the best guesses so far and the latest, with their
    similarities — never the target."""
    best = sorted(history, key=lambda h: -h[1])[:PROMPT_BEST]
    recent = [h for h in history[-PROMPT_RECENT:] if h not in best]
    if not history:
        user = "No guesses yet: make your first guess."
    else:
        lines = [f"- {similarity:.3f}: {text}" for text, similarity in best]
        if recent:
            lines.append("Your latest guesses:")
            lines += [f"- {similarity:.3f}: {text}" for text, similarity in recent]
        user = "Your guesses so far, most similar first:\n" + "\n".join(lines) + "\nNext guess:"
    return [{"role": "system", "content": GUESS_PROMPT}, {"role": "user", "content": user}]


class Attack:
    """One run for one connection, on a thread of its own (a step is a chat call and an
    embedding: seconds, which must not hold up the connection's other messages)."""

    def __init__(
        self,
        connection: Connection,
        engine: MongoDBEngine,
        db: ScopedDatabase,
        target: str | None,
        max_steps: int,
        threshold: float,
    ) -> None:
        self.connection = connection
        self.engine = engine
        self.db = db
        self.target = target
        self.max_steps = max_steps
        self.threshold = threshold
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vector-hacking", daemon=True)

    def _run(self) -> None:
        try:
            self._attack()
        except Exception:
            log.exception("attack of connection %s failed", self.connection.id)
            self._finish({"status": "failed", "error": "the attack failed (see the server's log)"})
        finally:
            self._release()

    def _release(self) -> None:
        """Free the connection's slot — if it is still this attack's (the connection may
        have started its next one already)."""
        with _lock:
            if _attacks.get(self.connection.id) is self:
                del _attacks[self.connection.id]

    def _finish(self, outcome: dict[str, Any]) -> None:
        """The last message: sent once this connection may start another attack."""
        self._release()
        self.connection.send({"type": "run.finished", **outcome})

    def _attack(self) -> None:
        llm = self.engine.get_llm_service(SLUG)
        embeddings = self.engine.get_embedding_service(SLUG)
        source = "you"
        if not self.target:
            source = "model"
            try:
                proposed = llm.chat([{"role": "user", "content": TARGET_PROMPT}], temperature=1.0)
            except (AIServiceError, ConfigurationError) as exc:
                self._finish({"status": "failed", "error": f"no target: {exc}"})
                return
            self.target = clean_guess(proposed)[:MAX_TARGET] or "Be mindful of your thoughts"
        target_vector = embeddings.embed_query(self.target)
        run_id = ObjectId()
        started = dt.datetime.now(dt.timezone.utc)
        self.db.runs.insert_one(
            {
                "_id": run_id,
                "target": self.target,
                "target_source": source,
                "status": "running",
                "max_steps": self.max_steps,
                "threshold": self.threshold,
                "steps": 0,
                "best": None,
                "started_at": started,
            }
        )
        self.connection.send(
            {
                "type": "run.started",
                "run_id": run_id,
                "target": self.target,
                "target_source": source,
                "max_steps": self.max_steps,
                "threshold": self.threshold,
            }
        )
        history: list[tuple[str, float]] = []
        seen: dict[str, float] = {}
        best: dict[str, Any] | None = None
        status, error, step = "exhausted", None, 0
        for step in range(1, self.max_steps + 1):
            if self.stopping.is_set():
                status, step = "stopped", step - 1
                break
            try:
                guess = clean_guess(llm.chat(guess_messages(history)))
            except (AIServiceError, ConfigurationError) as exc:
                status, error, step = "failed", f"the chat model failed: {exc}", step - 1
                break
            key = _normalized(guess)
            repeated = key in seen
            if not key:
                similarity = None
            elif repeated:
                similarity = seen[key]
            else:
                similarity = round(cosine(target_vector, embeddings.embed_query(guess)), 4)
                seen[key] = similarity
                history.append((guess, similarity))
            improved = similarity is not None and (best is None or similarity > best["similarity"])
            if improved:
                best = {"text": guess, "similarity": similarity, "step": step}
            self.db.guesses.insert_one(
                {
                    "run_id": run_id,
                    "step": step,
                    "text": guess,
                    "similarity": similarity,
                    "repeated": repeated,
                    "at": dt.datetime.now(dt.timezone.utc),
                }
            )
            self.connection.send(
                {
                    "type": "step",
                    "run_id": run_id,
                    "step": step,
                    "guess": guess,
                    "similarity": similarity,
                    "repeated": repeated,
                    "improved": improved,
                    "best": best,
                }
            )
            if similarity is not None and (
                similarity >= self.threshold or key == _normalized(self.target)
            ):
                status = "matched"
                break
        finished = {
            "status": status,
            "steps": step,
            "best": best,
            "error": error,
            "finished_at": dt.datetime.now(dt.timezone.utc),
        }
        self.db.runs.update_one({"_id": run_id}, {"$set": finished})
        self._finish({"run_id": run_id, **finished})


_lock = threading.Lock()
_attacks: dict[str, Attack] = {}


def running() -> int:
    """Attacks running in this process."""
    with _lock:
        return len(_attacks)


def stop_all(timeout: float = 10) -> None:
    """Stop every attack of this process and wait for them (``timeout`` in all)."""
    with _lock:
        attacks = list(_attacks.values())
    for attack in attacks:
        attack.stopping.set()
    for attack in attacks:
        attack.thread.join(timeout)


def _target(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise MessageError(
            "target: a string, or nothing to let the model propose one", code="bad_target"
        )
    value = " ".join(value.split())
    if len(value) > MAX_TARGET:
        raise MessageError(f"target: at most {MAX_TARGET} characters", code="bad_target")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in value):
        raise MessageError("target: control characters are not allowed", code="bad_target")
    return value


def _number(message: Any, key: str, default: Any, low: float, high: float, kind: type) -> Any:
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{key}: a number between {low} and {high}", code="bad_" + key)
    if kind is int and value != int(value):
        raise MessageError(f"{key}: a whole number", code="bad_" + key)
    if not low <= value <= high:
        raise MessageError(f"{key}: between {low} and {high}", code="bad_" + key)
    return kind(value)


@register_message_handler(SLUG, message_type="start")
def start(connection: Connection, message: Any) -> None:
    target = _target(message.get("target"))
    max_steps = _number(message, "max_steps", DEFAULT_STEPS, 1, MAX_STEPS, int)
    threshold = _number(message, "threshold", DEFAULT_THRESHOLD, 0.5, 1.0, float)
    limit = current_app.config["VECTOR_HACKING_MAX_RUNS"]
    attack = Attack(connection, mdb.engine, get_current_db(), target, max_steps, threshold)
    with _lock:
        if connection.id in _attacks:
            raise MessageError("an attack is already running here: stop it first", code="busy")
        if len(_attacks) >= limit:
            raise MessageError(
                f"{limit} attack(s) are running on this server: try again when one ends",
                code="too_many",
            )
        _attacks[connection.id] = attack
    accepted = {"type": "accepted", "max_steps": max_steps, "threshold": threshold}
    if isinstance(message.get("id"), (str, int)):
        accepted["id"] = message["id"]
    connection.send(accepted)  # before the attack's own messages
    attack.thread.start()


@register_message_handler(SLUG, message_type="stop")
def stop(connection: Connection, message: Any) -> dict[str, Any]:
    with _lock:
        attack = _attacks.get(connection.id)
    if attack is None:
        raise MessageError("no attack is running here", code="not_running")
    attack.stopping.set()
    return {"type": "stopping"}


@register_message_handler(SLUG, message_type="history")
def history(connection: Connection, message: Any) -> dict[str, Any]:
    runs = get_current_db().runs.find({}, {"app_id": 0}).sort("started_at", -1).limit(10)
    return {"type": "history", "runs": runs.to_list()}


@register_disconnect_handler(SLUG)
def disconnected(connection: Connection) -> None:
    with _lock:
        attack = _attacks.get(connection.id)
    if attack is not None:
        attack.stopping.set()


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5003"))
    application = create_app()
    print(f"vector hacking on http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        application.run(host="127.0.0.1", port=port, threaded=True)
    finally:
        shutdown(application)
