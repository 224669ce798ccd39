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

import rag

from mdb_sync import MongoDBEngine
from mdb_sync.exceptions import MongoDBEngineError

HERE = Path(__file__).resolve().parent
TEXT_SUFFIXES = {".md", ".txt", ".rst"}


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
    for source, file in documents(paths):
        result = rag.ingest(engine, source, file.read_text(encoding="utf-8"))
        replaced = f", replaced {result['replaced']}" if result["replaced"] else ""
        print(f"✅ Ingested {source}: {result['chunks']} chunk(s){replaced}")


def sources(engine: MongoDBEngine) -> list[str]:
    return [f"{s['source_id']} — {s['title']}" for s in rag.sources(engine)]


def ask(engine: MongoDBEngine, question: str, limit: int = 3) -> None:
    result = rag.answer(engine, question, limit)
    passages = result["passages"]
    if not passages:
        print("The knowledge base is empty: run `ingest` first.")
        return
    if result["answer"] is not None:
        print(f"\n{result['answer']}\n")
    else:
        if result["error"] and result["error"].startswith("the chat model failed"):
            print(f"({result['error']})")
        print("\nMost relevant passages:\n")
        for passage in passages:
            text = " ".join(passage["text"].split())
            print(f"[{passage['n']}] {text[:300]}{'…' if len(text) > 300 else ''}\n")
    print("Sources:")
    for passage in passages:
        where = f"chunk {passage['chunk_index']}, score {passage['score']:.3f}"
        print(f"  [{passage['n']}] {passage['source_id']} ({where})")


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
        with MongoDBEngine(db_name=os.environ.get("MDB_DB_NAME") or rag.SLUG) as engine:
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
