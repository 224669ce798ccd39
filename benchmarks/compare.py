"""What the comparative benchmarks share: one way to time a call against its baseline, count
the commands it sends, print the table — and repeat the whole script in fresh processes.

Timing: client CPU per call (``time.thread_time()``: the server is another process, and the
calling thread does all of an operation's work). Each round runs baseline, ours, ours,
baseline (a load that drifts during the round weighs on both alike); a comparison reports the
medians over the rounds — of each side's µs, and of the per-round ratios and differences.

One process's figures move from run to run by more than what is left to measure (the heap,
the allocator and the CPU caches differ from process to process): ``--runs N`` runs the script
N times, each in a fresh interpreter, and prints the median of every cell with the range of
the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pymongo import monitoring

#: The hidden option a repeated run gives its child processes: print the rows as JSON.
JSON_FLAG = "--rows-json"


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends (for an untimed pass only: a listener would tax
    the timed clients)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class Row:
    """One measured line: baseline and ours in µs per call, their ratio and difference
    (medians of the per-round values), the commands each side sends per call, and — for a
    repeated run — the lowest and highest ratio of the runs."""

    name: str
    base_us: float
    ours_us: float
    ratio: float
    added_us: float
    commands: tuple[float, float] = (0.0, 0.0)
    ratio_range: tuple[float, float] | None = None


def cpu_us(call: Callable[[int], Any], calls: int) -> float:
    """Client CPU µs per call of ``call(i)`` over ``calls`` calls."""
    start = time.thread_time()
    for i in range(calls):
        call(i)
    return (time.thread_time() - start) / calls * 1e6


def compare(
    name: str, base: Callable[[int], Any], ours: Callable[[int], Any], calls: int, rounds: int
) -> Row:
    """``ours`` against ``base``, ``rounds`` rounds of ``calls`` calls per side and block
    (baseline, ours, ours, baseline)."""
    base(0), ours(0)  # warm up
    base_us: list[float] = []
    ours_us: list[float] = []
    for _ in range(rounds):
        first = cpu_us(base, calls)
        ours_us.append((cpu_us(ours, calls) + cpu_us(ours, calls)) / 2)
        base_us.append((first + cpu_us(base, calls)) / 2)
    pairs = list(zip(ours_us, base_us, strict=True))
    return Row(
        name,
        statistics.median(base_us),
        statistics.median(ours_us),
        statistics.median(o / b for o, b in pairs),
        statistics.median(o - b for o, b in pairs),
    )


def commands_per_call(
    call: Callable[[int], Any], counter: CommandCounter, calls: int = 10
) -> float:
    """The commands one ``call(i)`` sends, on average over ``calls`` calls after a first one
    (which may create an index or connect)."""
    call(0)
    before = counter.count
    for i in range(1, calls + 1):
        call(i)
    return (counter.count - before) / calls


def arguments(doc: str | None, **size: Any) -> argparse.ArgumentParser:
    """The options every comparative script takes — ``--rounds`` (interleaved rounds) and
    ``--runs`` (fresh processes, see :func:`repeated`) — plus its own size option, given as
    ``name=(type, default, help)``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    for name, (kind, default, text) in size.items():
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=1, help="fresh processes; cells are medians")
    return parser


def repeated(runs: int, measure: Callable[[], list[Row]]) -> list[Row]:
    """``measure()`` in this process (one run), or the script run ``runs`` times in fresh
    processes and each cell's median taken (see the module docstring)."""
    if JSON_FLAG in sys.argv:
        rows = measure()
        print(json.dumps([asdict(row) for row in rows]))
        sys.exit(0)
    if runs <= 1:
        return measure()
    argv = [a for a in sys.argv[1:] if not a.startswith("--runs")]
    if "--runs" in sys.argv[1:]:  # "--runs N": drop its value as well
        at = sys.argv.index("--runs")
        argv = sys.argv[1:at] + sys.argv[at + 2 :]
    every: list[list[Row]] = []
    for run in range(runs):
        print(f"run {run + 1}/{runs}...", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, sys.argv[0], *argv, JSON_FLAG],
            check=True,
            capture_output=True,
            text=True,
            timeout=3600,
        ).stdout
        every.append([Row(**{**r, "commands": tuple(r["commands"])}) for r in json.loads(out)])
    merged = []
    for lines in zip(*every, strict=True):
        ratios = [line.ratio for line in lines]
        merged.append(
            Row(
                lines[0].name,
                statistics.median(line.base_us for line in lines),
                statistics.median(line.ours_us for line in lines),
                statistics.median(ratios),
                statistics.median(line.added_us for line in lines),
                lines[0].commands,
                (min(ratios), max(ratios)),
            )
        )
    return merged


def print_table(labels: Sequence[str], rows: list[Row]) -> None:
    """A markdown table: ``labels`` names the columns what, baseline, ours."""
    what, base, ours = labels
    ranged = any(row.ratio_range for row in rows)
    columns = [
        (what, 24, "<"),
        (f"{base} µs", max(11, len(base) + 3), ">"),
        (f"{ours} µs", max(11, len(ours) + 3), ">"),
        ("ratio", 5, ">"),
        *([("ratio range", 11, ">")] if ranged else []),
        ("added µs", 8, ">"),
        ("commands", 9, ">"),
    ]
    print("| " + " | ".join(f"{t:{a}{w}}" for t, w, a in columns) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w, _ in columns) + "|")
    for row in rows:
        cells = [
            row.name,
            f"{row.base_us:.1f}",
            f"{row.ours_us:.1f}",
            f"{row.ratio:.2f}",
            *(
                [f"{row.ratio_range[0]:.2f}-{row.ratio_range[1]:.2f}" if row.ratio_range else ""]
                if ranged
                else []
            ),
            f"{row.added_us:.1f}",
            f"{row.commands[0]:g} / {row.commands[1]:g}",
        ]
        print(
            "| "
            + " | ".join(f"{c:{a}{w}}" for c, (_, w, a) in zip(cells, columns, strict=True))
            + " |"
        )
