"""A local PostgreSQL pair: a primary and a synchronous streaming standby on loopback.

``gatehouse cluster`` runs its databases under Patroni (:mod:`gatehouse.cluster.databases`)
and uses only :class:`~.node.PgNode` here, as a client (psql, certificates, the postmaster's
pid). The pair itself, with its hand-made promotion and rejoin, is kept for the test suite:
throwaway pairs, and tests that promote at a chosen instant to measure how the services'
multi-host URLs follow. Each node is
a data directory with its own port; the server binaries run as the ``postgres`` user when we
are root. Nodes listen on 127.0.0.1 only, without Unix sockets. With ``tls`` (what
``gatehouse cluster`` uses) they take TLS 1.3 connections with SCRAM passwords only, replication
included; without it they trust every loopback connection (no passwords: for tests). A
development and test cluster either way, not a production one.

:mod:`.binaries` finds the PostgreSQL server binaries; :mod:`.node` is one server
(:class:`~.node.PgNode`: initdb, start, stop, kill, promote, status); :mod:`.pair` is the
primary and its synchronous standby (:class:`~.pair.Pair`: create, failover, rejoin);
:mod:`.errors` holds :class:`~.errors.ReplicationError`.
"""
