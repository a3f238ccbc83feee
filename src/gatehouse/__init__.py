"""Gatehouse: an open-source access gateway built for high availability."""

__version__ = "0.1.0"
