#!/usr/bin/env python3
"""What one password check costs: Gatehouse's check against the bare libraries, in turns.

A sign-in is bound by argon2id (47 MiB, t=1, p=1 by default): every other part of it costs a
few milliseconds in all (``bench/login.py`` gives CPU per login by service). This measures,
in one process and in alternating rounds, the CPU time of one check of a right password:

- argon2-cffi's ``PasswordHasher.verify`` in a bare loop (the reference implementation, as
  its wheels are built: SSE2);
- libsodium's ``crypto_pwhash_str_verify`` (PyNaCl) in a bare loop, on the same stored hash;
- ``Passwords.verify_sync``, what the Authentication service runs in its worker threads.

    .venv/bin/python bench/password_check.py            # 5 rounds of 10 checks each
    .venv/bin/python bench/password_check.py --write    # and the table into docs/benchmarks.md
    .venv/bin/python bench/run.py --only password       # the same, as a step of make bench
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from argon2 import PasswordHasher, Type
from nacl.bindings import crypto_pwhash_str_verify

from gatehouse.authentication.config import PasswordHash
from gatehouse.authentication.passwords import Passwords

REPO = Path(__file__).resolve().parent.parent
DOCS = ("<!-- bench:password:start -->", "<!-- bench:password:end -->")
HEADING = "## Latest results: one password check"
ROUNDS = 5
TIMES = 10
PASSWORD = "correct horse battery"


def cpu_ms(check: Callable[[], object], times: int) -> float:
    """CPU milliseconds per call of ``check`` over ``times`` calls."""
    start = time.process_time()
    for _ in range(times):
        check()
    return (time.process_time() - start) * 1000 / times


def measure(rounds: int, times: int) -> dict[str, list[float]]:
    params = PasswordHash()
    hasher = PasswordHasher(
        params.time_cost, params.memory_kib, params.parallelism, 32, 16, type=Type.ID
    )
    stored = hasher.hash(PASSWORD)
    ours = Passwords(params)
    checks: dict[str, Callable[[], object]] = {
        "argon2-cffi, bare loop": lambda: hasher.verify(stored, PASSWORD),
        "libsodium (PyNaCl), bare loop": lambda: crypto_pwhash_str_verify(
            stored.encode(), PASSWORD.encode()
        ),
        "Gatehouse `Passwords.verify_sync`": lambda: ours.verify_sync(stored, PASSWORD),
    }
    assert ours.verify_sync(stored, PASSWORD) == (True, None)
    results: dict[str, list[float]] = {label: [] for label in checks}
    for round_ in range(rounds):
        order = list(checks) if round_ % 2 == 0 else list(reversed(checks))
        for label in order:
            results[label].append(cpu_ms(checks[label], times))
    return results


def render(results: dict[str, list[float]], rounds: int, times: int) -> str:
    params = PasswordHash()
    base = statistics.median(results["argon2-cffi, bare loop"])
    lines = [
        f"**One password check** (argon2id m={params.memory_kib} KiB, t={params.time_cost}, "
        f"p={params.parallelism}, a right password; CPU time in one process, {rounds} rounds "
        f"of {times} checks in alternating order, medians; "
        "`.venv/bin/python bench/password_check.py --write`)",
        "",
        "| check | CPU ms per check | lowest to highest round | x argon2-cffi |",
        "|---|---:|---:|---:|",
    ]
    for label, values in results.items():
        median = statistics.median(values)
        lines.append(
            f"| {label} | {median:.1f} | {min(values):.1f} to {max(values):.1f} "
            f"| {median / base:.2f}x |"
        )
    flags = _cpu_flags()
    lines += [
        "",
        f"Machine: {os.cpu_count()} CPUs with {flags}. libsodium chooses its argon2 code by "
        "the CPU at run time (AVX-512F, AVX2, SSSE3, portable); argon2-cffi's wheels are "
        "built for SSE2.",
    ]
    return "\n".join(lines) + "\n"


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown vector instructions"
    found = set(text.split())
    named = [f for f in ("avx512f", "avx2", "ssse3") if f in found]
    return ", ".join(named) if named else "none of AVX-512F, AVX2, SSSE3"


def write_docs(table: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    text = path.read_text()
    start, end = DOCS
    if start not in text:
        raise SystemExit(f"bench: {path} has no {start} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--times", type=int, default=TIMES, help="checks per round")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    results = measure(args.rounds, args.times)
    table = render(results, args.rounds, args.times)
    print(table)
    if args.write:
        write_docs(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
