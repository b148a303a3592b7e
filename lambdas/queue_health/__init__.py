"""queue_health: is Redis there, and fast? ``GET /queue-health`` and a schedule call it; alarms read its metric."""
