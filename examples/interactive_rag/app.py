"""Interactive RAG in the browser: add documents, watch them being ingested, ask questions and
get answers with their sources.

Drop text files on the page (or paste a text and name it): each document is queued and
ingested in the background — chunked, embedded by the local all-MiniLM-L6-v2 model and
stored in the app's ``knowledge_base`` collection — and every stage is pushed to every open
page over the websocket the manifest declares (``/ws``), as is the new list of sources. A
question retrieves the nearest passages and the chat model answers from them, citing them
as [1], [2]...; without a chat model the passages themselves are the answer. The command line
(``main.py``) works on the same database and collection (``rag.py`` is shared).

The knowledge base is shared and needs no sign-in (as in the seeds: ``allow_anonymous``), so
every input is bounded: 20 documents per upload, 500,000 characters per document, 32 queued
documents per process (``RAG_QUEUE_SIZE``; then 503), 2 MB per request. Changes are JSON
requests: a cross-site form cannot send ``application/json`` without the browser asking
first (CORS preflight), which this app never allows — no page elsewhere can fill your
knowledge base.

Run it on the embedded database (no MongoDB, no API key)::

    python examples/interactive_rag/app.py        # http://127.0.0.1:5002  (PORT=... to change)
    flask --app examples/interactive_rag/app.py run

and with a chat model: ``MDB_LLM_BASE_URL=http://localhost:11434/v1`` (Ollama; the model is
``llm_config.default_chat_model`` in ``manifest.json``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rag
from flask import Flask, abort, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from flask_mdb import MDB, broadcast_to_app
from mdb_sync.exceptions import MongoDBEngineError

HERE = Path(__file__).resolve().parent
SLUG = rag.SLUG
MAX_DOCUMENTS = 20
MAX_TEXT = 500_000
MAX_SOURCE = 200
MAX_QUESTION = 1000
QUEUE_SIZE = 32
EXTENSION = "interactive_rag"

log = logging.getLogger(__name__)
mdb = MDB()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, root_path=str(HERE))
    app.config.update(
        # The command line's database too: documents it ingested are here.
        MDB_DB_NAME=os.environ.get("MDB_DB_NAME", SLUG),
        MDB_MANIFESTS=str(HERE / "manifest.json"),
        MDB_JSON_PROVIDER=True,
        MDB_ERROR_HANDLERS=True,
        MDB_HEALTH_URL="/health",
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        RAG_QUEUE_SIZE=QUEUE_SIZE,
    )
    app.config.update(config or {})
    mdb.init_app(app)
    app.extensions[EXTENSION] = Ingestor(app, app.config["RAG_QUEUE_SIZE"])
    app.add_url_rule("/", "index", index)
    app.add_url_rule("/api/sources", "sources", list_sources)
    app.add_url_rule("/api/sources/<path:source>", "forget", forget, methods=["DELETE"])
    app.add_url_rule("/api/documents", "upload", upload, methods=["POST"])
    app.add_url_rule("/api/ask", "ask", ask, methods=["POST"])
    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    app.register_error_handler(HTTPException, json_error)
    return app


def shutdown(app: Flask) -> None:
    """Let the ingestion queue finish (10 s at most), then stop the engine."""
    app.extensions[EXTENSION].stop(timeout=10)
    mdb.shutdown(app)


# --- ingestion in the background ----------------------------------------------------------------


@dataclass
class Job:
    id: str
    source: str
    text: str


class Ingestor:
    """A bounded queue of documents and one thread per process ingesting them in order.

    The thread starts with the first document (never at import: a server that forks its
    workers after loading the app gives each its own), and announces every stage to every
    open page of the app, in any process, through the realtime bus.
    """

    def __init__(self, app: Flask, size: int = QUEUE_SIZE) -> None:
        self.app = app
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def room(self) -> int:
        return self.jobs.maxsize - self.jobs.qsize()

    def submit(self, job: Job) -> None:
        """Queue a document (``queue.Full`` when the queue is full)."""
        self.jobs.put_nowait(job)
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rag-ingest", daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def stop(self, timeout: float) -> None:
        with self._lock:
            thread = self._thread if self._pid == os.getpid() else None
        if thread is None or not thread.is_alive():
            return
        try:
            self.jobs.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                self._ingest(job)
            except Exception:  # keep the worker alive for the next document
                log.exception("ingesting %r failed", job.source)

    def _ingest(self, job: Job) -> None:
        announce(self.app, job, "embedding")
        engine = mdb.get_engine(self.app)
        try:
            result = rag.ingest(engine, job.source, job.text)
        except (MongoDBEngineError, ValueError) as exc:
            announce(self.app, job, "failed", error=str(exc))
            return
        except Exception:
            announce(self.app, job, "failed", error="ingestion failed (see the server's log)")
            raise
        announce(self.app, job, "stored", chunks=result["chunks"], replaced=result["replaced"])
        broadcast_to_app(SLUG, {"type": "sources", "sources": rag.sources(engine)}, app=self.app)


def announce(app: Flask | None, job: Job, stage: str, **details: Any) -> None:
    """Tell every open page how ``job`` is doing: queued, embedding, stored or failed
    (``app``: the Flask app, outside a request)."""
    message = {"type": "ingest", "job": job.id, "source": job.source, "stage": stage, **details}
    broadcast_to_app(SLUG, message, app=app)


# --- pages and JSON API ---------------------------------------------------------------------------


def json_error(error: HTTPException) -> Any:
    """The API's errors as JSON, like the library's: ``{"error": {"status", "type",
    "message"}}``."""
    if request.path.startswith("/api/"):
        body = {"status": error.code, "type": error.name, "message": error.description}
        return {"error": body}, error.code
    return error


def index() -> str:
    manifest = mdb.engine.get_app(SLUG) or {}
    live = (manifest.get("websockets") or {}).get("realtime", {}).get("path", "")
    return render_template(
        "index.html",
        sources=rag.sources(mdb.engine),
        live=live,
        limits={"documents": MAX_DOCUMENTS, "text": MAX_TEXT, "source": MAX_SOURCE},
    )


def list_sources() -> Any:
    return {"sources": rag.sources(mdb.engine)}


def _json() -> dict[str, Any]:
    if not request.is_json:
        abort(415, description="send JSON (Content-Type: application/json)")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        abort(400, description="the body must be a JSON object")
    return payload


def clean_source(value: Any, where: str) -> str:
    """A source name: 1-200 printable characters (it is the document's id and its label)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: a non-empty name is required")
    value = value.strip()
    if len(value) > MAX_SOURCE:
        raise ValueError(f"{where}: at most {MAX_SOURCE} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in value):
        raise ValueError(f"{where}: control characters are not allowed")
    return value


def clean_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: a non-empty text is required")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{where}: at most {MAX_TEXT:,} characters")
    return value


def upload() -> Any:
    """Queue documents for ingestion: ``{"documents": [{"name", "text"}, ...]}`` -> 202 with
    a job per document; their progress arrives over the websocket."""
    documents = _json().get("documents")
    if not isinstance(documents, list) or not documents:
        abort(400, description="documents: a non-empty list of {name, text} is required")
    if len(documents) > MAX_DOCUMENTS:
        abort(400, description=f"documents: at most {MAX_DOCUMENTS} per upload")
    checked = []
    try:
        for i, document in enumerate(documents):
            if not isinstance(document, dict):
                raise ValueError(f"documents[{i}]: an object with name and text is required")
            checked.append(
                (
                    clean_source(document.get("name"), f"documents[{i}].name"),
                    clean_text(document.get("text"), f"documents[{i}].text"),
                )
            )
    except ValueError as exc:
        abort(400, description=str(exc))
    ingestor: Ingestor = current_app.extensions[EXTENSION]
    full = f"the ingestion queue is full ({ingestor.jobs.maxsize}): try again shortly"
    if ingestor.room() < len(checked):
        abort(503, description=full)
    jobs = []
    for source, text in checked:
        job = Job(uuid.uuid4().hex, source, text)
        announce(None, job, "queued")  # before the worker can announce the next stage
        try:
            ingestor.submit(job)
        except queue.Full:  # another upload took the room meanwhile
            announce(None, job, "failed", error=full)
            abort(503, description=full)
        jobs.append({"job": job.id, "source": source})
    return {"jobs": jobs}, 202


def forget(source: str) -> Any:
    deleted = rag.forget(mdb.engine, source)
    if not deleted:
        abort(404, description=f"no source named {source!r}")
    sources = rag.sources(mdb.engine)
    broadcast_to_app(SLUG, {"type": "sources", "sources": sources})
    return {"deleted": deleted, "sources": sources}


def ask() -> Any:
    """``{"question"}`` -> the answer and its numbered passages (see ``rag.answer``)."""
    question = _json().get("question")
    if not isinstance(question, str) or not question.strip():
        abort(400, description="question: a non-empty string is required")
    if len(question) > MAX_QUESTION:
        abort(400, description=f"question: at most {MAX_QUESTION} characters")
    return rag.answer(mdb.engine, question.strip())


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5002"))
    application = create_app()
    print(f"interactive RAG on http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        application.run(host="127.0.0.1", port=port, threaded=True)
    finally:
        shutdown(application)
