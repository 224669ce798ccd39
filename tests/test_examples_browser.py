"""The seeds' example apps in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright, against each example served by a real WSGI server on 127.0.0.1, with
the tests' OpenAI-compatible server as the chat model and the local all-MiniLM-L6-v2 model
for embeddings."""

from __future__ import annotations

import json
import re
import threading

import pytest
from example_apps import EXAMPLES, chromium, load_example
from flask_apps import serve
from playwright.sync_api import Page, expect

pytest_plugins = ("openai_server",)
DOCS = EXAMPLES / "interactive_rag" / "docs"
ESPRESSO = (
    "# Pulling an espresso\n\nGrind 18 grams of coffee fine, tamp it level and pull the shot "
    "for 25 to 30 seconds: about 36 grams of espresso should run into the cup."
)


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def _page(browser) -> tuple[object, Page]:
    context = browser.new_context()  # a fresh profile: no cookies, no cache
    context.set_default_timeout(20_000)
    return context, context.new_page()


def _open(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def _last_user_message(body) -> str:
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1]


# --- interactive_rag ------------------------------------------------------------------------------


@pytest.fixture
def rag_app(mongo_uri, db_name, llm_server, monkeypatch):
    monkeypatch.setenv("MDB_LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    module = load_example("interactive_rag", monkeypatch)
    app = module.create_app({"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name})
    try:
        with serve(app) as base:
            yield base
    finally:
        module.shutdown(app)


def test_interactive_rag_ingests_with_live_progress_and_answers_with_sources(
    browser, rag_app, llm_server, raw_db
):
    """Ada uploads three files and pastes a fourth text; her page and Bob's (another
    browser) follow the ingestion over the websocket. Bob asks; the answer cites its
    sources. A source is removed on one page and disappears from both."""

    def brain(body):
        question = _last_user_message(body)
        if "green tea" in question:
            return "Use water at 70 to 80 degrees [1]."
        return "Pull it for 25 to 30 seconds [1]."

    llm_server.script_chat(*[brain] * 10)
    contexts = []
    try:
        (ctx_a, ada), (ctx_b, bob) = _page(browser), _page(browser)
        contexts += [ctx_a, ctx_b]
        for page in (ada, bob):
            _open(page, f"{rag_app}/")
            expect(page.locator("#live")).to_have_attribute("data-state", "on")
            expect(page.locator("#no-sources")).to_be_visible()

        ada.set_input_files("#files", sorted(DOCS.glob("*.md")))
        ada.click("#upload")
        names = ["bicycle_chain.md", "green_tea.md", "sourdough.md"]
        for page in (ada, bob):  # both pages follow the progress, pushed over the websocket
            expect(page.locator('#progress li[data-stage="stored"]')).to_have_count(3)
            expect(page.locator("#sources li .source")).to_have_text(names)
        stored = re.compile(r"^stored: [12] chunk\(s\)$")
        expect(bob.locator("#progress li .stage")).to_have_text([stored] * 3)
        expect(ada.locator("#files")).to_have_value("")

        ada.fill("#paste-name", "notes/<b>espresso</b>.md")
        ada.fill("#paste-text", ESPRESSO)
        ada.click("#upload")
        expect(bob.locator("#sources li .source")).to_have_text(
            ["bicycle_chain.md", "green_tea.md", "notes/<b>espresso</b>.md", "sourdough.md"]
        )  # the name is text, never markup
        expect(bob.locator("#sources li .title").nth(2)).to_have_text("Pulling an espresso")

        bob.fill("#question", "How hot should the water be for green tea?")
        bob.click("#ask")
        expect(bob.locator("#answer-text")).to_have_text("Use water at 70 to 80 degrees [1].")
        expect(bob.locator("#passages li .where").first).to_contain_text("green_tea.md (chunk 0")
        expect(bob.locator("#answer-note")).to_be_hidden()
        [request] = llm_server.recorded("chat/completions")
        prompt = _last_user_message(request.body)
        assert prompt.startswith("[1] # Brewing green tea") and prompt.endswith("green tea?")

        ada.fill("#question", "How long do I pull an espresso shot?")
        ada.press("#question", "Enter")
        expect(ada.locator("#answer-text")).to_have_text("Pull it for 25 to 30 seconds [1].")
        expect(ada.locator("#passages li .where").first).to_contain_text(
            "notes/<b>espresso</b>.md (chunk 0"
        )

        ada.locator('#sources li[data-source="sourdough.md"] .forget').click()
        for page in (ada, bob):
            expect(page.locator("#sources li")).to_have_count(3)
            expect(page.locator("#source-count")).to_have_text("3")
    finally:
        for context in contexts:
            context.close()
    stored = list(raw_db["interactive_rag_knowledge_base"].find({}, {"embedding": 0}))
    assert {d["app_id"] for d in stored} == {"interactive_rag"}
    assert sorted({d["source_id"] for d in stored}) == [
        "bicycle_chain.md", "green_tea.md", "notes/<b>espresso</b>.md",
    ]  # fmt: skip


# --- vector_hacking -------------------------------------------------------------------------------

TARGET = "Be mindful of your thoughts"
GUESSES = ["Be kind", "Be mindful", "Be mindful of your words", TARGET]


@pytest.fixture
def hacking(mongo_uri, db_name, llm_server, monkeypatch):
    monkeypatch.setenv("MDB_LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    module = load_example("vector_hacking", monkeypatch)
    app = module.create_app({"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name})
    try:
        with serve(app) as base:
            yield base
    finally:
        module.shutdown(app)


def test_vector_hacking_streams_each_guess_and_its_similarity(browser, hacking, llm_server, raw_db):
    """The model proposes the target; its guesses, which only ever see similarities, reach
    it in four steps. A second run, on a target typed in the page, is stopped midway."""
    llm_server.script_chat(TARGET, *GUESSES)
    release = threading.Event()
    context, page = _page(browser)
    try:
        _open(page, f"{hacking}/")
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        page.click("#start")
        expect(page.locator("#run-target")).to_have_text(TARGET)
        expect(page.locator("#target-source")).to_have_text("proposed by the model")
        expect(page.locator("#status")).to_have_text("matched")
        expect(page.locator("#guesses tbody td.guess")).to_have_text(GUESSES)
        similarities = page.locator("#guesses tbody td.similarity").all_inner_texts()
        values = [float(s) for s in similarities]
        assert values[-1] == 1.0 and values[1] > 0.85 > values[0]  # the local model's cosines
        expect(page.locator("#best-similarity")).to_have_text("1.000")
        expect(page.locator("#runs li")).to_have_text(
            [re.compile(rf"^{TARGET} — matched after 4 step\(s\), best 1\.000")]
        )
        requests = llm_server.recorded("chat/completions")
        assert len(requests) == 5
        prompts = [_last_user_message(r.body) for r in requests[1:]]
        assert all(TARGET not in p for p in prompts), "the guesser never sees the target"
        assert prompts[0] == "No guesses yet: make your first guess."
        assert prompts[2].splitlines()[1:3] == [
            f"- {values[1]:.3f}: Be mindful",
            f"- {values[0]:.3f}: Be kind",
        ]

        # A target of your own, and a model that never gets there: stop it midway.
        def slow_guess(body):
            release.wait(20)
            return "Hello world"

        llm_server.script_chat("Hello there", *[slow_guess] * 5)
        page.fill("#target", "<img src=x onerror=alert(1)>")
        page.fill("#max-steps", "5")
        page.click("#start")
        expect(page.locator("#run-target")).to_have_text("<img src=x onerror=alert(1)>")
        expect(page.locator("#target-source")).to_have_text("yours")
        expect(page.locator("#step")).to_have_text("1")
        page.click("#stop")
        release.set()
        expect(page.locator("#status")).to_have_text("stopped")
        expect(page.locator("#start")).to_be_enabled()
        expect(page.locator("#runs li")).to_have_count(2)
    finally:
        release.set()
        context.close()
    runs = list(raw_db["vector_hacking_runs"].find().sort("started_at", 1))
    assert [(r["target"], r["status"], r["app_id"]) for r in runs] == [
        (TARGET, "matched", "vector_hacking"),
        ("<img src=x onerror=alert(1)>", "stopped", "vector_hacking"),
    ]
    assert runs[0]["best"] == {"text": TARGET, "similarity": 1.0, "step": 4}
    assert raw_db["vector_hacking_guesses"].count_documents({"run_id": runs[0]["_id"]}) == 4


# --- parallax -------------------------------------------------------------------------------------

ADMIN = ("admin@example.com", "Parallax admin for tests 1")


@pytest.fixture
def parallax(mongo_uri, db_name, monkeypatch):
    module = load_example("parallax", monkeypatch)
    app = module.create_app(
        {
            "MDB_MONGO_URI": mongo_uri,
            "MDB_DB_NAME": db_name,
            "MDB_PASSWORD_HASH_COST": 4096,
            "PARALLAX_ADMIN_PASSWORD": ADMIN[1],
        }
    )
    assert module.ensure_admin(app) is None
    try:
        with serve(app) as base:
            yield base
    finally:
        module.mdb.shutdown(app)


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/auth/login\?next=%2F$"))
    page.fill("#email", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#sign-in")
    expect(page).to_have_url(f"{base}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def _edit_schema(page: Page, change: str) -> None:
    page.evaluate(
        f"""() => {{
            const box = document.getElementById("schema");
            const schema = JSON.parse(box.value);
            {change}
            box.value = JSON.stringify(schema, null, 2);
        }}"""
    )


def test_parallax_infers_dry_runs_and_applies_a_validator(browser, parallax, raw_db):
    """Infer the seeded products' schema, tighten it by hand, see the dry run name the one
    document it refuses, apply it anyway, watch the server refuse a bad document, remove it."""
    context, page = _page(browser)
    try:
        _sign_in(page, parallax)
        expect(page.locator("#collections .collection")).to_have_text(["products", "reviews"])
        expect(page.locator("#collections .count")).to_have_text(["10", "6"])
        page.click('button.collection[data-name="products"]')
        expect(page.locator("#collection-name")).to_have_text("products")
        expect(page.locator("#current")).to_have_text("none")

        page.click("#infer")
        expect(page.locator("#sampled")).to_have_text("10 document(s) sampled")
        rows = page.locator("#fields tbody tr")
        price = rows.filter(has=page.locator("td.path", has_text=re.compile("^price$")))
        expect(price.locator("td")).to_have_text(
            ["price", "10/10", "string | int | long | double", "yes", ""]
        )
        category = rows.filter(has=page.locator("td.path", has_text=re.compile("^category$")))
        expect(category.locator("td").nth(4)).to_have_text('"tea", "teaware", "tools"')
        dims = rows.filter(has=page.locator("td.path", has_text="dimensions.volume_ml"))
        expect(dims.locator("td").nth(1)).to_have_text("2/2")

        page.click("#dry-run")
        expect(page.locator("#report-summary")).to_have_text(
            "10 document(s) checked: none would fail"
        )

        _edit_schema(page, 'schema.properties.price.bsonType = ["int", "long", "double"];')
        page.click("#dry-run")
        expect(page.locator("#report-summary")).to_have_text("10 document(s) checked: 1 would fail")
        expect(page.locator("#failures li")).to_have_text(
            [re.compile(r": price: string, expected double or int or long$")]
        )
        page.click("#apply")
        expect(page.locator("#error")).to_contain_text("1 of 10 document(s) of parallax.products")
        expect(page.locator("#current")).to_have_text("none")  # nothing applied

        page.check("#force")
        page.click("#apply")
        expect(page.locator("#current")).to_contain_text('"$jsonSchema"')
        expect(page.locator("#report-summary")).to_have_text(
            "applied (updated): 10 document(s) checked, 1 fail"
        )
        expect(page.locator("#keep")).to_be_visible()
        expect(page.locator("#collections li").first).to_contain_text("validated")

        bad = {"sku": "X-1", "name": "Crisps", "category": "snacks", "price": 2, "stock": 1,
               "tags": []}  # fmt: skip
        page.fill("#document", json.dumps(bad))
        page.click("#insert")
        expect(page.locator("#insert-result")).to_have_text(
            "refused: the collection's validator refuses it: category: 'snacks' is not one of "
            "'tea', 'teaware', 'tools'"
        )
        page.fill("#document", json.dumps({**bad, "category": "tools"}))
        page.click("#insert")
        expect(page.locator("#insert-result")).to_have_text(re.compile(r"^inserted [0-9a-f]{24}$"))
        expect(page.locator("#collections .count").first).to_have_text(" 11")

        options = raw_db["parallax_products"].options()
        assert options["validator"]["$jsonSchema"]["properties"]["category"]["enum"] == [
            "tea", "teaware", "tools",
        ]  # fmt: skip
        record = raw_db["apps_config"].find_one({"_id": "parallax"})
        declared = record["manifest"]["collection_settings"]["products"]["validation"]
        assert declared["validator"]["$jsonSchema"]["properties"]["price"]["bsonType"] == [
            "int", "long", "double",
        ]  # fmt: skip
        assert "validator" not in raw_db["parallax_reviews"].options()

        page.click("#remove")
        expect(page.locator("#current")).to_have_text("none")
        assert (
            "validator" not in raw_db["parallax_products"].options()
            or not (raw_db["parallax_products"].options()["validator"])
        )
        page.click("#logout")
        expect(page).to_have_url(re.compile(r"/auth/login"))
    finally:
        context.close()
