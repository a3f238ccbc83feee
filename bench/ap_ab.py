#!/usr/bin/env python3
"""Two builds of the Access Point side by side, loaded in turns: is a change faster?

Side A is this checkout as installed; side B runs the same configuration from another source
tree, put first on its ``PYTHONPATH``: a git revision (``--rev``, checked out in a temporary
worktree and run as plain Python, or compiled there first with ``--compiled``) or any tree's
``src`` (``--src``).
Both serve the bench's public resource from the same backend nginx, over TLS (default) or
plain HTTP, keep-alive or with a new connection per request (``--close``). wrk loads them in
turns (A, B, B, A, ...); each figure is the median of its side's blocks, with the CPU time
per request of each side's processes and the 95 % interval of the paired ratio B / A.

    .venv/bin/python bench/ap_ab.py --rev HEAD~1 --compiled   # a change, both compiled
    .venv/bin/python bench/ap_ab.py --rev HEAD                # compiled against plain Python
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import tls_edge
from paired import pair_interval
from signals import terminate_on_signals

ROOT = Path(__file__).resolve().parent.parent


def _side_b(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    """The source tree of side B and how to name it."""
    if args.src:
        return Path(args.src).resolve(), str(args.src)
    tree = scratch / "worktree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.rev],
        check=True,
    )
    if not args.compiled:
        return tree / "src", f"{args.rev} (plain Python)"
    print(f"ap_ab: compiling {args.rev}'s request path (about a minute)", file=sys.stderr)
    subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return tree / "src", f"{args.rev} (compiled)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    other = parser.add_mutually_exclusive_group(required=True)
    other.add_argument("--rev", help="git revision for side B (a temporary worktree)")
    other.add_argument("--src", help="a source tree's src directory for side B")
    parser.add_argument(
        "--compiled", action="store_true", help="compile --rev's request path too (setup.py)"
    )
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of TLS")
    parser.add_argument("--close", action="store_true", help="a new connection per request")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6, help="blocks per side")
    parser.add_argument("--block", type=int, default=4, help="seconds per block")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    args = parser.parse_args()
    terminate_on_signals()

    scratch = Path(tempfile.mkdtemp(prefix="gatehouse-ap-ab-"))
    started: list[tls_edge.Proc] = []
    tree: Path | None = None
    try:
        tree, name_b = _side_b(args, scratch)
        ca, cert, key = tls_edge.make_certificate(scratch)
        tls = (None, None) if args.plain else (cert, key)
        backend_port = tls_edge.free_port()
        backend = tls_edge.start_nginx(
            "backend", tls_edge.backend_conf(scratch, backend_port), scratch, backend_port
        )
        started.append(backend)
        env_b = {**os.environ, "PYTHONPATH": str(tree)}
        sides: dict[str, tls_edge.Proc] = {}
        for side, env in (("A", None), ("B", env_b)):
            port = tls_edge.free_port()
            proc = tls_edge.start_access_point(
                sys.executable, scratch, port, args.workers, backend_port, *tls, f"ap-{side}", env
            )
            started.append(proc)
            sides[side] = proc
            if args.plain:
                import ceiling

                ceiling.wait_http(f"http://127.0.0.1:{port}/", proc)
            else:
                tls_edge.wait_https(proc, ca)
        scheme = "http" if args.plain else "https"
        urls = {side: f"{scheme}://127.0.0.1:{p.port}/" for side, p in sides.items()}
        for url in urls.values():
            tls_edge.wrk(args.wrk, url, args.threads, args.connections, 2, args.close)
        blocks: dict[str, list[tls_edge.Measure]] = {"A": [], "B": []}
        for round_ in range(args.rounds):
            for side in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                blocks[side].append(
                    tls_edge.wrk(
                        args.wrk,
                        urls[side],
                        args.threads,
                        args.connections,
                        args.block,
                        args.close,
                        sides[side],
                        backend,
                    )
                )
        load = (
            ("plain HTTP" if args.plain else "TLS")
            + ", "
            + ("a new connection per request" if args.close else "keep-alive")
        )
        print(
            f"{args.workers} worker(s), {load}, {args.rounds} blocks of {args.block} s per side,"
            f" wrk -t{args.threads} -c{args.connections}"
        )
        print("| side | requests/s (median) | blocks | AP CPU µs/request | wrk | backend |")
        print("|---|---:|---|---:|---:|---:|")
        combined = {}
        for side, label in (("A", "this tree"), ("B", name_b)):
            m = combined[side] = tls_edge.combine(blocks[side])
            rates = ", ".join(f"{b.rps:,.0f}" for b in blocks[side])
            print(
                f"| {side}: {label} | {m.rps:,.0f} | {rates} | {m.server_us:.1f} |"
                f" {m.client_us:.1f} | {m.backend_us:.1f} |"
            )
        a, b = combined["A"], combined["B"]
        bounds = pair_interval(a.blocks, b.blocks)
        interval = f"{bounds[0]:.3f} to {bounds[1]:.3f}" if bounds else "n/a"
        cpu = [
            y.server_us / x.server_us
            for x, y in zip(blocks["A"], blocks["B"], strict=True)
            if x.server_us
        ]
        print(
            f"\nB / A: requests/s {b.rps / a.rps:.3f} (95 % interval {interval});"
            f" AP CPU per request {b.server_us / a.server_us:.3f}"
            f" (pairs: median {statistics.median(cpu):.3f})"
        )
    finally:
        for proc in started:
            proc.stop()
        if tree is not None and not args.src:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree.parent)],
                check=False,
            )
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
