"""Shared fixtures. Real PostgreSQL and Redis, sandboxes over loopback HTTP."""
