"""Faithful simulators of the third-party APIs we talk to (Kommo, Unisender).

Used by the tests, the benchmarks and ``contactsync demo``. A top-level package of its own, beside ``app``:
``pip install .`` from a checkout installs both, the production image carries ``app`` only. Nothing here
imports ``app``, and ``app`` imports this package only inside the ``sandbox`` and ``demo`` commands; the
simulators share no code with ``app.connectors`` (each side is written from the providers' docs on its own).
"""
