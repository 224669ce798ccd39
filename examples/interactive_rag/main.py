"""Interactive RAG: ingest documents, ask questions, get answers with their sources.

Runs on a fresh machine with no API key and no network: the embedded database stores the
chunks and the local all-MiniLM-L6-v2 model embeds them (see the README's "AI services").
With a chat model available — ``MDB_LLM_BASE_URL`` pointing at an OpenAI-compatible server
such as Ollama (``http://localhost:11434/v1``), or ``"provider": "openai"`` in the manifest
and ``OPENAI_API_KEY`` — the answer is written by the model from the retrieved passages,
citing them; without one, the passages themselves are the answer.

    python examples/interactive_rag/main.py ingest [FILE_OR_DIR ...]   # default: ./docs
    python examples/interactive_rag/main.py ask "How hot should the water be for green tea?"
    python examples/interactive_rag/main.py sources
    python examples/interactive_rag/main.py                            # ask in a loop
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mdb_sync import MongoDBEngine
from mdb_sync.exceptions import AIProviderError, AIServiceError, MongoDBEngineError

HERE = Path(__file__).resolve().parent
SLUG = "interactive_rag"
TEXT_SUFFIXES = {".md", ".txt", ".rst"}
RELEVANCE_MARGIN = 0.15
SYSTEM_PROMPT = (
    "Answer the question using only the numbered passages. Cite the passages you use as "
    "[1], [2]... If the passages do not contain the answer, say so."
)


def documents(paths: list[str]) -> list[tuple[str, Path]]:
    """(source id, file) for every text file named or found under a named directory."""
    found = []
    for raw in paths or [str(HERE / "docs")]:
        path = Path(raw)
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES)
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                source = file.resolve().relative_to(HERE).as_posix()
            except ValueError:
                source = file.as_posix()
            found.append((source, file))
    return found


def ingest(engine: MongoDBEngine, paths: list[str]) -> None:
    service = engine.get_embedding_service(SLUG)
    kb = engine.get_scoped_db(SLUG).knowledge_base
    for source, file in documents(paths):
        text = file.read_text(encoding="utf-8")
        title = text.strip().splitlines()[0].lstrip("# ").strip() if text.strip() else source
        result = service.process_and_store(text, source, kb, metadata={"title": title})
        replaced = f", replaced {result['replaced']}" if result["replaced"] else ""
        print(f"✅ Ingested {source}: {result['chunks']} chunk(s){replaced}")


def sources(engine: MongoDBEngine) -> list[str]:
    kb = engine.get_scoped_db(SLUG).knowledge_base
    seen: dict[str, str] = {}
    for doc in kb.find({}, {"source_id": 1, "metadata.title": 1}).sort("source_id", 1):
        seen.setdefault(doc["source_id"], doc.get("metadata", {}).get("title", ""))
    return [f"{source} — {title}" for source, title in seen.items()]


def ask(engine: MongoDBEngine, question: str, limit: int = 3) -> None:
    kb = engine.get_scoped_db(SLUG).knowledge_base
    passages = kb.vector_search(query_text=question, limit=limit)
    if not passages:
        print("The knowledge base is empty: run `ingest` first.")
        return
    # Keep the passages about as relevant as the best one, not the merely least unrelated.
    passages = [p for p in passages if p["score"] >= passages[0]["score"] - RELEVANCE_MARGIN]
    context = "\n\n".join(f"[{i}] {p['text']}" for i, p in enumerate(passages, 1))
    try:
        answer = engine.get_llm_service(SLUG).chat(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"{context}\n\nQuestion: {question}"},
            ]
        )
        print(f"\n{answer.strip()}\n")
    except AIServiceError as exc:
        # No chat model (the local provider embeds only), or it failed: the passages are
        # the answer.
        if isinstance(exc, AIProviderError):
            print(f"(the chat model failed: {exc})")
        print("\nMost relevant passages:\n")
        for i, passage in enumerate(passages, 1):
            text = " ".join(passage["text"].split())
            print(f"[{i}] {text[:300]}{'…' if len(text) > 300 else ''}\n")
    print("Sources:")
    for i, passage in enumerate(passages, 1):
        where = f"chunk {passage['chunk_index']}, score {passage['score']:.3f}"
        print(f"  [{i}] {passage['source_id']} ({where})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    ingest_cmd = sub.add_parser("ingest", help="ingest files or directories (default: ./docs)")
    ingest_cmd.add_argument("paths", nargs="*")
    ask_cmd = sub.add_parser("ask", help="ask one question")
    ask_cmd.add_argument("question")
    ask_cmd.add_argument("--limit", type=int, default=3)
    sub.add_parser("sources", help="list the ingested sources")
    args = parser.parse_args(argv)

    try:
        with MongoDBEngine(db_name=os.environ.get("MDB_DB_NAME") or SLUG) as engine:
            manifest = engine.load_manifest(HERE / "manifest.json")
            # The declared vector index is an Atlas Search index; where it does not exist
            # (the embedded server, a plain mongod) vector_search runs an exact search, so
            # the example needs no index to work.
            engine.register_app(manifest, create_indexes=False)
            if args.command == "ingest":
                ingest(engine, args.paths)
            elif args.command == "ask":
                ask(engine, args.question, args.limit)
            elif args.command == "sources":
                print("\n".join(sources(engine)) or "No sources yet: run `ingest`.")
            else:
                if not sources(engine):
                    ingest(engine, [])
                print("Ask a question (an empty line quits).")
                while True:
                    try:
                        question = input("\nAsk> ").strip()
                    except EOFError:
                        break
                    if not question:
                        break
                    ask(engine, question)
    except MongoDBEngineError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
