"""What the benchmarks that run cnnlab as child processes share: one line of progress, the
child run with its wall and CPU seconds and its own peak RSS, links into generated folders, the
machine's header, comma-separated number flags, the tables' percentages and means, and the
results written as JSON.

Imported by `own_folder.py`, `fine_tune.py` and `class_weight.py` (run as scripts, so this
folder is on their path).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def say(message: str) -> None:
    """One line of progress on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cnnlab(*argv: str) -> list[str]:
    """The command line of `cnnlab ARGV` in this interpreter."""
    return [sys.executable, "-m", "cnnlab", *argv]


def run_child(command: Sequence[str], log: Path) -> dict[str, Any]:
    """Run one process to its end, output to `log`; its wall and CPU seconds and its own peak
    RSS (wait4's, not the largest of every child so far). Raises with the log's tail."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    say("$ " + shlex.join(str(c) for c in command))
    started = time.time()
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"exit status {code}; the end of {log}:\n{tail}")
    return {
        "wall_seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
        "started_at": started,
        "log": str(log),
    }


def link(source: Path, dest: Path) -> None:
    """`dest` as a hard link to `source` (a copy on another file system)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def machine(settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON header of a benchmark's figures: the CPU, the cores, Python and the flags."""
    from cnnlab._cpu import cpu_info

    return {
        "cpu": cpu_info().describe(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()},
    }


def ints(text: str, flag: str, *, smallest: int = 1) -> list[int]:
    """A flag's comma-separated whole numbers, each at least `smallest`; SystemExit if not."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < smallest:
        raise SystemExit(f"{flag}: at least one number, each {smallest} or more, got {text!r}")
    return values


def pct(value: float | None) -> str:
    """A share as a table shows it: 0.991 -> "99.1%"; "-" for none."""
    return "-" if value is None else f"{100 * value:.1f}%"


def mean(values: list[float]) -> float | None:
    """The mean, or None for no values."""
    return statistics.fmean(values) if values else None


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """The results as JSON at `path` (the benchmark's --json), said on the last line."""
    if path is not None:
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten: {path}")
