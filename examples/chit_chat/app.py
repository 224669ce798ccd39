"""Chit Chat: chat with an assistant that remembers you, over a websocket.

You register and sign in with ``flask_mdb``'s own pages (``/auth/register``, ``/auth/login``:
the manifest's ``auth`` block enables app users and requires sign-in for every page). The page
opens the app's websocket (``/chat/ws``, declared in ``manifest.json`` with
``auth.required``: the session cookie identifies you, and a connection without one is refused).
Each message you send is stored, the assistant's reply is streamed back word by word, and
then the memory service (``memory_config``) extracts what is worth remembering about you —
your name, what you like, your plans — which shapes later replies, also in new
conversations. Your memories are yours: every read is filtered by your user id, and you can
make the assistant forget any of them. Every tab you have open, in any web process, sees the
conversation.

It needs a chat model: any OpenAI-compatible server (Ollama, vLLM, LM Studio) through
``MDB_LLM_BASE_URL`` (set the model names in ``manifest.json``), or ``OPENAI_API_KEY``::

    MDB_LLM_BASE_URL=http://localhost:11434/v1 python examples/chit_chat/app.py
    # http://127.0.0.1:5001  (PORT=... to change; data in ./.mdb unless MDB_MONGO_URI is set)
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, render_template

from flask_mdb import (
    MDB,
    Connection,
    MessageError,
    db,
    get_current_user,
    register_message_handler,
    send_to_user,
)
from mdb_sync.exceptions import AIServiceError, ConfigurationError

HERE = Path(__file__).resolve().parent
SLUG = "chit_chat"
MAX_TEXT = 2000
HISTORY_TURNS = 12
MEMORIES_IN_PROMPT = 5
SYSTEM_PROMPT = (
    "You are Chit Chat, a warm and concise conversation partner. You are talking with "
    "{name}. What you remember about them (use it naturally, never list it):\n{memories}"
)

mdb = MDB()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, root_path=str(HERE))
    app.config.update(
        # Set SECRET_KEY (32+ random bytes) to keep sign-ins valid across restarts.
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        MDB_DB_NAME=os.environ.get("MDB_DB_NAME", "chit_chat_example"),
        MDB_MANIFESTS=str(HERE / "manifest.json"),
        MDB_JSON_PROVIDER=True,
        MDB_HEALTH_URL="/health",
    )
    app.config.update(config or {})
    mdb.init_app(app)
    app.add_url_rule("/", "index", index)
    return app


def _name(email: str) -> str:
    return email.split("@", 1)[0]


def index() -> str:
    user = get_current_user()  # the manifest's policy sends anonymous visitors to sign in
    return render_template("index.html", user=user, name=_name(user.email))


# --- the conversation (websocket messages) ------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _memories(user_id: str) -> list[dict[str, Any]]:
    return [{"id": m["id"], "memory": m["memory"]} for m in _memory().get_all(user_id, limit=50)]


def _memory() -> Any:
    return mdb.engine.get_memory_service(SLUG)


def _history(user_id: str, limit: int) -> list[dict[str, Any]]:
    found = db.messages.find({"user_id": user_id}, {"user_id": 0, "app_id": 0})
    return list(reversed(found.sort("created_at", -1).limit(limit).to_list()))


def _store(user_id: str, role: str, text: str) -> dict[str, Any]:
    message = {"user_id": user_id, "role": role, "text": text, "created_at": _now()}
    message["_id"] = db.messages.insert_one(message).inserted_id
    return {k: v for k, v in message.items() if k != "user_id"}


@register_message_handler(SLUG, message_type="history")
def history(connection: Connection, message: Any) -> dict[str, Any]:
    return {
        "type": "history",
        "messages": _history(connection.user_id, 50),
        "memories": _memories(connection.user_id),
    }


@register_message_handler(SLUG, message_type="chat")
def chat(connection: Connection, message: Any) -> None:
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        raise MessageError("text: say something", code="empty")
    if len(text) > MAX_TEXT:
        raise MessageError(f"text: at most {MAX_TEXT} characters", code="too_long")
    user_id = connection.user_id
    name = _name(connection.identity.get("email") or user_id)
    earlier = _history(user_id, HISTORY_TURNS)
    said = _store(user_id, "user", text.strip())
    send_to_user(SLUG, user_id, {"type": "message", "message": said})  # every tab, every process
    try:
        remembered = _memory().search(said["text"], user_id=user_id, limit=MEMORIES_IN_PROMPT)
        prompt = [
            {
                "role": "system",
                "content": SYSTEM_PROMPT.format(
                    name=name,
                    memories="\n".join(f"- {m['memory']}" for m in remembered) or "- nothing yet",
                ),
            },
            *({"role": m["role"], "content": m["text"]} for m in earlier),
            {"role": "user", "content": said["text"]},
        ]
        llm = mdb.engine.get_llm_service(SLUG)
        pieces = []
        for piece in llm.chat(prompt, stream=True):
            pieces.append(piece)
            connection.send({"type": "reply.delta", "reply_to": str(said["_id"]), "text": piece})
    except (AIServiceError, ConfigurationError) as exc:
        raise MessageError(f"the assistant is unavailable: {exc}", code="llm_unavailable") from exc
    reply = _store(user_id, "assistant", "".join(pieces).strip())
    send_to_user(SLUG, user_id, {"type": "message", "message": reply, "reply_to": str(said["_id"])})
    try:
        _memory().add(
            [
                {"role": "user", "content": said["text"]},
                {"role": "assistant", "content": reply["text"]},
            ],
            user_id=user_id,
        )
    except AIServiceError as exc:
        connection.send({"type": "notice", "text": f"could not update your memories: {exc}"})
        return
    send_to_user(SLUG, user_id, {"type": "memories", "memories": _memories(user_id)})


@register_message_handler(SLUG, message_type="forget")
def forget(connection: Connection, message: Any) -> None:
    try:
        forgotten = _memory().delete(message.get("id"), user_id=connection.user_id)
    except (ValueError, TypeError) as exc:
        raise MessageError(f"id: {exc}", code="bad_id") from exc
    if not forgotten:
        raise MessageError("no such memory", code="not_found")
    send_to_user(
        SLUG, connection.user_id, {"type": "memories", "memories": _memories(connection.user_id)}
    )


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5001"))
    application = create_app()
    print(f"chit chat on http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)
    application.run(host="127.0.0.1", port=port, threaded=True)
