"""Shared storage: SQLAlchemy models of the user and session databases, engines, migrations."""
