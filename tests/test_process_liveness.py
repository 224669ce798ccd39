"""One liveness check for every "does that process still run?" question
(:func:`mdb_sync.embedded.is_alive`, used by the embedded server's helpers and by the owner
records of imports and exports): real child processes, a zombie among them, and the check
never reaps a child behind its parent's back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mdb_sync import embedded
from mdb_sync.portability import owner

# The child names itself as an import or export would (an owner record), then waits for a
# line on stdin and exits with status 7.
_CHILD = (
    "import json, sys\n"
    "from mdb_sync.portability import owner\n"
    "print(json.dumps(owner.this_process()), flush=True)\n"
    "sys.stdin.readline()\n"
    "sys.exit(7)\n"
)


def _start_child() -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    record = json.loads(proc.stdout.readline())
    assert record["pid"] == proc.pid
    return proc, record


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def _wait_exited_unreaped(proc: subprocess.Popen[str]) -> None:
    """Block until the child has exited, leaving it a zombie (WNOWAIT: not reaped)."""
    result = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    assert result is not None and result.si_pid == proc.pid


def test_a_zombie_child_is_gone_for_both_callers_and_stays_unreaped():
    proc, record = _start_child()
    try:
        assert embedded.is_alive(proc.pid)
        assert owner.is_alive(record, None)

        assert proc.stdin is not None
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        _wait_exited_unreaped(proc)
        os.kill(proc.pid, 0)  # a zombie: the pid still answers a signal...
        assert _state(proc.pid) == "Z"

        assert not embedded.is_alive(proc.pid)  # ...but it runs no code
        assert not owner.is_alive(record, None)
        # Asking did not reap the child: it is still a zombie, and its parent gets its real
        # exit status (a reaped-behind-its-back Popen would report 0).
        assert _state(proc.pid) == "Z"
        assert proc.wait(timeout=10) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not embedded.is_alive(proc.pid)  # reaped now: no such process


def test_a_killed_child_keeps_its_exit_status_for_its_parent():
    proc, record = _start_child()
    try:
        os.kill(proc.pid, signal.SIGKILL)
        _wait_exited_unreaped(proc)
        assert not embedded.is_alive(proc.pid)
        assert not owner.is_alive(record, None)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stopped_process_is_alive_and_bad_pids_are_not():
    proc, record = _start_child()
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # stopped is not dead: it may be continued
        assert embedded.is_alive(proc.pid)
        assert owner.is_alive(record, None)
        os.kill(proc.pid, signal.SIGCONT)
    finally:
        proc.kill()
        proc.wait()
    for pid in (0, -1):
        assert not embedded.is_alive(pid)
    assert embedded.is_alive(os.getpid())
