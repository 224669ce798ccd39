"""A database server the fault tests own: a ``secantusd-py`` child process on a fixed port
and data directory, which a test kills (SIGKILL), stops (SIGSTOP) and restarts (same port,
same data) at the moment that matters.

SecantusDB is GPL: it is only ever run as a child process and reached over TCP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from mdb_sync.embedded import find_server_command

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CrashableServer:
    """``secantusd-py`` on 127.0.0.1:``port`` with its data in ``directory/data``.

    ``durable`` starts it with ``--sync-on-commit`` (an acknowledged write survives a
    SIGKILL); without it, the last writes before a crash may be lost.
    """

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "secantusd.toml"
        self.config.write_text("# options on the command line only\n")
        self.log_path = self.directory / "server.log"
        self.durable = durable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def start(self) -> CrashableServer:
        argv = [*find_server_command(), "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--storage-path", str(self.data_dir), "--config", str(self.config)]
        argv += ["--log-level", "WARNING"]
        if self.durable:
            argv.append("--sync-on-commit")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            if self._wait_ready(deadline):
                self.starts += 1
                return self
            # The port may still be held by the killed process's sockets: try again.
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        client: MongoClient[Any] = MongoClient(
            self.uri, serverSelectionTimeoutMS=300, directConnection=True
        )
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    return False
                try:
                    client.admin.command("ping")
                    return True
                except Exception:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> CrashableServer:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
