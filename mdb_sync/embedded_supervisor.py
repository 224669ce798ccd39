"""The supervisor of a shared embedded server: stops it once no live process uses it.

A process that uses the shared server holds a lease file (see :mod:`mdb_sync.embedded`) and
releases it at shutdown; the last one stops the server. A process killed by SIGTERM (the
default action: no ``atexit``) or SIGKILL — ``kill``, ``docker stop``, systemd, a notebook
kernel restart — releases nothing. So the server is started by this small supervisor, which
stays its parent: every :data:`~mdb_sync.embedded.SUPERVISOR_POLL` seconds it reaps the
leases of dead processes and, when none is left and the server is not pinned, stops it under
``server.lock`` (the same lock every start and lease takes, so a process starting to use the
server at that moment is never cut off). It exits when the server exits, whoever stopped it.

It never restarts a server that died: engines do that when they need it (under the same
lock), so a server that crashes at every start does not loop here. It runs in a session of
its own, like the server, so signals meant for the process that started it do not reach it.

Run by :func:`mdb_sync.embedded._launch` as ``python -c ... BASE_DIR -- SERVER_ARGV...``;
it prints the server's pid on its standard output, then detaches from it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import embedded

log = logging.getLogger("mdb_sync.embedded_supervisor")


def supervise(base_dir: Path, server: subprocess.Popen[Any], poll: float) -> int:
    """Wait for the server to exit, stopping it once it has no live user. Returns its
    exit status (0 when this supervisor stopped it)."""
    while True:
        try:
            return server.wait(poll) or 0
        except subprocess.TimeoutExpired:
            pass
        try:
            if embedded.stop_if_unused(base_dir, server.pid):
                server.wait()
                return 0
        except Exception:  # pragma: no cover - keep supervising whatever happens
            log.exception("embedded supervisor: lease check failed")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print("usage: embedded_supervisor BASE_DIR -- SERVER_ARGV...", file=sys.stderr)
        return 2
    base_dir, server_argv = Path(args[0]), args[2:]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mdb-sync supervisor[%(process)d] %(message)s"
    )
    try:
        server = subprocess.Popen(
            server_argv, stdin=subprocess.DEVNULL, stdout=2, stderr=2, close_fds=True
        )
    except OSError as exc:
        print(f"embedded supervisor: cannot run {server_argv[0]!r}: {exc}", file=sys.stderr)
        return 1
    print(server.pid, flush=True)
    # Whoever started us reads one line; later output (there is none) must not hit a
    # closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)

    def forward(signum: int, _frame: Any) -> None:
        # Stopping the supervisor stops its server: it would have no reaper otherwise.
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return supervise(base_dir, server, embedded.SUPERVISOR_POLL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
