"""The documentation is code: it builds with warnings as errors, its manifest reference names
every key the schemas accept, every install line names an extra that exists, every example
is run (Sybil runs the pages' blocks; ``docs/examples`` files run here), and the README's
Quick start prints what the README says."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdb_sync.manifest import fields as mf
from mdb_sync.manifest.schema import ManifestSchema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.rst"))
README = ROOT / "README.rst"


def _extras() -> set[str]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def test_the_docs_build_with_warnings_as_errors(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "manifest-reference.html").exists()
    assert (tmp_path / "cli.html").exists()
    print(f"docs built in {time.monotonic() - started:.1f} s")


# --- the manifest reference -------------------------------------------------------------------


def _schema_paths(schema, prefix: str = "") -> list[str]:
    """Every key path of a schema, walked independently of the docs' generator: a nested
    object adds ``.key``, an array of objects ``[]``, a map of user-chosen keys ``.<...>``."""
    paths = []
    for name, field in schema.fields.items():
        path = f"{prefix}.{field.data_key or name}" if prefix else field.data_key or name
        paths.append(path)
        paths += _field_paths(field, path)
    return paths


def _nested(field) -> object:
    return field.nested() if isinstance(field.nested, type) else field.nested


def _field_paths(field, path: str) -> list[str]:
    if isinstance(field, mf.Obj):
        return _schema_paths(_nested(field), path)
    if isinstance(field, mf.ListOf):
        return _field_paths(field.inner, f"{path}[]") if isinstance(field.inner, mf.Obj) else []
    if isinstance(field, mf.MapOf):
        return _field_paths(field.values, f"{path}.<*>")
    if isinstance(field, mf.OneOfTypes):
        return [p for _, choice in field.choices for p in _field_paths(choice, path)]
    return []


def test_the_manifest_reference_names_every_schema_key():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import manifest_reference
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    rendered = manifest_reference.render(None) + "".join(
        manifest_reference.render(section) for section in manifest_reference.sections()
    )
    documented = set(re.findall(r"^``([^`]+)``$", rendered, re.MULTILINE))
    generic = {re.sub(r"<[^>]+>", "<*>", p) for p in documented}
    expected = _schema_paths(ManifestSchema())
    assert len(expected) > 300
    missing = [p for p in expected if p not in generic]
    assert missing == []
    # and the page renders every section
    page = (DOCS / "manifest-reference.rst").read_text()
    used = re.findall(r"^\.\. manifest-reference::[ \t]*(\S*)$", page, re.MULTILINE)
    assert sorted(u for u in used if u) == sorted(manifest_reference.sections())
    assert "" in used


def _undescribed(schema, prefix: str = "") -> list[str]:
    missing = []
    for name, field in schema.fields.items():
        path = f"{prefix}.{field.data_key or name}" if prefix else field.data_key or name
        if not (field.metadata or {}).get("description"):
            missing.append(path)
        for nested in _nested_schemas(field):
            missing += _undescribed(nested, path)
    return missing


def _nested_schemas(field) -> list:
    if isinstance(field, mf.Obj):
        return [_nested(field)]
    if isinstance(field, mf.ListOf):
        return _nested_schemas(field.inner)
    if isinstance(field, mf.MapOf):
        return _nested_schemas(field.values)
    if isinstance(field, mf.OneOfTypes):
        return [s for _, choice in field.choices for s in _nested_schemas(choice)]
    return []


def test_every_manifest_key_has_a_description():
    """``metadata={"description": ...}`` on every field: the reference says what each key
    does, not only its type."""
    assert _undescribed(ManifestSchema()) == []


# --- install lines and extras -----------------------------------------------------------------

_EXTRA_USE = re.compile(
    r"mdb-sync\[([A-Za-z0-9_,\s-]+)\]|\.whl\[([A-Za-z0-9_,\s-]+)\]|\"\.\[([^\]]+)\]\""
)


def _texts() -> list[Path]:
    files = [README, *PAGES, ROOT / ".ci" / "run"]
    for package in ("mdb_sync", "flask_mdb", "examples"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def test_every_install_line_names_an_extra_that_exists():
    extras = _extras()
    assert {"oso", "docs", "embedded", "flask", "auth", "oauth", "ai", "local"} <= extras
    uses = []
    for path in _texts():
        for match in _EXTRA_USE.finditer(path.read_text(encoding="utf-8")):
            names = next(g for g in match.groups() if g)
            uses += [(path.relative_to(ROOT), n.strip()) for n in names.split(",")]
    assert len(uses) >= 15
    unknown = [(str(path), name) for path, name in uses if name not in extras]
    assert unknown == []


def test_the_all_extra_installs_the_docs_tools():
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    assert "%(docs)s" in config["options.extras_require"]["all"]
    docs = config["options.extras_require"]["docs"]
    for tool in ("sphinx", "sphinx-click", "furo", "sybil"):
        assert re.search(rf"^{re.escape(tool)}\b", docs, re.MULTILINE), tool


# --- every example runs -------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode)::\s*(\S*)", re.MULTILINE)
_LITERAL = re.compile(r"^(?!\s*\.\. ).*\S::\s*$", re.MULTILINE)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_of_a_page_is_run_or_shown_only(page):
    """Sybil runs python, json and console blocks; text, javascript and shell (install lines,
    checked by ``tests/test_install_lines.py``) are shown only. No bare ``::`` literal block
    slips past both."""
    sys.path.insert(0, str(DOCS))
    try:
        from sybil_support import RUN, SHOWN_ONLY
    finally:
        sys.path.remove(str(DOCS))
    text = page.read_text(encoding="utf-8")
    languages = [m.group(3) for m in _DIRECTIVE.finditer(text)]
    assert all(lang in RUN | SHOWN_ONLY for lang in languages), languages
    assert _LITERAL.findall(text) == []


def test_the_readme_keeps_its_quick_start_and_runs_its_examples():
    text = README.read_text(encoding="utf-8")
    assert (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[embedded]" && '
        ".venv/bin/python examples/hello_world/main.py"
    ) in text
    assert "\n       bash .ci/run\n" in text
    assert "\n       .venv/bin/python -m pytest\n" in text
    languages = [m.group(3) for m in _DIRECTIVE.finditer(text)]
    assert languages.count("python") >= 1
    # The README's literal (::) blocks are the Quick start's commands and the hello world's
    # output, which test_the_quick_start_prints_what_the_readme_shows checks.
    assert len(_LITERAL.findall(text)) == 4
    # Every page it links to exists.
    for link in re.findall(r"<(docs/[^>]+\.rst)>`_", text):
        assert (ROOT / link).exists(), link


def _readme_hello_output() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split("The hello world prints::\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_the_quick_start_prints_what_the_readme_shows(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDB_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello_world" / "main.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = result.stdout.strip().splitlines()
    shown = _readme_hello_output()
    assert len(got) == len(shown)
    variable = re.compile(r"mongodb://127\.0\.0\.1:\d+|[0-9a-f]{24}")
    for line, expected in zip(got, shown, strict=True):
        assert variable.sub("*", line) == variable.sub("*", expected)
    assert (tmp_path / ".mdb" / "data").is_dir()  # "Its data persists in ./.mdb/data"


EXAMPLE_FILES = sorted((DOCS / "examples").rglob("*.py"))


def test_every_docs_example_file_is_included_and_run():
    """Each file under ``docs/examples`` is shown by a page (``literalinclude``) and run by
    ``tests/test_docs_examples.py``."""
    included = set()
    for page in PAGES:
        included |= set(re.findall(r"^\.\. literalinclude:: (\S+)", page.read_text(), re.M))
    runner = (ROOT / "tests" / "test_docs_examples.py").read_text()
    for path in EXAMPLE_FILES:
        relative = path.relative_to(DOCS).as_posix()
        assert relative in included, relative
        assert path.name in runner, path.name
