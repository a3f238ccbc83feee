"""Several Access Point workers on one port (SO_REUSEPORT), supervised by this process.

The supervisor forks the workers before any event loop exists, forwards SIGHUP (reload) and
SIGTERM/SIGINT (drain and stop) to them, and restarts a worker that dies unexpectedly.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("gatehouse.access_point")

_PR_SET_PDEATHSIG = 1
MAX_CRASHES_PER_MINUTE = 10


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this worker if the supervisor disappears."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def restart_delay(recent_crashes: int) -> float:
    """Back off when a worker keeps crashing: 0, 0.5, 1, 2 ... up to 10 seconds."""
    if recent_crashes <= 0:
        return 0.0
    return float(min(10.0, 0.5 * 2 ** (recent_crashes - 1)))


def supervise(count: int, run_worker: Callable[[], int]) -> int:
    children: dict[int, int] = {}
    stopping = False
    crashes: list[float] = []

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Until the worker's loop handles SIGHUP, a reload must not kill it.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                _die_with_parent()
                code = run_worker()
            except BaseException:
                log.exception("worker failed")
            finally:
                os._exit(code)
        children[pid] = slot

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            signum = signal.SIGTERM
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for slot in range(count):
        spawn(slot)
    log.info("supervising %d workers", count)
    exit_code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        slot = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            exit_code = exit_code or (code if code > 0 else 0)
            continue
        now = time.monotonic()
        crashes = [t for t in crashes if now - t < 60] + [now]
        if len(crashes) > MAX_CRASHES_PER_MINUTE:
            log.error("workers keep failing (%d exits in a minute); stopping", len(crashes))
            forward(signal.SIGTERM, None)
            exit_code = 1
            continue
        log.error("worker %d (pid %d) exited with %d; restarting", slot, pid, code)
        time.sleep(restart_delay(len(crashes) - 1))
        if not stopping:
            spawn(slot)
    return exit_code
