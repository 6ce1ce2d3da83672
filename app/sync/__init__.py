"""The mirror: contact versions from the CRM → desired address state → outbox → email platform.

Intake stores webhook bodies (``ingest``); jobs apply them (``events``), read the CRM whole (``fullsync`` with
``pages``) or what changed lately (``reconcile``), decide each address's desired state (``service``) and push
the outbox (``outbox`` with ``push_policy``); unsubscribes flow back (``unsubscribes``). SQL lives in one
repository per group of tables (``*_repo``); the concrete providers are bound in ``providers``. The whole
picture: docs/architecture.md.
"""
