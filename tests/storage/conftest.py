"""PostgreSQL fixtures for the storage tests."""

from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]
