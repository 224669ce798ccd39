"""The todo example in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the example served by a real WSGI server on 127.0.0.1 (and its Celery
worker, for live updates from a task): signing in and out, per-user tasks, the admin-only
page, CORS with bearer tokens, live updates."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask_apps import free_port, http, serve
from playwright.sync_api import Page, expect, sync_playwright

from flask_mdb.testing import LiveServer

ROOT = Path(__file__).resolve().parents[1]
TODO = ROOT / "examples" / "todo"
CHROMIUM = "/usr/bin/chromium"
ADMIN = ("admin@example.com", "Todo admin for tests 1")  # the example's TODO_ADMIN_PASSWORD
PASSWORD = "correct horse battery"
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
    port = free_port()  # known first: the spaces' public address is in their manifests
    base = f"http://127.0.0.1:{port}"
    config = {**_config(mongo_uri, db_name, manifests), "MDB_EXTERNAL_URL": base}
    app = module.create_app(config)
    assert module.ensure_admin(app) is None  # the password was given: nothing to show
    try:
        with LiveServer(app, port=port):
            yield base
    finally:
        module.mdb.shutdown(app)


def _config(mongo_uri, db_name, manifests):
    return {
        "MDB_MONGO_URI": mongo_uri,
        "MDB_DB_NAME": db_name,
        "MDB_MANIFESTS": str(manifests),
        "MDB_PASSWORD_HASH_COST": 4096,  # cheap hashes: the test signs in many times
        "TODO_ADMIN_PASSWORD": ADMIN[1],
    }


def _open(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def _sign_in(page: Page, base: str, space: str, email: str, password: str = PASSWORD,
             register: bool = False) -> None:  # fmt: skip
    """Open the space, get sent to its sign-in page, sign in (or register), come back."""
    page.goto(f"{base}/{space}/")
    expect(page).to_have_url(re.compile(rf"/{space}/auth/login\?next=%2F{space}%2F$"))
    if register:
        page.click("#register-link")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("#register")
    else:
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("#sign-in")
    expect(page).to_have_url(f"{base}/{space}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#who")).to_have_text(email)


def _sign_out(page: Page, base: str) -> None:
    page.click("#logout")
    expect(page).to_have_url(f"{base}/")


def _token(base: str, space: str, email: str, password: str) -> str:
    status, _, body = http(
        f"{base}/{space}/auth/token", "POST", {"email": email, "password": password}
    )
    assert status == 200, body
    return body["access_token"]


def test_a_task_added_in_the_browser_is_listed_and_stays_in_its_app(page, todo, raw_db):
    title = "Ship the <b>release</b> & celebrate"
    _sign_in(page, todo, "work", "ada@example.com", register=True)
    expect(page.locator("#tasks .title")).to_have_count(0)
    page.fill("#new-title", title)
    page.click("#add")
    expect(page.locator("#tasks .title")).to_have_text([title])  # text, never markup
    expect(page.locator("#new-title")).to_have_value("")
    expect(page.locator("#count")).to_have_text("1")

    page.reload()  # server-rendered from the database
    expect(page.locator("#tasks .title")).to_have_text([title])

    _sign_in(page, todo, "home", "ada@example.com")  # one account, a session per space
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
    assert work[0]["owner_id"] == home[0]["owner_id"]

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
    _sign_in(page, todo, "work", *ADMIN)
    page.evaluate("document.getElementById('new-title').removeAttribute('required')")
    page.fill("#new-title", "   ")
    page.click("#add")
    expect(page.locator("#error")).to_have_text("title: a non-empty string is required")
    expect(page.locator("#tasks li")).to_have_count(0)


def test_sign_in_per_user_tasks_admin_page_and_sign_out(page, todo, raw_db):
    _sign_in(page, todo, "work", "ada@example.com", register=True)
    page.fill("#new-title", "Ada's report")
    page.click("#add")
    expect(page.locator("#tasks .title")).to_have_text(["Ada's report"])
    expect(page.locator("#admin-link")).to_have_count(0)
    assert page.goto(f"{todo}/work/admin").status == 403
    page.goto(f"{todo}/work/")
    session = next(c for c in page.context.cookies() if c["name"] == "todo_work_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"

    _sign_out(page, todo)
    assert not [c for c in page.context.cookies() if c["name"] == "todo_work_session"]
    assert raw_db["mdb_auth_sessions"].count_documents({"app_id": "todo_work"}) == 0
    page.goto(f"{todo}/work/")  # signed out: back to the sign-in page
    expect(page).to_have_url(re.compile(r"/work/auth/login"))
    page.fill("#email", "ada@example.com")
    page.fill("#password", "not her password")
    page.click("#sign-in")
    expect(page.locator("#auth-error")).to_have_text("invalid email or password")

    _sign_in(page, todo, "work", "bob@example.com", register=True)
    expect(page.locator("#tasks li")).to_have_count(0)  # Ada's tasks are hers
    _sign_out(page, todo)

    _sign_in(page, todo, "work", *ADMIN)
    expect(page.locator("#tasks li")).to_have_count(0)
    page.click("#admin-link")
    expect(page.locator("#accounts .email")).to_have_text(
        ["ada@example.com", "admin@example.com", "bob@example.com"]
    )
    assert "Ada's report" not in page.content()
    page.click("text=back to the tasks")
    _sign_out(page, todo)

    _sign_in(page, todo, "home", *ADMIN)  # an admin at work is a plain user at home
    expect(page.locator("#admin-link")).to_have_count(0)
    assert page.goto(f"{todo}/home/admin").status == 403
    assert page.goto(f"{todo}/home/about").status == 200  # the one public page

    page.goto(f"{todo}/")
    _sign_in(page, todo, "work", "ada@example.com")
    expect(page.locator("#tasks .title")).to_have_text(["Ada's report"])


def test_the_team_space_shares_the_work_sign_on(page, todo, raw_db):
    """``todo_team`` is a related app of ``todo_work`` (the hub): signed in at work, the
    browser opens the team space and is signed in there too — through the work space, with
    no form — in a session of its own; "Sign out everywhere" ends both."""
    _sign_in(page, todo, "work", "ada@example.com", register=True)
    page.goto(f"{todo}/team/")
    expect(page).to_have_url(f"{todo}/team/")  # three redirects, no sign-in page
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#who")).to_have_text("ada@example.com")
    page.fill("#new-title", "Plan the offsite")
    page.click("#add")
    expect(page.locator("#tasks .title")).to_have_text(["Plan the offsite"])
    names = {c["name"] for c in page.context.cookies()}
    assert {"todo_work_session", "todo_team_session"} <= names  # a session per app
    assert raw_db["todo_team_tasks"].count_documents({"app_id": "todo_team"}) == 1
    assert raw_db["todo_work_tasks"].count_documents({}) == 0

    page.click("#logout-everywhere")
    expect(page).to_have_url(f"{todo}/")
    page.goto(f"{todo}/work/")
    expect(page).to_have_url(re.compile(r"/work/auth/login"))
    page.goto(f"{todo}/team/")  # through the hub, which asks for a sign-in now
    expect(page).to_have_url(re.compile(r"/work/auth/login\?next=/work/auth/platform/authorize"))
    page.fill("#email", "ada@example.com")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    expect(page).to_have_url(f"{todo}/team/")  # and back to where the browser was going
    expect(page.locator("#tasks .title")).to_have_text(["Plan the offsite"])


def _other_origin_page():
    """A second server (another origin) serving an empty page to run fetch() from."""

    def blank(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<!doctype html><title>elsewhere</title>"]

    return serve(blank)


def test_cross_origin_requests_follow_each_apps_manifest(page, mongo_uri, db_name, tmp_path):
    """Chromium itself enforces the CORS answers: the work app allows the other origin (with
    a preflight for its JSON POST carrying a bearer token), the home app has no cors block,
    so it is refused."""
    module = _load_example()
    manifests = tmp_path / "manifests"
    shutil.copytree(TODO / "manifests", manifests)
    with _other_origin_page() as elsewhere:
        work = json.loads((manifests / "work.json").read_text())
        work["cors"]["allow_origins"] = [elsewhere]
        (manifests / "work.json").write_text(json.dumps(work))
        app = module.create_app(_config(mongo_uri, db_name, manifests))
        module.ensure_admin(app)
        try:
            with serve(app) as base:
                work_token = _token(base, "work", *ADMIN)
                home_token = _token(base, "home", *ADMIN)
                page.goto(f"{elsewhere}/")
                script = """async ([url, token]) => {
                    try {
                        const r = await fetch(url, {method: "POST",
                            headers: {"Content-Type": "application/json",
                                      "Authorization": "Bearer " + token},
                            body: JSON.stringify({title: "from elsewhere"})});
                        return {status: r.status, body: await r.json()};
                    } catch (err) { return {refused: String(err)}; }
                }"""
                allowed = page.evaluate(script, [f"{base}/work/api/tasks", work_token])
                assert allowed["status"] == 201
                assert allowed["body"]["task"]["title"] == "from elsewhere"
                refused = page.evaluate(script, [f"{base}/home/api/tasks", home_token])
                assert "Failed to fetch" in refused["refused"]
                bearer = {"Authorization": f"Bearer {home_token}"}
                assert http(f"{base}/home/api/tasks", headers=bearer)[2]["tasks"] == []
                other_app = page.evaluate(script, [f"{base}/work/api/tasks", home_token])
                assert other_app["status"] == 401  # home's token is not for work
        finally:
            module.mdb.shutdown(app)


@pytest.fixture
def todo_worker(mongo_uri, db_name, monkeypatch, tmp_path):
    """The example's Celery worker (``jobs.py``, solo pool) on the test database."""
    monkeypatch.setenv("MDB_MONGO_URI", mongo_uri)
    monkeypatch.setenv("MDB_DB_NAME", db_name)
    # The worker looks accounts up with the apps' auth settings, which issue tokens.
    monkeypatch.setenv("MDB_JWT_SECRET", "w" * 48)
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
    """Alice signed in on two browsers of the work space: a change in one shows up in the
    other without a reload, and so does a task a Celery worker adds for her. Carol, another
    account of the same space, and Alice's page of the home space (another app) never hear
    of them."""
    jobs, proc, log_path = todo_worker
    contexts = [browser.new_context() for _ in range(4)]
    try:
        laptop, phone, carol, home = (context.new_page() for context in contexts)
        for page in (laptop, phone, carol, home):
            page.set_default_timeout(15_000)
        _sign_in(laptop, todo, "work", "alice@example.com", register=True)
        _sign_in(phone, todo, "work", "alice@example.com")
        _sign_in(carol, todo, "work", "carol@example.com", register=True)
        _sign_in(home, todo, "home", "alice@example.com")
        for page in (laptop, phone, carol, home):
            expect(page.locator("#live")).to_have_attribute("data-state", "on")

        laptop.fill("#new-title", "Written on the laptop")
        laptop.click("#add")
        expect(phone.locator("#tasks .title")).to_have_text(["Written on the laptop"])  # live
        phone.locator("#tasks li .toggle").check()
        expect(laptop.locator("#tasks li")).to_have_class("done")

        assert proc.poll() is None, log_path.read_text()
        done = jobs.add_task_job.delay("work", "alice@example.com", "Sent from Celery")
        assert done.get(timeout=90)["title"] == "Sent from Celery"
        for page in (laptop, phone):
            expect(page.locator("#tasks .title")).to_have_text(
                ["Sent from Celery", "Written on the laptop"]
            )
        for page in (carol, home):
            expect(page.locator("#tasks li")).to_have_count(0)
            assert "Sent from Celery" not in page.content()
    finally:
        for context in contexts:
            context.close()


def test_the_example_runs_as_a_script_on_the_embedded_database(tmp_path):
    """``python examples/todo/app.py``: its own embedded server, stopped on Ctrl-C."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MDB_EMBEDDED_DIR": str(tmp_path / ".mdb"),
           "TODO_ADMIN_PASSWORD": ADMIN[1]}  # fmt: skip
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
        assert http(f"{base}/work/api/tasks", "POST", {"title": "scripted"})[0] == 401
        work = {"Authorization": f"Bearer {_token(base, 'work', *ADMIN)}"}
        home = {"Authorization": f"Bearer {_token(base, 'home', *ADMIN)}"}
        assert http(f"{base}/work/api/tasks", "POST", {"title": "scripted"}, work)[0] == 201
        assert http(f"{base}/home/api/tasks", headers=home)[2]["tasks"] == []
        assert http(f"{base}/work/api/tasks", headers=work)[2]["tasks"][0]["title"] == "scripted"
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
