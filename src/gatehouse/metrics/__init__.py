"""Prometheus metrics for every Gatehouse service (see docs/operations.md, "Monitoring").

Each service answers ``GET /metrics`` on a listener of its own (``metrics.listen``), never on
the Access Point's public port. The services hosted by uvicorn count with prometheus-client
objects; the Access Point's workers count with plain integers (:mod:`.access_point`) that are
rendered only when scraped, and the supervisor adds up its workers' counts behind one
endpoint (:mod:`.workers`).
"""
