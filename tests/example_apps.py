"""Helpers of the seed examples' tests (interactive_rag, vector_hacking, parallax): load an
example's ``app.py`` as a fresh module, launch Debian's Chromium, run an example as a script."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from flask_apps import http

from flask_mdb.websockets import handler_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
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
#: Sibling modules an example imports from its own directory.
SIBLINGS = ("rag",)


def load_example(name: str, monkeypatch: Any) -> ModuleType:
    """``examples/<name>/app.py`` as a new module, with its directory on ``sys.path`` (for
    its sibling modules) and its websocket handlers registered afresh."""
    directory = EXAMPLES / name
    monkeypatch.syspath_prepend(str(directory))
    for sibling in SIBLINGS:
        monkeypatch.delitem(sys.modules, sibling, raising=False)
    handler_registry.clear(name)
    spec = importlib.util.spec_from_file_location(f"{name}_example_app", directory / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def running_script(
    command: list[str], env: dict[str, str], cwd: Path, health: str, timeout: float = 60
) -> Iterator[subprocess.Popen[str]]:
    """Run ``command`` until ``health`` answers 200; stop it with Ctrl-C (SIGINT) afterwards."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if http(health)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{command} did not start in {timeout} s"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
