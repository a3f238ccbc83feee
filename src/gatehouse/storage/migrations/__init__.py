"""Alembic migrations of the user DB (branch ``user``) and the session DB (branch ``session``)."""
