"""Faithful simulators of the third-party APIs we talk to (Kommo, Unisender).

Used by the tests, the benchmarks and ``contactsync demo``; product code never imports this package, and the
simulators share no code with ``app.connectors`` (each side is written from the spec on its own).
"""
