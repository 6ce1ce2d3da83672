"""The mirror: contact versions from the CRM → desired address state → outbox → email platform."""
