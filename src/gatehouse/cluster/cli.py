"""``gatehouse haproxy-config TOPOLOGY``, ``gatehouse patroni-config TOPOLOGY`` and
``gatehouse cluster up|status|down|kill|start|stop|switchover|failover-db|rejoin-db``: a
topology run on this machine (:mod:`.runner`).

Only argparse at import time, so ``gatehouse --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

#: The topology the cluster commands use when none is given.
DEFAULT_TOPOLOGY = "examples/ha-cluster.yaml"
#: The cluster's home when neither --home nor $GATEHOUSE_HOME is given (``gatehouse up``
#: keeps ./var for the single node).
DEFAULT_HOME = "var/cluster"


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
    patroni = sub.add_parser(
        "patroni-config",
        help="write Patroni's configuration (one YAML per PostgreSQL node) for a topology file",
        description="Write pg1.yml and pg2.yml: Patroni on etcd with synchronous_mode, "
        "failsafe_mode, TLS-only PostgreSQL and the topology's timing (databases.patroni). "
        "Passwords are not written: Patroni reads them from its environment "
        "(PATRONI_SUPERUSER_PASSWORD, PATRONI_REPLICATION_PASSWORD, PATRONI_RESTAPI_PASSWORD). "
        "Check one with: patroni --validate-config FILE",
    )
    patroni.add_argument("topology", metavar="TOPOLOGY", help="topology file (YAML)")
    patroni.add_argument(
        "--output-dir",
        "-o",
        metavar="DIR",
        default=".",
        help="write NODE.yml files here (default: the current directory)",
    )
    patroni.set_defaults(handler=patroni_config)
    _register_cluster(sub)


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("GATEHOUSE_HOME", DEFAULT_HOME)),
        metavar="DIR",
        help=f"the cluster's directory (default: $GATEHOUSE_HOME or ./{DEFAULT_HOME})",
    )


def _register_cluster(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = sub.add_parser(
        "cluster",
        help="run a high-availability topology on this machine (up, status, kill, ...)",
        description="Run every service of a topology on this machine, with a PostgreSQL "
        "primary and its synchronous standby and HAProxy in front of the Access Points. "
        "Services are named by their topology ids, plus haproxy, demo-backend, pg1 and pg2.",
    )
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")

    up = actions.add_parser(
        "up",
        help="start the whole topology in the background and print the load balancer's URL",
        description="Start PostgreSQL (created the first time), the demo backend, Admin (the "
        "topology's installation is published through it the first time), the "
        "Authentication, Policy and Access Point services and HAProxy; return once every one "
        "is healthy. Processes run detached: pid files in HOME/run, logs in HOME/logs.",
    )
    up.add_argument(
        "topology",
        metavar="TOPOLOGY",
        nargs="?",
        help=f"topology file (default: the one HOME runs, else {DEFAULT_TOPOLOGY})",
    )
    _add_home(up)
    up.add_argument(
        "--no-fsync",
        action="store_true",
        help="PostgreSQL does not flush to disk (faster; for throwaway clusters only)",
    )
    up.add_argument("--no-demo-user", action="store_true", help="do not create the demo user")
    up.set_defaults(handler=cluster_up)

    status = actions.add_parser(
        "status",
        help="each service's process, health, configuration version and preferred peer",
        description="Exit status 0 when every service is healthy, 1 otherwise.",
    )
    _add_home(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cluster_status)

    down = actions.add_parser(
        "down", help="stop everything, in reverse dependency order, PostgreSQL last"
    )
    _add_home(down)
    down.set_defaults(handler=cluster_down)

    for name, help_text, handler in (
        ("kill", "SIGKILL one service (its whole process group)", cluster_kill),
        ("stop", "stop one service cleanly (SIGTERM; PostgreSQL: a fast shutdown)", cluster_stop),
        ("start", "start one service again and wait until it is healthy", cluster_start),
    ):
        one = actions.add_parser(name, help=help_text)
        one.add_argument("name", metavar="NAME", help="e.g. ap1, ps1, auth2, admin, haproxy, pg1")
        _add_home(one)
        if name == "start":
            one.add_argument(
                "--no-wait", action="store_true", help="return without waiting for health"
            )
        one.set_defaults(handler=handler)

    for name in ("switchover", "failover-db"):
        switch = actions.add_parser(
            name,
            help="a planned switch of the PostgreSQL primary through Patroni"
            + (" (an alias of switchover)" if name == "failover-db" else ""),
            description="Patroni stops the primary cleanly and promotes its synchronous "
            "standby; the old primary follows it as the new standby. The services follow "
            "through their multi-host URL. To lose the primary instead: "
            "'gatehouse cluster kill pgN' (SIGKILL of its postmaster; Patroni fails over).",
        )
        _add_home(switch)
        switch.add_argument(
            "--graceful", action="store_true", help=argparse.SUPPRESS
        )  # accepted for old scripts: every switchover is graceful
        switch.set_defaults(handler=cluster_switchover)

    rejoin = actions.add_parser(
        "rejoin-db",
        help="wait until the old PostgreSQL primary streams as the synchronous standby",
    )
    _add_home(rejoin)
    rejoin.set_defaults(handler=cluster_rejoin_db)

    upgrade = actions.add_parser(
        "upgrade",
        help="replace every service in turn, nobody logged out (a rolling-upgrade drill)",
        description="Replaces every service with what is installed now: each Access Point "
        "drained in HAProxy first, then stopped and started; the databases migrated (online "
        "migrations only, docs/migrations.md); then the Policy, Authentication and "
        "Distribution services one at a time, each used again before the next; then Admin.",
    )
    _add_home(upgrade)
    upgrade.set_defaults(handler=cluster_upgrade)


def haproxy_config(args: argparse.Namespace) -> int:
    from gatehouse.cluster.haproxy import haproxy_config as generate
    from gatehouse.cluster.topology import load_topology
    from gatehouse.internal.lkg import atomic_write

    topology = load_topology(args.topology)
    if topology.local_tls is not None:
        # Its certificates exist only in a cluster's home, made by `cluster up`.
        print(
            f"gatehouse: {args.topology}: local_tls: the certificates are made by "
            "'gatehouse cluster up' in the cluster's home, which writes HOME/haproxy.cfg; "
            "for a real installation set access_points[].tls and load_balancer.access_point_tls",
            file=sys.stderr,
        )
        return 2
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


# --- gatehouse cluster ... ---------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"gatehouse cluster: {message}", file=sys.stderr, flush=True)


def cluster_up(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster
    from gatehouse.node import console_lines

    cluster = Cluster.prepare(args.home, args.topology, fsync=not args.no_fsync, progress=_progress)
    url = cluster.up()
    if not args.no_demo_user:
        password = cluster.add_demo_user()
        if password is None:
            print("Demo user: demo (already created; its password was shown then)")
        else:
            print(
                f"Demo user: demo  password: {password}  (shown once; change it with "
                f"'gatehouse users passwd demo --home {args.home}')"
            )
    print(f"Gatehouse cluster is up: open {url}")
    # As 'gatehouse up' ends: the console and, the first time, its first administrator.
    print(console_lines(cluster.console_url, args.home, cluster.first_admin), end="", flush=True)
    return 0


def cluster_status(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster
    from gatehouse.cluster.status import render

    status = Cluster.open(args.home).status()
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        print(render(status), end="")
    return 0 if status.healthy else 1


def cluster_down(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster

    stopped = Cluster.open(args.home, progress=_progress).down()
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cluster_kill(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster

    pid = Cluster.open(args.home).kill(args.name)
    print(f"killed {args.name} (pid {pid})")
    return 0


def cluster_stop(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster

    Cluster.open(args.home).stop(args.name)
    print(f"stopped {args.name}")
    return 0


def cluster_start(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster

    pid = Cluster.open(args.home).start(args.name, wait=not args.no_wait)
    print(f"started {args.name} (pid {pid})" + ("" if args.no_wait else ", healthy"))
    return 0


def patroni_config(args: argparse.Namespace) -> int:
    from gatehouse.administration.document import render_yaml
    from gatehouse.cluster.patroni import PRODUCTION_HEADER, PRODUCTION_TLS_DIR, production_configs
    from gatehouse.cluster.topology import load_topology
    from gatehouse.internal.lkg import atomic_write

    topology = load_topology(args.topology)
    documents = production_configs(topology)
    directory = Path(args.output_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"gatehouse: cannot create {directory}: {exc.strerror}", file=sys.stderr)
        return 1
    for name, document in documents.items():
        path = directory / f"{name}.yml"
        header = PRODUCTION_HEADER.format(name=name, source=args.topology, tls=PRODUCTION_TLS_DIR)
        try:
            atomic_write(path, (header + render_yaml(document)).encode(), 0o644)
        except OSError as exc:
            print(f"gatehouse: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
    return 0


def cluster_switchover(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster

    cluster = Cluster.open(args.home, progress=_progress)
    old = cluster.pg_primary()
    new = cluster.switchover_db()
    print(f"{new} is the primary now; {old} follows it as the synchronous standby")
    return 0


def cluster_rejoin_db(args: argparse.Namespace) -> int:
    from gatehouse.cluster.runner import Cluster

    cluster = Cluster.open(args.home, progress=_progress)
    how = cluster.rejoin_db()
    print(f"{cluster.pg_standby()} is the synchronous standby of {cluster.pg_primary()} ({how})")
    return 0


def cluster_upgrade(args: argparse.Namespace) -> int:
    import functools

    from gatehouse.cluster.runner import Cluster
    from gatehouse.cluster.upgrade import migrate_databases, rolling_upgrade

    cluster = Cluster.open(args.home, progress=_progress)
    migrate = functools.partial(migrate_databases, cluster)
    for step in rolling_upgrade(cluster, migrate=migrate, progress=_progress):
        print(f"{step.member}: {step.action} in {step.seconds:.1f}s")
    return 0
