"""``gatehouse haproxy-config TOPOLOGY``: the load balancer's configuration for a topology.

Only argparse at import time, so ``gatehouse --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: The topology the cluster commands use when none is given.
DEFAULT_TOPOLOGY = "examples/ha-cluster.yaml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    haproxy = sub.add_parser(
        "haproxy-config",
        help="write HAProxy's configuration for a topology file",
        description="Write a complete haproxy.cfg that balances over the topology's Access "
        "Points and health-checks each one. Check it with: haproxy -c -f FILE",
    )
    haproxy.add_argument("topology", metavar="TOPOLOGY", help="topology file (YAML)")
    haproxy.add_argument(
        "--output", "-o", metavar="FILE", help="write here (replaced atomically); default: stdout"
    )
    haproxy.add_argument(
        "--stats-socket",
        metavar="PATH",
        help="also open HAProxy's runtime API on this Unix socket (which AP is up)",
    )
    haproxy.set_defaults(handler=haproxy_config)


def haproxy_config(args: argparse.Namespace) -> int:
    from gatehouse.cluster.haproxy import haproxy_config as generate
    from gatehouse.cluster.topology import load_topology
    from gatehouse.internal.lkg import atomic_write

    topology = load_topology(args.topology)
    text = generate(topology, stats_socket=args.stats_socket, source=args.topology)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    output = Path(args.output)
    try:
        atomic_write(output, text.encode(), 0o644)
    except OSError as exc:
        print(f"gatehouse: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
