"""Several Access Point workers on one port (SO_REUSEPORT), supervised by this process.

The supervisor forks the workers before any event loop exists, forwards SIGHUP (reload) and
SIGTERM/SIGINT (drain and stop) to them, and restarts a worker that dies unexpectedly. In
managed mode (``--state``) the config agent, on a thread of this process, reloads the workers
through :meth:`Supervisor.signal_workers`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatehouse.metrics.workers import WorkerLinks

log = logging.getLogger("gatehouse.access_point")

_PR_SET_PDEATHSIG = 1
MAX_CRASHES_PER_MINUTE = 10
#: Signals the supervisor handles (and forwards); blocked around fork so that a child never
#: runs the supervisor's handlers before it has installed its own.
FORWARDED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


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


class Supervisor:
    """Runs ``count`` workers until SIGTERM/SIGINT; :meth:`run` returns the exit code.

    Args:
        count: how many workers.
        run_worker: the worker's body, called in each forked child; returns its exit code.
        on_start: called once the first workers are forked (managed mode starts its config
            agent thread there, so the first forks happen in a single-threaded process).
        on_stop: called (from the signal handler, in the main thread) when SIGTERM or
            SIGINT arrives; it must not block.
        links: a socket pair per worker for the metrics thread (None: no metrics).
    """

    def __init__(
        self,
        count: int,
        run_worker: Callable[[], int],
        on_start: Callable[[], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        links: WorkerLinks | None = None,
    ) -> None:
        self.count = count
        self.links = links
        self.run_worker = run_worker
        self.on_start = on_start
        self.on_stop = on_stop
        self.stopping = False
        # pid -> slot; changed only by the main thread, read by signal_workers from any thread.
        self._children: dict[int, int] = {}
        self._crashes: list[float] = []

    @property
    def workers(self) -> list[int]:
        """The pids of the running workers."""
        return list(self._children)

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every worker; safe to call from another thread."""
        for pid in list(self._children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # exited; the main thread reaps it

    def _spawn(self, slot: int) -> None:
        # Until the child resets them, the supervisor's handlers would run in it (a SIGTERM
        # there would make the child stop its siblings): keep the signals blocked over fork.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pair = self.links.before_fork() if self.links is not None else None
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            if pair is not None:
                for sock in pair:
                    sock.close()
            raise
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Until the worker's loop handles SIGHUP, a reload must not kill it.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                if self.links is not None and pair is not None:
                    self.links.in_child(pair)
                _die_with_parent()
                code = self.run_worker()
            except BaseException:
                log.exception("worker failed")
            finally:
                os._exit(code)
        self._children[pid] = slot
        if self.links is not None and pair is not None:
            self.links.in_parent(slot, pair)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            first = not self.stopping
            self.stopping = True
            signum = signal.SIGTERM
            if first and self.on_stop is not None:
                self.on_stop()
        self.signal_workers(signum)

    def run(self) -> int:
        for sig in FORWARDED:
            signal.signal(sig, self._forward)
        for slot in range(self.count):
            self._spawn(slot)
        log.info("supervising %d workers", self.count)
        if self.on_start is not None:
            self.on_start()
        exit_code = 0
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self._children:
                continue
            slot = self._children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                exit_code = exit_code or (code if code > 0 else 0)
                continue
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < 60] + [now]
            if len(self._crashes) > MAX_CRASHES_PER_MINUTE:
                log.error(
                    "workers keep failing (%d exits in a minute); stopping", len(self._crashes)
                )
                self._forward(signal.SIGTERM, None)
                exit_code = 1
                continue
            log.error("worker %d (pid %d) exited with %d; restarting", slot, pid, code)
            time.sleep(restart_delay(len(self._crashes) - 1))
            if not self.stopping:
                self._spawn(slot)
        return exit_code


def supervise(count: int, run_worker: Callable[[], int]) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; the exit code."""
    return Supervisor(count, run_worker).run()
