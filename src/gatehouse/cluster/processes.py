"""Detached processes that outlive the command that started them, found again by pid file.

``gatehouse cluster up`` returns once the cluster is up, and ``status``, ``kill``, ``start``
and ``down`` run later from other shells: each process is therefore started in a session of
its own (so its whole process group — an Access Point's workers too — is killed at once), its
output appended to ``logs/NAME.log``, and its pid written to ``run/NAME.pid`` together with
the process's start time, so a pid the kernel has since given to another process is never
taken for it. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gatehouse.errors import GatehouseError

#: How long a process stopped with SIGTERM may take before it gets SIGKILL.
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0
_POLL = 0.02


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from the state on (field 3), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is a child of this process that ended, so it
    does not linger as a zombie; nothing otherwise."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    reap(pid)
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@dataclass(frozen=True, slots=True)
class PidFile:
    """``run/NAME.pid``: ``PID START_TIME``."""

    path: Path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temp.write_text(f"{pid} {start_time(pid) or 0}\n")
        temp.replace(self.path)

    def recorded(self) -> int | None:
        """The pid written, whether or not it still runs; None without a readable file."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> int | None:
        """The pid of the process this file names, if that very process still runs."""
        try:
            pid_text, started_text = self.path.read_text().split()[:2]
            pid, started = int(pid_text), int(started_text)
        except (OSError, ValueError):
            return None
        if not alive(pid):
            return None
        return pid if started in (0, start_time(pid)) else None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` (``argv[0]`` an absolute path) in a new session, stdin from /dev/null,
    stdout and stderr appended to ``log``; return its pid.

    ``posix_spawn`` rather than :class:`subprocess.Popen`: the process is meant to outlive
    this one, and a ``Popen`` object would warn about a child still running when collected.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, f"--- {stamp} starting: {' '.join(argv)}\n".encode())
        try:
            return os.posix_spawn(
                argv[0],
                list(argv),
                dict(os.environ if env is None else env),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, fd, 1),
                    (os.POSIX_SPAWN_DUP2, fd, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise GatehouseError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of the process groups led by ``pids`` has a live member; return the
    groups still alive at ``timeout``."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = [pid for pid in remaining if alive(pid) or group_members(pid)]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(_POLL)
    return remaining


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group ``pid`` leads (started by :func:`spawn`)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_groups(pids: Sequence[int], timeout: float = KILL_TIMEOUT) -> None:
    """SIGKILL every process of the groups ``pids`` lead, and wait until they are gone.

    Raises:
        GatehouseError: a process survived ``timeout`` (it is stuck in the kernel).
    """
    for pid in pids:
        signal_group(pid, signal.SIGKILL)
    left = wait_gone(pids, timeout)
    if left:
        raise GatehouseError(f"process(es) {left} still alive {timeout:g}s after SIGKILL")


def stop_groups(pids: Sequence[int], timeout: float = STOP_TIMEOUT) -> list[int]:
    """SIGTERM the processes ``pids`` (each stops its own workers: an Access Point drains
    them), SIGKILL every group still alive after ``timeout``; return the groups that had to
    be killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    stubborn = wait_gone(pids, timeout)
    if stubborn:
        kill_groups(stubborn)
    return stubborn
