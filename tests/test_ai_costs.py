"""Cost per app and per model (price table, overrides, metrics, Prometheus) and the monthly
budget: refused past it with a clear error, held across threads and across processes by the
reserve-then-settle ledger in MongoDB, and a process killed mid-call costs at most its
reservation."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mdb_sync.ai import LLMConfig, LLMService
from mdb_sync.ai.prices import LIST_PRICES_DATE, Price, PriceTable
from mdb_sync.ai.spend import NANO, SPEND_COLLECTION, SpendLedger
from mdb_sync.exceptions import AIBudgetExceededError, ConfigurationError

pytest_plugins = ("openai_server",)

WORKER = Path(__file__).parent / "ai_budget_worker.py"
#: The lab provider's price in these tests: $0.001 a token either way.
LAB_PRICE = {"lab/llama3": {"input": 1000, "output": 1000}}
#: "go" is reserved as 11 prompt tokens (1 counted + 7 of chat format, x1.25, +1) and
#: max_tokens 2 (13 tokens: $0.013); the server charges 1 + 2 ("echo: go") = $0.003.
RESERVED, CHARGED = 0.013, 0.003


@pytest.fixture
def lab(monkeypatch, llm_server):
    """A declared OpenAI-compatible provider ``lab`` on the test server, key from LAB_API_KEY."""
    for key in ("MDB_LLM_PRICES", "MDB_LLM_BASE_URL", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LAB_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    return llm_server


def lab_manifest(slug, server, **llm):
    config = {
        "enabled": True,
        "provider": "openai_compatible",
        "base_url": server.base_url,
        "providers": {"lab": {"base_url": server.base_url}},
        "default_chat_model": "lab/llama3",
        "max_tokens": 2,
        "max_retries": 0,
        "prices": dict(LAB_PRICE),
    }
    config.update(llm)
    return {"slug": slug, "llm_config": config}


def ledger_doc(raw_db, slug):
    docs = list(raw_db[SPEND_COLLECTION].find({"app_id": slug}))
    assert len(docs) <= 1
    return docs[0] if docs else {}


# --- prices -----------------------------------------------------------------------------------


def test_the_price_table_and_its_overrides(tmp_path):
    table = PriceTable(environ={})
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60)
    assert table.lookup("azure", "gpt-4o-2024-08-06") == Price(2.50, 10.00), "a snapshot"
    assert table.lookup("openai", "gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)
    assert table.lookup("anthropic", "claude-3-5-haiku-latest") == Price(0.80, 4.00)
    assert table.lookup("voyage", "voyage-2") == Price(0.10)
    assert table.lookup("openai", "gpt-4o-audio-preview") is None, "not a snapshot of gpt-4o"
    assert table.lookup("lab", "gpt-4o") is None, "a third party's gpt-4o has no list price"
    assert table.lookup("ollama", "llama3", free=True) == Price(0.0, 0.0)
    assert LIST_PRICES_DATE == "2026-12-05"

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai/gpt-4o": {"input": 1, "output": 2}, "lab/*": 0.5}))
    overrides = {"gpt-4o": {"input": 9.0, "output": 9.0}}
    table = PriceTable(overrides, environ={"MDB_LLM_PRICES": str(prices)})
    assert table.lookup("openai", "gpt-4o") == Price(9, 9), "the manifest wins"
    assert table.lookup("lab", "anything") == Price(0.5, 0.5), "then the deployment's file"
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60), "then the list"
    assert table.lookup("ollama", "llama3", free=True) == Price(0, 0)
    prices.write_text(json.dumps({"lab/*": {"input": 2}}))
    os.utime(prices, (time.time() + 5, time.time() + 5))
    assert table.lookup("lab", "x") == Price(2, 0), "the file is re-read when it changes"
    prices.write_text("{not json")
    os.utime(prices, (time.time() + 10, time.time() + 10))
    with pytest.raises(ConfigurationError, match="MDB_LLM_PRICES"):
        table.lookup("lab", "x")
    with pytest.raises(ConfigurationError, match=r"MDB_LLM_PRICES.*cannot read"):
        PriceTable(environ={"MDB_LLM_PRICES": str(tmp_path / "missing.json")})


def test_cost_per_app_and_model_in_metrics_and_prometheus(
    engine, raw_db, monkeypatch, llm_server, second_llm_server
):
    """List prices: azure/gpt-4o at $2.50/$10 and voyage/voyage-2 at $0.10 per million."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", llm_server.azure_endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("VOYAGE_API_KEY", "second-key")
    monkeypatch.delenv("MDB_LLM_PRICES", raising=False)
    llm_config = {
        "enabled": True,
        "default_chat_model": "azure/gpt-4o",
        "default_embedding_model": "voyage/voyage-2",
        "providers": {"voyage": {"base_url": second_llm_server.base_url}},
    }
    engine.register_app({"slug": "costly", "llm_config": llm_config})
    engine.register_app({"slug": "idle", "llm_config": llm_config})
    llm = engine.get_llm_service("costly")
    llm.chat("hello there")  # 2 prompt words, "echo: hello there" 3 completion words
    llm.embed(["red apples", "green pears"])  # 4 words
    chat_cost = (2 * 2.50 + 3 * 10.00) / 1e6
    embed_cost = 4 * 0.10 / 1e6

    app = engine.get_metrics()["apps"]["costly"]
    assert app["counters"]["llm.cost.usd"] == pytest.approx(chat_cost + embed_cost, rel=1e-9)
    by_model = {e["labels"]["model"]: e["value"] for e in app["labelled"]["llm.cost.usd"]}
    assert by_model == pytest.approx({"azure/gpt-4o": chat_cost, "voyage/voyage-2": embed_cost})
    assert "llm.cost.usd" not in engine.get_metrics()["apps"].get("idle", {}).get("counters", {})
    text = engine.metrics_text()
    assert "# TYPE mdb_llm_cost_usd_total counter" in text
    assert f'mdb_llm_cost_usd_total{{app="costly",model="azure/gpt-4o"}} {chat_cost!r}' in text
    assert f'mdb_llm_cost_usd_total{{app="costly",model="voyage/voyage-2"}} {embed_cost!r}' in (
        text
    )

    spending = llm.spending()
    assert spending["spent_usd"] == pytest.approx(chat_cost + embed_cost, abs=2e-9)
    assert spending["calls"] == 2 and spending["budget_usd"] is None
    assert ledger_doc(raw_db, "costly")["_id"].startswith("costly:")


def test_unpriced_models_cost_nothing_with_one_warning(engine, lab, caplog):
    engine.register_app(lab_manifest("unpriced", lab, prices={}))
    llm = engine.get_llm_service("unpriced")
    with caplog.at_level(logging.WARNING, logger="mdb_sync.ai.costs"):
        llm.chat("go")
        llm.chat("go")
    warnings = [r for r in caplog.records if "no price for model 'lab/llama3'" in r.message]
    assert len(warnings) == 1, "warned once per app and model"
    app = engine.get_metrics()["apps"]["unpriced"]
    assert "llm.cost.usd" not in app["counters"]
    assert app["counters"]["llm.cost.unpriced"] == 2

    engine.register_app(lab_manifest("strict", lab, prices={}, monthly_budget_usd=1))
    with pytest.raises(ConfigurationError, match=r"has no price.*lab/llama3"):
        engine.get_llm_service("strict").chat("go")
    assert len(lab.recorded("chat/completions")) == 2, "a budgeted app never calls it"


# --- the budget -------------------------------------------------------------------------------


def test_the_budget_refuses_calls_past_it_with_a_clear_error(engine, lab, raw_db):
    engine.register_app(lab_manifest("capped", lab, monthly_budget_usd=0.05))
    llm = engine.get_llm_service("capped")
    ok = 0
    with pytest.raises(AIBudgetExceededError) as info:
        while True:
            llm.chat("go")
            ok += 1
    # Allowed while spent + 0.013 <= 0.05: after 0, 1, ... 12 calls of $0.003.
    assert ok == 13
    error = info.value
    assert error.spent_usd == pytest.approx(13 * CHARGED)
    assert error.reserved_usd == 0 and error.needed_usd == pytest.approx(RESERVED)
    assert error.budget_usd == 0.05 and error.month == dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m"
    )
    message = str(error)
    assert "app 'capped' has used its monthly LLM budget" in message
    assert "$0.039000 spent" in message and "of $0.05" in message
    assert "raise llm_config.monthly_budget_usd" in message
    assert len(lab.recorded("chat/completions")) == 13, "the refused call was never sent"
    assert engine.get_metrics()["apps"]["capped"]["counters"]["llm.budget.refused"] == 1
    doc = ledger_doc(raw_db, "capped")
    assert (doc["spent"], doc["reserved"], doc["reservations"]) == (13 * 3_000_000, 0, [])
    assert llm.spending()["budget_usd"] == 0.05

    with pytest.raises(AIBudgetExceededError, match=r"more than app 'capped'.s whole monthly"):
        llm.chat("go", max_tokens=100)
    tiny = lab_manifest("tiny", lab, monthly_budget_usd=0.001)
    engine.register_app(tiny)
    with pytest.raises(AIBudgetExceededError, match="whole monthly budget"):
        engine.get_llm_service("tiny").chat("go")


def test_a_budget_caps_completions_it_cannot_otherwise_bound(engine, lab):
    manifest = lab_manifest("bounded", lab, monthly_budget_usd=100)
    del manifest["llm_config"]["max_tokens"]
    engine.register_app(manifest)
    engine.get_llm_service("bounded").chat("go")
    assert lab.recorded("chat/completions")[-1].body["max_tokens"] == 4096


def test_the_budget_holds_across_threads(engine, lab, raw_db):
    engine.register_app(lab_manifest("threads", lab, monthly_budget_usd=0.05))
    llm = engine.get_llm_service("threads")
    counts = {"ok": 0, "refused": 0}
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def spend():
        barrier.wait()
        while True:
            try:
                llm.chat("go")
            except AIBudgetExceededError:
                with lock:
                    counts["refused"] += 1
                return
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                counts["ok"] += 1

    threads = [threading.Thread(target=spend) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and counts["refused"] == 12
    doc = ledger_doc(raw_db, "threads")
    assert doc["spent"] == counts["ok"] * 3_000_000, "every call settled, none lost"
    assert doc["reserved"] == 0 and doc["reservations"] == []
    assert doc["spent"] <= 0.05 * NANO, "never past the budget"
    assert counts["ok"] >= 10, "calls in flight only delay the end: the budget gets used"
    assert len(lab.recorded("chat/completions")) == counts["ok"]


def test_the_budget_holds_across_processes(engine, lab, raw_db, mongo_uri, db_name):
    """Two worker processes of four threads each spend one app's budget at once: the
    conditional reservation in MongoDB lets them commit no more than the budget together."""
    budget = 0.2
    engine.register_app(lab_manifest("shared", lab, monthly_budget_usd=budget))
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mongo_uri, db_name, "shared", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["errors"] for r in results] == [[], []]
    assert [r["refused"] for r in results] == [4, 4]
    ok = sum(r["ok"] for r in results)
    assert all(r["ok"] > 0 for r in results), "both processes spent"
    doc = ledger_doc(raw_db, "shared")
    assert doc["spent"] == ok * 3_000_000, "every call of both processes counted once"
    assert doc["reserved"] == 0 and doc["reservations"] == []
    assert doc["spent"] <= budget * NANO, "not a cent past the budget between them"
    assert doc["spent"] >= (budget - 8 * RESERVED) * NANO, "and the budget was used"
    assert len(lab.recorded("chat/completions")) == ok


def test_a_process_killed_mid_call_costs_its_reservation_and_nothing_more(
    engine, lab, raw_db, mongo_uri, db_name
):
    """A worker reserves, sends its call to a server that stalls, and is SIGKILLed before it
    settles: its reservation keeps holding the budget until its lease ends, then the next
    reservation reclaims it and charges it in full; the survivors' calls are all counted and
    spent + reserved never passes the budget. (Clocks are fixed mid-month so the lease can
    be passed without waiting.)"""
    engine.register_app(lab_manifest("crash", lab, monthly_budget_usd=0.03))
    noon = dt.datetime(2030, 1, 15, 12, 0, tzinfo=dt.timezone.utc)
    lab.delay_next(60, path="chat/completions")
    worker = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            mongo_uri,
            db_name,
            "crash",
            "1",
            "--lease",
            "60",
            "--now",
            noon.isoformat(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ledger_doc(raw_db, "crash").get("reservations"):
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker never reserved"
            time.sleep(0.05)
        while not lab.recorded("chat/completions"):
            assert time.monotonic() < deadline, "the worker's call never reached the server"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    doc = ledger_doc(raw_db, "crash")
    assert (doc["reserved"], doc["spent"], len(doc["reservations"])) == (13_000_000, 0, 1)

    config = LLMConfig.from_section(engine.get_app("crash")["llm_config"], slug="crash")

    def service_at(when):
        ledger = SpendLedger(engine, "crash", clock=lambda: when)
        return LLMService(config, metrics=engine.metrics, app="crash", ledger=ledger)

    during = service_at(noon + dt.timedelta(seconds=30))
    during.chat("go")  # 0.013 held + 0.013 <= 0.03
    during.chat("go")  # 0.003 + 0.013 + 0.013 <= 0.03
    with pytest.raises(AIBudgetExceededError) as info:
        during.chat("go")  # the dead call still holds its share within its lease
    assert info.value.reserved_usd == pytest.approx(RESERVED)
    doc = ledger_doc(raw_db, "crash")
    assert doc["spent"] + doc["reserved"] <= 0.03 * NANO

    after = service_at(noon + dt.timedelta(seconds=61))
    with pytest.raises(AIBudgetExceededError) as info:
        after.chat("go")  # reclaimed and charged in full: 0.006 + 0.013 + 0.013 > 0.03
    assert info.value.reserved_usd == 0 and info.value.spent_usd == pytest.approx(0.019)
    doc = ledger_doc(raw_db, "crash")
    assert doc["reservations"] == [] and doc["reserved"] == 0
    assert doc["spent"] == 2 * 3_000_000 + 13_000_000 and doc["reclaimed"] == 13_000_000
    assert doc["spent"] <= 0.03 * NANO


def test_a_late_settle_of_a_reclaimed_reservation_changes_nothing(engine, raw_db):
    noon = dt.datetime(2030, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
    slow = SpendLedger(engine, "late", lease_seconds=10, clock=lambda: noon)
    later = SpendLedger(
        engine, "late", lease_seconds=10, clock=lambda: noon + dt.timedelta(seconds=60)
    )
    held = slow.reserve(0.5, budget_usd=1.0)
    later.settle(later.reserve(0.1, budget_usd=1.0), 0.1)  # reclaims the expired one
    doc = raw_db[SPEND_COLLECTION].find_one({"_id": "late:2030-03"})
    assert (doc["spent"], doc["reserved"], doc["reclaimed"]) == (0.6 * NANO, 0, 0.5 * NANO)
    slow.settle(held, 0.2)  # the slow call finally returns: already charged in full
    assert raw_db[SPEND_COLLECTION].find_one({"_id": "late:2030-03"})["spent"] == 0.6 * NANO


def test_each_month_has_its_own_budget(engine, raw_db):
    end = dt.datetime(2030, 1, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
    january = SpendLedger(engine, "months", clock=lambda: end)
    february = SpendLedger(engine, "months", clock=lambda: end + dt.timedelta(seconds=2))
    january.settle(january.reserve(0.9, budget_usd=1.0), 0.9)
    with pytest.raises(AIBudgetExceededError) as info:
        january.reserve(0.2, budget_usd=1.0)
    assert info.value.resets_at == dt.datetime(2030, 2, 1, tzinfo=dt.timezone.utc)
    assert "resets on 2030-02-01" in str(info.value)
    february.settle(february.reserve(0.2, budget_usd=1.0), 0.2)
    assert january.month()["spent_usd"] == pytest.approx(0.9)
    assert february.month()["spent_usd"] == pytest.approx(0.2)
    expires = raw_db[SPEND_COLLECTION].find_one({"_id": "months:2030-02"})["expires_at"]
    assert expires.replace(tzinfo=dt.timezone.utc) > end + dt.timedelta(days=365), "kept a year"


def test_streams_are_charged_what_they_cost_or_their_reservation(engine, lab, raw_db):
    engine.register_app(lab_manifest("streams", lab, monthly_budget_usd=1))
    llm = engine.get_llm_service("streams")
    assert "".join(llm.chat("go", stream=True)) == "echo: go"
    assert ledger_doc(raw_db, "streams")["spent"] == 3_000_000, "the usage the stream reported"
    lab.script_chat("one two")
    pieces = llm.chat("go", stream=True)
    next(pieces)
    pieces.close()  # abandoned before the totals arrive
    doc = ledger_doc(raw_db, "streams")
    assert doc["spent"] == 3_000_000 + 13_000_000, "unknown usage: its reservation in full"
    assert doc["reserved"] == 0 and doc["reservations"] == []
    never_read = llm.chat("go", stream=True)
    del never_read
    assert ledger_doc(raw_db, "streams")["reservations"] == [], "a stream never read holds nothing"


def test_a_budget_needs_the_engines_ledger(lab):
    with pytest.raises(ConfigurationError, match=r"engine\.get_llm_service"):
        LLMService({"provider": "openai_compatible", "base_url": lab.base_url,
                    "monthly_budget_usd": 5})  # fmt: skip
