#!/usr/bin/env python3
"""Are this machine's cores its own? One busy process alone against two at once.

wrk, the backend and the system under test share the machine's cores, so every ratio in
`make bench` assumes that two busy processes run about as fast as one. On a virtual machine
whose two vCPUs share one physical core with each other, or with a busy neighbour, they do
not: each slows the other, and memory-heavy programs (an interpreter) lose more than small
ones (nginx), so ratios against nginx drop on such a day even though no code changed.

This runs the same pure-Python loop pinned to CPU 0 alone, then on CPU 0 and CPU 1 at once,
and reports the loop's speed together over its speed alone (CPU time per loop, medians of a
few rounds): about 1.0 where the cores are independent, 0.5 where two vCPUs share one core.

    .venv/bin/python bench/cores.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

LOOP = 3_000_000


def _busy() -> float:
    """CPU seconds for the fixed loop in this process."""
    start = time.process_time()
    total = 0
    for i in range(LOOP):
        total += i
    return time.process_time() - start


def _spawn(cpu: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--loop"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )


def _seconds(procs: list[subprocess.Popen[str]]) -> list[float]:
    return [float(proc.communicate(timeout=60)[0]) for proc in procs]


def speed_together(rounds: int = 3) -> float | None:
    """Speed of the loop on two CPUs at once over its speed alone (None with one CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    alone: list[float] = []
    together: list[float] = []
    for _ in range(rounds):
        alone += _seconds([_spawn(cpus[0])])
        together += _seconds([_spawn(cpus[0]), _spawn(cpus[1])])
    return statistics.median(alone) / statistics.median(together)


def main() -> int:
    if sys.argv[1:] == ["--loop"]:
        print(f"{_busy():.6f}")
        return 0
    ratio = speed_together()
    if ratio is None:
        print("one CPU: nothing to compare")
    else:
        print(f"two busy processes at once run at {ratio:.2f}x the speed of one alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
