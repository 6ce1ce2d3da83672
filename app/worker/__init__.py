"""arq worker: settings, tasks, cron, and the supervised run loop."""
