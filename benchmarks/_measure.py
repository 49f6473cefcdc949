"""Measuring on a shared, noisy machine: interleaved repeats, medians, fresh processes.

Every figure the benchmarks print is a ratio to a reference measured in the same run,
and measurement and reference are taken in turns (round-robin), so a burst of load from
another process hits both about equally. Ratios are taken per round and the median of
those is reported.

Peak memory: torch has no allocator statistics on the CPU, and ``tracemalloc`` does not
see its buffers, so memory is the kernel's view of the process. Each memory figure comes
from a fresh subprocess (:func:`run_child`), which, after its setup, returns freed heap to
the system (glibc ``malloc_trim``), resets the resident-set high-water mark (writing ``5``
to ``/proc/self/clear_refs``) and reads the baseline ``VmRSS``; after the measured work it
reads ``VmHWM``. Peak = ``VmHWM`` - baseline. Where the reset is unavailable (not Linux),
``ru_maxrss`` of the fresh process is used instead, which then also includes the setup.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Goal",
    "Row",
    "at_most",
    "child_main",
    "format_table",
    "info",
    "interleave",
    "matmul_rate",
    "median",
    "median_ratio",
    "peak_rss",
    "reset_peak_rss",
    "rss",
    "run_child",
    "set_threads",
    "synchronize",
    "skipped_rows",
]

MiB = 1024 * 1024


# ---- goals and rows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A bound on a ratio (``at_most(1.5)``) or none (``info()``)."""

    text: str
    check: Callable[[float], bool] | None = None

    def status(self, ratio: float | None) -> str:
        if self.check is None or ratio is None:
            return "info"
        return "pass" if self.check(ratio) else "FAIL"


def at_most(bound: float) -> Goal:
    return Goal(f"<= {bound:g}", lambda r: r <= bound)


def info() -> Goal:
    return Goal("-")


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the table: a measured figure, its reference and their ratio."""

    name: str
    measured: str
    reference: str
    ratio: float | None
    goal: Goal = field(default_factory=info)
    skipped: str | None = None
    note: str = ""

    @property
    def status(self) -> str:
        return f"skipped: {self.skipped}" if self.skipped else self.goal.status(self.ratio)


def skipped_rows(names: Sequence[str], reason: str, goal: Goal | None = None) -> list[Row]:
    """Rows for measurements that could not run, with the reason instead of a number."""
    return [
        Row(name=n, measured="-", reference="-", ratio=None, goal=goal or info(), skipped=reason)
        for n in names
    ]


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table: name, measured, reference, ratio, goal, status."""
    header = ("benchmark", "measured", "reference", "ratio", "goal", "status")
    cells = [
        (
            r.name,
            r.measured,
            r.reference,
            "-" if r.ratio is None else f"{r.ratio:.3g}",
            r.goal.text,
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return (
            "| " + " | ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=True)) + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join([line(header), rule, *(line(c) for c in cells), "", *notes])


# ---- statistics -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over rounds of ``numerator / denominator`` measured in the same round."""
    return median([a / b for a, b in zip(numerators, denominators, strict=True)])


def interleave(rounds: int, steps: Mapping[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each step once per round, in turns; each returns its own measurement.

    The order alternates between rounds so neither side always runs first.
    """
    out: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            out[name].append(steps[name]())
    return out


def synchronize(device: str) -> None:
    """Wait for the work queued on ``device`` (CUDA runs kernels asynchronously)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def matmul_rate(dtype: Any, n: int = 2048, repeats: int = 2, device: str = "cpu") -> float:
    """FLOP/s of one ``[n, n] @ [n, n]`` matmul in ``dtype`` on ``device`` (best of ``repeats``).

    On CUDA each repeat is 10 back-to-back matmuls, timed between synchronizations.
    """
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # first call pays one-time kernel selection
    calls = 10 if device.startswith("cuda") else 1
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(calls):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - started) / calls)
    return 2 * n**3 / best


# ---- memory -----------------------------------------------------------------------------


def _status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss() -> int:
    """Resident set size of this process, in bytes."""
    value = _status_bytes("VmRSS")
    return value if value is not None else peak_rss()


def reset_peak_rss() -> bool:
    """Return freed heap to the system and restart the high-water mark; False if unsupported."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Highest resident set size since the last reset (or since the start), in bytes."""
    value = _status_bytes("VmHWM")
    if value is not None:
        return value
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


# ---- child processes --------------------------------------------------------------------

CHILD_FLAG = "--child"


def run_child(
    script: Path,
    function: str,
    args: Mapping[str, Any],
    *,
    python: str | None = None,
    timeout: float = 3600,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``function(**args)`` of ``script`` in a fresh interpreter; return its JSON result.

    Raises:
        RuntimeError: The child failed; the message holds the end of its output.
    """
    payload = json.dumps({"function": function, "args": dict(args)})
    command = [python or sys.executable, str(script), CHILD_FLAG, payload]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"{script.name}:{function} exited {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def child_main(functions: Mapping[str, Callable[..., Mapping[str, Any]]]) -> bool:
    """In a child started by :func:`run_child`: run the function, print its JSON result.

    Returns False when this process is not such a child.
    """
    if len(sys.argv) != 3 or sys.argv[1] != CHILD_FLAG:
        return False
    request = json.loads(sys.argv[2])
    result = functions[request["function"]](**request["args"])
    print(json.dumps(result), flush=True)
    return True


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads in torch (None: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
