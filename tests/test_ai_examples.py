"""The interactive RAG example runs end to end on a fresh setup: local model, no key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "interactive_rag" / "main.py"
pytest_plugins = ("openai_server",)


def run(args, env, cwd):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def example_env(mongo_uri, db_name, **extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "MDB_LLM_BASE_URL", "AZURE_OPENAI_API_KEY")
    }
    env.update(MDB_MONGO_URI=mongo_uri, MDB_DB_NAME=db_name, **extra)
    return env


def test_ingest_and_ask_with_sources(mongo_uri, db_name, tmp_path):
    env = example_env(mongo_uri, db_name)
    out = run(["ingest"], env, tmp_path)
    assert "Ingested docs/green_tea.md: 1 chunk(s)" in out
    answer = run(["ask", "How hot should the water be for green tea?"], env, tmp_path)
    assert "70 to 80 degrees Celsius" in answer
    assert "[1] docs/green_tea.md" in answer
    assert "sourdough" not in answer.split("Sources:")[1], "unrelated passages are dropped"
    chain = run(["ask", "When do I replace a worn chain?"], env, tmp_path)
    assert "[1] docs/bicycle_chain.md" in chain
    again = run(["ingest"], env, tmp_path)
    assert "replaced" in again, "re-ingesting replaces a source's chunks"
    assert run(["sources"], env, tmp_path).count("docs/") == 3


def test_answers_come_from_a_chat_model_when_one_is_configured(
    mongo_uri, db_name, tmp_path, llm_server
):
    llm_server.script_chat("Use water at 70 to 80 degrees [1].")
    env = example_env(
        mongo_uri, db_name, MDB_LLM_BASE_URL=llm_server.base_url, OPENAI_API_KEY="test-key"
    )
    run(["ingest"], env, tmp_path)
    out = run(["ask", "How hot should the water be for green tea?"], env, tmp_path)
    assert "Use water at 70 to 80 degrees [1]." in out
    [request] = llm_server.recorded("chat/completions")
    prompt = request.body["messages"][-1]["content"]
    assert "[1] # Brewing green tea" in prompt and prompt.endswith("for green tea?")
    assert request.body["model"] == "llama3"
