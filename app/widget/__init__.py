"""The Kommo widget: its sources (``bundle/``), the archive builder, and what its settings modal reads."""
