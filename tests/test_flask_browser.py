"""The todo example in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the example served by a real WSGI server on 127.0.0.1 (and its Celery
worker, for live updates from a task)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask_apps import free_port, http, serve
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
TODO = ROOT / "examples" / "todo"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _load_example():
    spec = importlib.util.spec_from_file_location("todo_example_app", TODO / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser():
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()  # a fresh profile: no cookies, no cache
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def todo(mongo_uri, db_name, tmp_path):
    """The example's app factory on the test database, served on 127.0.0.1.

    Its manifests are copied so the test can allow its own second origin in CORS."""
    module = _load_example()
    manifests = tmp_path / "manifests"
    shutil.copytree(TODO / "manifests", manifests)
    app = module.create_app(
        {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name, "MDB_MANIFESTS": str(manifests)}
    )
    try:
        with serve(app) as base:
            yield base
    finally:
        module.mdb.shutdown(app)


def _open(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def test_a_task_added_in_the_browser_is_listed_and_stays_in_its_app(page, todo, raw_db):
    title = "Ship the <b>release</b> & celebrate"
    _open(page, f"{todo}/work/")
    expect(page.locator("#tasks .title")).to_have_count(0)
    page.fill("#new-title", title)
    page.click("#add")
    expect(page.locator("#tasks .title")).to_have_text([title])  # text, never markup
    expect(page.locator("#new-title")).to_have_value("")
    expect(page.locator("#count")).to_have_text("1")

    page.reload()  # server-rendered from the database
    expect(page.locator("#tasks .title")).to_have_text([title])

    _open(page, f"{todo}/home/")
    expect(page.locator("#tasks li")).to_have_count(0)
    assert title not in page.content()
    page.fill("#new-title", "Water the plants")
    page.press("#new-title", "Enter")
    expect(page.locator("#tasks .title")).to_have_text(["Water the plants"])

    _open(page, f"{todo}/work/")
    expect(page.locator("#tasks .title")).to_have_text([title])
    work = list(raw_db["todo_work_tasks"].find())
    home = list(raw_db["todo_home_tasks"].find())
    assert [(d["title"], d["app_id"]) for d in work] == [(title, "todo_work")]
    assert [(d["title"], d["app_id"]) for d in home] == [("Water the plants", "todo_home")]

    page.locator("#tasks li .toggle").check()
    expect(page.locator("#tasks li")).to_have_class("done")
    assert raw_db["todo_work_tasks"].find_one()["done"] is True
    page.locator("#tasks li .delete").click()
    expect(page.locator("#tasks li")).to_have_count(0)
    assert raw_db["todo_work_tasks"].count_documents({}) == 0
    assert raw_db["todo_home_tasks"].count_documents({}) == 1

    response = page.goto(f"{todo}/nope/")
    assert response is not None and response.status == 404


def test_an_invalid_task_shows_the_apis_error(page, todo):
    _open(page, f"{todo}/work/")
    page.evaluate("document.getElementById('new-title').removeAttribute('required')")
    page.fill("#new-title", "   ")
    page.click("#add")
    expect(page.locator("#error")).to_have_text("title: a non-empty string is required")
    expect(page.locator("#tasks li")).to_have_count(0)


def _other_origin_page():
    """A second server (another origin) serving an empty page to run fetch() from."""

    def blank(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<!doctype html><title>elsewhere</title>"]

    return serve(blank)


def test_cross_origin_requests_follow_each_apps_manifest(page, mongo_uri, db_name, tmp_path):
    """Chromium itself enforces the CORS answers: the work app allows the other origin (with
    a preflight for its JSON POST), the home app has no cors block, so it is refused."""
    module = _load_example()
    manifests = tmp_path / "manifests"
    shutil.copytree(TODO / "manifests", manifests)
    with _other_origin_page() as elsewhere:
        work = json.loads((manifests / "work.json").read_text())
        work["cors"]["allow_origins"] = [elsewhere]
        (manifests / "work.json").write_text(json.dumps(work))
        app = module.create_app(
            {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name, "MDB_MANIFESTS": str(manifests)}
        )
        try:
            with serve(app) as base:
                page.goto(f"{elsewhere}/")
                script = """async (url) => {
                    try {
                        const r = await fetch(url, {method: "POST",
                            headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({title: "from elsewhere"})});
                        return {status: r.status, body: await r.json()};
                    } catch (err) { return {refused: String(err)}; }
                }"""
                allowed = page.evaluate(script, f"{base}/work/api/tasks")
                assert allowed["status"] == 201
                assert allowed["body"]["task"]["title"] == "from elsewhere"
                refused = page.evaluate(script, f"{base}/home/api/tasks")
                assert "Failed to fetch" in refused["refused"]
                assert http(f"{base}/home/api/tasks")[2]["tasks"] == []  # preflight stopped it
        finally:
            module.mdb.shutdown(app)


@pytest.fixture
def todo_worker(mongo_uri, db_name, monkeypatch, tmp_path):
    """The example's Celery worker (``jobs.py``, solo pool) on the test database."""
    monkeypatch.setenv("MDB_MONGO_URI", mongo_uri)
    monkeypatch.setenv("MDB_DB_NAME", db_name)
    monkeypatch.syspath_prepend(str(TODO))
    for name in ("jobs", "app"):
        sys.modules.pop(name, None)
    jobs = importlib.import_module("jobs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TODO), str(ROOT)])}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "jobs", "worker", "-P", "solo",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
            ],
            cwd=TODO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield jobs, proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        jobs.app.close()
        for name in ("jobs", "app"):
            sys.modules.pop(name, None)


def test_pages_update_live_from_other_browsers_and_a_celery_task(browser, todo, todo_worker):
    """Two browsers on the work space and one on the home space: a change in one shows up
    in the other without a reload, and so does a task a Celery worker adds; the home page,
    another app, never hears of them."""
    jobs, proc, log_path = todo_worker
    contexts = [browser.new_context() for _ in range(3)]
    try:
        alice, bob, home = (context.new_page() for context in contexts)
        for page, space in ((alice, "work"), (bob, "work"), (home, "home")):
            page.set_default_timeout(15_000)
            _open(page, f"{todo}/{space}/")
            expect(page.locator("#live")).to_have_attribute("data-state", "on")

        alice.fill("#new-title", "Written by Alice")
        alice.click("#add")
        expect(bob.locator("#tasks .title")).to_have_text(["Written by Alice"])  # no reload
        bob.locator("#tasks li .toggle").check()
        expect(alice.locator("#tasks li")).to_have_class("done")

        assert proc.poll() is None, log_path.read_text()
        done = jobs.add_task_job.delay("work", "Sent from Celery").get(timeout=90)
        assert done["title"] == "Sent from Celery"
        for page in (alice, bob):
            expect(page.locator("#tasks .title")).to_have_text(
                ["Sent from Celery", "Written by Alice"]
            )
        expect(home.locator("#tasks li")).to_have_count(0)
        assert "Sent from Celery" not in home.content()
    finally:
        for context in contexts:
            context.close()


def test_the_example_runs_as_a_script_on_the_embedded_database(tmp_path):
    """``python examples/todo/app.py``: its own embedded server, stopped on Ctrl-C."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MDB_EMBEDDED_DIR": str(tmp_path / ".mdb")}
    env.pop("MDB_MONGO_URI", None)
    proc = subprocess.Popen(
        [sys.executable, str(TODO / "app.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if http(f"{base}/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the example did not start in 60 s"
            time.sleep(0.1)
        assert http(f"{base}/work/api/tasks", "POST", {"title": "scripted"})[0] == 201
        assert http(f"{base}/home/api/tasks")[2]["tasks"] == []
        assert http(f"{base}/work/api/tasks")[2]["tasks"][0]["title"] == "scripted"
        assert (tmp_path / ".mdb" / "server.json").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert proc.returncode == 0, output
    assert f"todo example on {base}/" in output
    assert not (tmp_path / ".mdb" / "server.json").exists()  # the embedded server stopped
