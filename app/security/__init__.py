"""Encryption at rest, webhook tokens and OAuth state signing."""
