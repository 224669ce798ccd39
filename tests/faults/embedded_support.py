"""Helpers of the embedded-server and bounds fault tests: child processes that use a shared
embedded server, a test-owned ``secantusd-py`` process, and a clean-up that leaves no server
or supervisor behind (each stopped by its own pid).

SecantusDB is GPL: it is only ever run as a child process and reached over TCP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mdb_sync import embedded

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(extra)
    return env


def spawn_python(code: str, **extra_env: str) -> subprocess.Popen[str]:
    """Start ``python -c code`` (dedented) with this checkout importable; pipes for output."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(**extra_env),
    )


def run_python(code: str, timeout: float = 60, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**extra_env),
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The next line the child prints (it must flush), failing clearly if it died."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"the child printed nothing within {timeout}s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the child exited ({proc.wait()}): {err[-3000:]}")
    return line.strip()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def wait_stopped(pid: int, timeout: float = 10) -> None:
    """Wait until ``pid`` is stopped (SIGSTOP takes effect asynchronously)."""

    def stopped() -> bool:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rfind(")") + 2] in "Tt"

    wait_until(stopped, timeout, f"pid {pid} stopped")


def processes_using(path: Path) -> list[int]:
    """Pids of processes (servers, supervisors) whose command line names ``path``."""
    needle = str(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if needle in args and embedded.is_alive(int(entry.name)):
            pids.append(int(entry.name))
    return sorted(pids)


def servers_on(base: Path) -> list[int]:
    """Pids of the server processes whose storage is ``base``'s data directory."""
    data = str(base / "data")
    pids = []
    for pid in processes_using(base):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "mdb_sync.embedded_supervisor" in " ".join(args):
            continue
        if any(a == "--storage-path" and args[i + 1] == data for i, a in enumerate(args[:-1])):
            pids.append(pid)
    return pids


def server_pid(base: Path) -> int | None:
    """The pid of the server that holds ``base``'s data directory (its WiredTiger lock)."""
    info = embedded.status(base)
    return info.get("pid")


def shared_directory(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory for a shared embedded server (a fixture's body: ``yield from``);
    afterwards nothing of it may run."""
    base = tmp_path / "mdb"
    yield base
    # Only processes this test started (they name its tmp dir); their data is thrown away.
    for pid in processes_using(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class OwnServer:
    """A ``secantusd-py`` process the test owns, on a fixed port and data directory, which
    it kills (SIGKILL), stops (SIGSTOP), continues and restarts by pid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = directory / "secantusd.toml"
        self.config.write_text("# command-line options only\n")
        self.port = embedded._free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return embedded.client_uri(embedded.HOST, self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> OwnServer:
        argv = [*embedded.find_server_command(), "--host", embedded.HOST]
        argv += ["--port", str(self.port), "--storage-path", str(self.data)]
        argv += ["--config", str(self.config), "--log-level", "WARNING", "--sync-on-commit"]
        deadline = time.monotonic() + 30
        while True:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while self.proc.poll() is None and time.monotonic() < deadline:
                if embedded._ping(embedded.HOST, self.port, timeout=1.0):
                    return self
                time.sleep(0.05)
            assert time.monotonic() < deadline, "the server did not start"
            stop_process(self.proc)  # the port may still be held: try again
            time.sleep(0.2)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)
        if signum == signal.SIGSTOP:
            wait_stopped(self.pid)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()

    def stop(self) -> None:
        """Gone for good (the test is over: SIGKILL, its data is thrown away)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
