"""Dead letters: rows that failed for good (webhook events, outbox rows, CRM writes, signups), listed with
their reason, replayed through the normal path or discarded, each action recorded (``service``)."""
